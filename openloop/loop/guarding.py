"""Running code the agent wrote (the agent itself, then its checks) between two snapshots of
the user's side: their repository (adapters/guard.py) and OpenLoop's own files outside it
(loop/userstate.py). Any difference ends the attempt as escaped, with what could be put back
put back.
"""

from __future__ import annotations

from openloop.adapters import guard
from openloop.loop import userstate
from openloop.loop.iteration import Iteration, Stop
from openloop.loop.outcomes import Outcome


def guarded(it: Iteration, what: str, action, *, keep: bool = False):
    """Run `action` and prove it left the user's repository, checkout, control files and git
    settings as they were. `keep`: the snapshot that proved it stays in it.clean for the next
    guarded step (see Iteration)."""
    repo, clean, it.clean = it.project.repo, it.clean, None
    before = guard.resumed(clean, repo) if clean else guard.take(repo, dict(it.env.environ))
    user_before = userstate.take(it.env, it.project.alias)
    try:
        return action()
    finally:
        found, after = _compare(it, before, user_before)
        it.clean = after if keep and not found else None
        if found:
            it.escape = found
            raise Stop(Outcome.ESCAPED, f"escaped: during {what}: " + "; ".join(found))


def _compare(
    it: Iteration, before: guard.Snapshot, user_before: userstate.UserState
) -> tuple[list[str], guard.Snapshot | None]:
    """What changed, and the snapshot that shows it (None when it could not be taken). Never
    raises: what cannot be compared is not proven clean, and ends the attempt as escaped."""
    try:
        found, after = guard.compare(it.project.repo, before, dict(it.env.environ))
    except Exception as exc:  # noqa: BLE001
        found, after = [f"the repository could not be compared ({exc})"], None
    try:
        found += userstate.verify(it.env, user_before)
    except Exception as exc:  # noqa: BLE001
        found.append(f"OpenLoop's own files could not be compared ({exc})")
    return found, after
