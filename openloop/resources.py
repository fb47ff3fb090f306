"""Where the shipped templates and unit files are, installed or in a source checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """`templates` or `units`: inside the wheel (openloop/_data/NAME) or at the source root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"OpenLoop's {name}/ directory is missing from this installation")


def template_path(*parts: str) -> Path:
    return data_dir("templates").joinpath(*parts)
