"""Reading the promotion requests (`.openloop/promotions/<task>.json`): what status screens
need, without the promotion machinery (git, guard, policy) that writes and acts on them."""

from __future__ import annotations

import json
from typing import Any

from openloop.state.controlplane import ControlPlane
from openloop.state.storage import read_text_or_none

OPEN_STATUSES = frozenset({"pending", "deferred"})


def list_requests(plane: ControlPlane) -> list[dict[str, Any]]:
    if not plane.promotions_dir.is_dir():
        return []
    found = []
    for path in sorted(plane.promotions_dir.glob("*.json")):
        text = read_text_or_none(path)
        try:
            data = json.loads(text) if text else None
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "projectAlias" not in data:  # not an original's (v1) file
            found.append(data)
    return sorted(found, key=lambda r: r.get("createdAt", ""), reverse=True)
