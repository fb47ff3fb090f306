"""subprocess.Popen, with a wait that does not poll."""

from __future__ import annotations

import os
import select
import subprocess
import time


class Popen(subprocess.Popen):
    """A Popen whose wait with a timeout sleeps on a pidfd until the process exits.

    Popen's own wait(timeout) polls with sleeps of 1, 2, 4... up to 50 ms: a process is seen to
    end up to 50 ms late (a check waited on in 0.2 s slices), and git, which closes its output a
    moment before it can be reaped, made about half of all git calls sleep a millisecond or more
    for nothing. The timeout is kept exactly."""

    def wait(self, timeout: float | None = None) -> int:
        if timeout is not None and self.returncode is None:
            deadline = time.monotonic() + timeout
            try:
                pidfd = os.pidfd_open(self.pid)
            except (AttributeError, OSError):  # no pidfd here, or already reaped
                return super().wait(timeout)
            try:
                waiter = select.poll()  # not select(): a descriptor may be above FD_SETSIZE
                waiter.register(pidfd, select.POLLIN)
                waiter.poll(max(0, int(timeout * 1000 + 0.999)))
            finally:
                os.close(pidfd)
            timeout = max(0.0, deadline - time.monotonic())
        return super().wait(timeout)
