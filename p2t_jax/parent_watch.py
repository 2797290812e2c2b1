"""A child process that stops when the process that started it dies, even by ``kill -9``.

``p2t reproduce`` runs each chapter as a child process and passes signals on to it; a
``kill -9`` of the runner cannot be passed on, and the chapter would run on, orphaned, to its
end. The runner sets ``P2T_STOP_WITH_PARENT=<its pid>`` in the chapter's environment;
:func:`stop_with_parent`, called first thing by the experiment harness, asks the Linux kernel
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send the chapter SIGTERM when that parent goes, so
the chapter saves its checkpoint and exits as after any SIGTERM (and the next ``p2t
reproduce`` resumes it). Elsewhere than Linux, or without the variable, nothing happens.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV = "P2T_STOP_WITH_PARENT"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def stop_with_parent(environ: dict[str, str] | None = None) -> bool:
    """Arranges SIGTERM for this process when the parent named by ``P2T_STOP_WITH_PARENT`` dies; returns whether
    it was arranged. The variable is removed, so processes this one starts do not inherit it. If that parent is
    already gone, SIGTERM is sent at once."""
    environ = os.environ if environ is None else environ
    value = environ.pop(ENV, None)
    if not value or not sys.platform.startswith("linux"):
        return False
    try:
        parent = int(value)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (ValueError, OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
    return True
