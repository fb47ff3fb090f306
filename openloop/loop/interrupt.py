"""SIGTERM, SIGHUP and SIGINT end an iteration the same way: cleanly, with exit status 17.

A user's `kill`, a closing terminal, a container stop and Ctrl+C all mean "stop now", and each
must leave what the next run expects: no process of the run left, no workspace, the agent's
spend charged from what pi reported, the run record closed, the task back in the queue. The
handler only sets a flag (supervise.STOP_REQUESTED); the agent's supervisor and the checks poll
it and stop their process trees, and the iteration's steps check it between them. Nothing is
raised in the middle of a write.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from openloop.adapters.supervise import STOP_REQUESTED

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_received: list[str] = []


def requested() -> str | None:
    """Why the iteration must stop ("SIGTERM"...), or None."""
    return _received[0] if STOP_REQUESTED.is_set() and _received else None


@contextmanager
def signals_stop_the_iteration() -> Iterator[None]:
    """While the block runs, the three signals request a stop instead of killing the process.
    Outside the main thread (tests running iterations in threads) signals cannot be handled:
    the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame) -> None:
        if not _received:
            _received.append(signal.Signals(signum).name)
        STOP_REQUESTED.set()

    reset()  # a stop handled by an earlier iteration of this process is over
    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def reset() -> None:
    """Forget a handled stop (the foreground loop runs iterations one after another)."""
    _received.clear()
    STOP_REQUESTED.clear()
