r"""The zygote itself: what runs in the fork server's process and in the children it forks.

:class:`._zygote.ForkServer` (the cluster's side) starts ``python -c`` on :func:`main`: it
imports the programs, says it is ready, keeps a spare child forked ahead, and forks (or hands
the spare) each instance, which then :func:`become`\ s its program. See :mod:`._zygote` for the
protocol and the life cycle.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from . import _import_scope

__all__ = ["become", "main", "serve"]

_PR_SET_PDEATHSIG = 1
# A spare not handed a request within this many seconds initialises gRPC's and Arrow Flight's
# cores (~13 ms of CPU), which every instance's server and cache client would otherwise pay on
# its critical path (~3.5 ms); not at once, so as not to compete with the start of the
# instance it was forked beside.
_WARM_AFTER = 0.05


# -- the zygote side --------------------------------------------------------------------------


def _native_threads() -> list[str]:
    """Names of this process's threads (``/proc/self/task/*/comm``), the main one included."""
    names = []
    with contextlib.suppress(OSError):
        for task in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as comm:
                names.append(comm.read().strip())
    return names


def _fork_hazard() -> str:
    """Why forking now would be unsafe, or "".

    Python threads (which may hold locks the child inherits) and gRPC's threads make it unsafe.
    pyarrow's jemalloc background thread and numpy's OpenBLAS pool do not: both libraries
    register ``pthread_atfork`` handlers for them.
    """
    if threading.active_count() != 1:
        return f"its imports started {threading.active_count() - 1} Python thread(s)"
    grpc_threads = [n for n in _native_threads() if n.startswith("grpc")]
    if grpc_threads:
        return f"its imports started gRPC threads ({', '.join(grpc_threads)})"
    return ""


def _send(ctl: socket.socket, message: dict[str, Any]) -> None:
    ctl.sendall(json.dumps(message).encode() + b"\n")


def _reap(ctl: socket.socket, children: set[int], spares: set[int], block: bool = False) -> None:
    """Reap exited children and report their status; ``block``: until none is left. A spare
    that was never handed a request is nobody's instance: its exit goes unreported."""
    while True:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in spares:
            spares.discard(pid)
            continue
        children.discard(pid)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):
            _send(ctl, {"exit": pid, "status": code})


class _Spare:
    """A child forked ahead of the next request (fork is ~3 ms of a start-up's critical path):
    detached like any instance, it waits on its pipe for the request that it then becomes."""

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self.pipe = pipe  # the write end; closing it unassigned tells the spare to exit

    def hand_over(self, line: bytes) -> bool:
        """Give the spare its request; False when it is gone (the caller forks instead)."""
        try:
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(self.pipe, view) :]
        except OSError:
            return False
        finally:
            os.close(self.pipe)
        return True


def _fork_spare(zygote: int, ctl: socket.socket, closing: tuple[int, ...]) -> _Spare | dict[str, Any] | None:
    """Fork a spare. In the zygote: the spare, or None when fork failed. In the spare: once
    handed one, the request to become (``os._exit`` when the zygote closes the pipe first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid:
        os.close(read_end)
        return _Spare(pid, write_end)
    os.close(write_end)
    _enter_child(ctl, closing)
    _detach(zygote)
    _warm(read_end)
    buffer = b""
    while not buffer.endswith(b"\n"):
        try:
            data = os.read(read_end, 65536)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # the zygote is stopping, or the cluster is gone
        buffer += data
    os.close(read_end)
    request: dict[str, Any] = json.loads(buffer)
    request["detached"] = True
    return request


def _warm(read_end: int) -> None:
    """In an idle spare: initialise the gRPC and Arrow Flight cores the instance will use.

    Only modules the zygote preloaded, so nothing new is imported before the instance's import
    scope is set; creating a channel and a client (neither connects) is what initialises them.
    A library reading its environment when it initialises (``GRPC_VERBOSITY``, ``GRPC_TRACE``)
    reads the zygote's, not the instance's.
    """
    ready, _, _ = select.select([read_end], [], [], _WARM_AFTER)
    if ready:
        return
    grpc, flight = sys.modules.get("grpc"), sys.modules.get("pyarrow.flight")
    with contextlib.suppress(Exception):
        if grpc is not None:
            grpc.insecure_channel("unix:///nonexistent/flamepy-fake-warm.sock").close()
        if flight is not None:
            flight.FlightClient("grpc://127.0.0.1:1").close()


def _enter_child(ctl: socket.socket, closing: tuple[int, ...]) -> None:
    """In a freshly forked child: drop the zygote's signal set-up, connection and descriptors."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    ctl.close()  # the object, not just its descriptor: it must not close a reused number later
    for fd in closing:
        os.close(fd)


def serve(fd: int, modules: list[str], preload: list[str]) -> dict[str, Any] | None:
    """The zygote's loop. Returns the request to become (in a forked child), None to exit."""
    ctl = socket.socket(fileno=fd)
    error = ""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            error = error or f"cannot import {name}: {exc}"
    for name in preload:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    _PRECOMPILED.update(_compile_programs(modules))
    if not error:
        hazard = _fork_hazard()
        if hazard:
            error = f"{hazard}; forking would be unsafe"
    if error:
        _send(ctl, {"ready": False, "error": error})
        return None
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    scope = _import_scope.current()
    hidden = sorted(scope.hidden) if scope is not None else []
    _send(ctl, {"ready": True, "threads": _native_threads(), "hidden": hidden})
    buffer = b""
    zygote = os.getpid()
    children: set[int] = set()
    spares: set[int] = set()  # pids of spares not handed a request (their exits go unreported)
    spare: _Spare | None = None
    while True:
        if spare is None:
            forked = _fork_spare(zygote, ctl, (wake_r, wake_w))
            if isinstance(forked, dict):
                return forked  # in the spare, handed its request
            if forked is not None:
                spare = forked
                spares.add(spare.pid)
        readable: list[Any] = []
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([ctl.fileno(), wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 4096):
                    pass
        _reap(ctl, children, spares)
        if spare is not None and spare.pid not in spares:  # it died unassigned: fork another
            os.close(spare.pipe)
            spare = None
        if ctl.fileno() not in readable:
            continue
        try:
            data = ctl.recv(65536)
        except OSError:
            data = b""
        if not data:  # stopped, or the cluster is gone: take the children along
            if spare is not None:
                os.close(spare.pipe)  # an unassigned spare exits on its own
            for pid in children | spares:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            _reap(ctl, children, spares, block=True)
            return None
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            request: dict[str, Any] = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            if spare is not None:
                handed, taken, spare = spare.hand_over(line), spare.pid, None
                if handed:
                    spares.discard(taken)
                    children.add(taken)
                    _send(ctl, {"id": request["id"], "pid": taken})
                    continue
            try:
                pid = os.fork()
            except OSError as exc:
                _send(ctl, {"id": request["id"], "error": f"fork failed: {exc}"})
                continue
            if pid == 0:
                _enter_child(ctl, (wake_r, wake_w))
                request["zygote"] = zygote
                return request
            children.add(pid)
            _send(ctl, {"id": request["id"], "pid": pid})


def _detach(zygote: int) -> None:
    """In a forked child: its own session and process group, SIGKILL when the zygote dies."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(1)
    if os.getppid() != zygote:  # the zygote died before prctl: follow it
        os._exit(1)


def become(request: dict[str, Any]) -> None:
    """In the forked child: turn into ``python -m <module>`` as the instance's program."""
    if not request.get("detached"):
        _detach(request["zygote"])
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for src, dst in ((null, 0), (out, 1), (err, 2)):
        os.dup2(src, dst)
        os.close(src)
    os.chdir(request["cwd"])
    env: dict[str, str] = request["env"]
    # Not os.environ.clear(): it pops one item at a time, each pop iterating anew (~3 ms for
    # a hundred variables, on every instance's start-up). The new order is the instance's own.
    for key in list(os.environ):
        del os.environ[key]
    os.environ.update(env)
    # sys.path as `python -m` computes it: the working directory, PYTHONPATH, then the
    # interpreter's own paths (the zygote's, without its working directory and PYTHONPATH).
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [os.getcwd(), *(os.path.abspath(p) for p in own), *_BASE_PATH]
    _import_scope.fresh_path_importer_cache()
    importlib.invalidate_caches()
    # The instance's own import scope (or none), replacing the zygote's; the out-of-scope
    # modules the zygote imported leave sys.modules.
    _import_scope.activate()
    _reseed()
    sys.argv = [request["module"], *request["args"]]
    # `python -m` runs a fresh copy of the module as __main__ and leaves the module itself
    # unimported (runpy warns otherwise); its dependencies stay preloaded.
    sys.modules.pop(request["module"], None)
    sys.meta_path.insert(0, _PrecompiledFinder(_PRECOMPILED))
    import runpy

    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


def _reseed() -> None:
    """Fresh random state, as a new process has: ``random`` reseeds itself after fork, numpy's
    global generator (imported by pyarrow) does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        with contextlib.suppress(Exception):
            numpy_random.seed()


def _base_path() -> list[str]:
    start = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    drop = {os.path.abspath(p) for p in start}
    return [p for p in sys.path[1:] if os.path.abspath(p) not in drop]


_BASE_PATH: list[str] = []


# -- the programs' code, compiled once in the zygote -------------------------------------------
#
# A child runs its program's module afresh, as ``python -m`` does, and may import it again by
# name (our worker's ``__main__`` block does). Each is a compile of the source when there is no
# bytecode to read (``PYTHONDONTWRITEBYTECODE``, an editable checkout): ~17 ms for the worker,
# twice per instance. The zygote compiles each program once and its children execute that code;
# the module objects stay fresh (a new ``__main__``, a new module when imported by name).

_PRECOMPILED: dict[str, tuple[str, Any]] = {}  # module name -> (source path, code object)


def _compile_programs(modules: list[str]) -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for name in modules:
        with contextlib.suppress(Exception):
            spec = importlib.util.find_spec(name)
            loader = None if spec is None else spec.loader
            if (
                spec is not None
                and spec.origin
                and spec.submodule_search_locations is None  # a module, not a package
                and isinstance(loader, importlib.machinery.SourceFileLoader)
            ):
                found[name] = (spec.origin, loader.get_code(name))
    return found


class _PrecompiledLoader(importlib.machinery.SourceFileLoader):
    """A source loader whose code is already compiled (everything else is the file's)."""

    def __init__(self, fullname: str, path: str, code: Any) -> None:
        super().__init__(fullname, path)
        self._code = code

    def get_code(self, fullname: str) -> Any:
        return self._code if fullname == self.name else super().get_code(fullname)


class _PrecompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the served programs with the zygote's code; every other module as usual."""

    def __init__(self, programs: Mapping[str, tuple[str, Any]]) -> None:
        self._programs = dict(programs)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        entry = self._programs.get(fullname)
        if entry is None:
            return None
        origin, code = entry
        return importlib.util.spec_from_file_location(
            fullname, origin, loader=_PrecompiledLoader(fullname, origin, code)
        )


def main(argv: list[str]) -> int:
    """The zygote's entry point: ``FD MODULE... -- PRELOAD...``."""
    _BASE_PATH[:] = _base_path()
    # Preload within the executors' scope (when the cluster limits what instances import), so
    # that the modules' import-time probes for optional modules find what an executor has.
    _import_scope.activate(quiet=True)
    fd = int(argv[0])
    rest = argv[1:]
    split = rest.index("--") if "--" in rest else len(rest)
    request = serve(fd, rest[:split], rest[split + 1 :])
    if request is None:
        # Its children are reaped: nothing is left to do. Skipping finalization (~100 ms with
        # grpc and pyarrow imported) keeps the cluster's stop, and pytest's exit, short.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    become(request)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
