"""Instance processes die with the cluster: Linux's parent-death signal, set before ``exec``.

A cluster process that is SIGKILLed cannot stop its instances, and they run in their own
session, so nothing else would. :func:`wrap` prefixes an instance's argv with a tiny Python
launcher that asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
which survives ``exec``), checks the parent is still there, clears the signal mask it inherited
and ``exec``s the real program in the same process (same pid). ``preexec_fn`` would do the
same without the launcher, but it is unsafe in a process with threads, as the cluster is.

The kernel sends the signal when the *thread* that spawned the child exits; the executor
thread that spawns an instance always outlives it (it stops the instance before it ends).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

__all__ = ["supported", "wrap"]

_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG\n"
    "    sys.exit('flamepy-fake: prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != int(sys.argv[1]):  # the cluster died before prctl: follow it\n"
    "    os._exit(1)\n"
    "signal.pthread_sigmask(signal.SIG_SETMASK, ())\n"
    "os.execv(sys.argv[2], sys.argv[3:])\n"
)


def supported() -> bool:
    """Whether this platform has ``PR_SET_PDEATHSIG`` (Linux)."""
    return sys.platform.startswith("linux")


def wrap(argv: list[str], env: Mapping[str, str], python: str = sys.executable) -> list[str]:
    """``argv`` behind the parent-death launcher, or unchanged when that cannot apply.

    Unchanged off Linux, and when ``argv[0]`` does not resolve to an executable file: the spawn
    then fails as it always did, with the operating system's own error.
    """
    if not supported() or not argv:
        return argv
    if "/" in argv[0]:
        program: str | None = argv[0] if os.path.isabs(argv[0]) else None  # relative: to the child's cwd
    else:
        program = shutil.which(argv[0], path=env.get("PATH", os.defpath))
    if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
        return argv
    # -I -S: the launcher needs only the standard library, and starts faster without site.
    return [python, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), program, *argv]
