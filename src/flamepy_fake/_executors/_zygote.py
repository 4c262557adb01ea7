"""The fork server (zygote): a pre-imported process that forks instance processes.

Spawning ``python -m flamepy_runner._worker`` costs 100+ ms of imports (grpc, protobuf,
cloudpickle, pyarrow) before the instance serves. The zygote pays that once: it imports the
instance programs' modules, then forks a child per instance that becomes the program as
``python -m <module>`` would be, in its own session and process group, with the instance's
environment, working directory, ``sys.path`` (``[cwd, *PYTHONPATH, <interpreter paths>]``),
``sys.argv`` and stdout/stderr files, and runs the module as ``__main__``.

Safety of ``fork``: the zygote is single-threaded and creates no gRPC channel or server (it
only imports), so the child starts from a clean state; it refuses to serve (the cluster then
spawns) if an import left a thread running. Installed packages (the Runner's project and its
dependencies) are imported by the child from its own ``PYTHONPATH``, never by the zygote.

Spare: the zygote keeps one child forked ahead of the next request (forking a process this
size is ~3 ms of an instance's start-up). The spare has detached like an instance (own session,
death signal) and runs nothing else: it waits on its pipe, and the next request is handed to it
instead of forking; the zygote then forks the next spare, after answering. Unassigned, it is
nobody's instance: its exit is not reported, and it exits when the zygote closes its pipe.

Life cycle: the zygote is spawned behind :mod:`._pdeath` (SIGKILL when the cluster process
dies) from the fork server's own reader thread, which lives as long as the zygote; each child
asks for SIGKILL when the zygote dies. A stopped or SIGKILLed cluster therefore leaves nothing.
The zygote reaps its children and reports their exit status; :class:`ForkedProcess` offers the
``pid``/``poll``/``wait`` subset of :class:`subprocess.Popen` that :class:`ProcessInstance` uses.

Protocol (JSON lines over a socketpair): the zygote says ``{"ready": true}`` (or
``{"ready": false, "error": ...}``); the cluster sends ``{"id", "module", "args", "env",
"cwd", "stdout", "stderr"}``; the zygote answers ``{"id", "pid"}`` (or ``{"id", "error"}``)
and later ``{"exit": pid, "status": code}`` (negative: killed by that signal).

Run as ``python -c <_ENTRY> FD MODULE... -- PRELOAD...``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _import_scope, _pdeath, _zygote_side

__all__ = ["ForkServer", "ForkedProcess", "fallback_text", "fork_supported"]

logger = logging.getLogger(__name__)

# `-c`, not `-m`: the package's __init__ imports this module, which runpy would then warn about.
_ENTRY = f"import sys; from {_zygote_side.__name__} import main; sys.exit(main(sys.argv[1:]))"
_LOST_STATUS = -int(signal.SIGKILL)  # a child whose zygote died was killed by its death signal
_EXIT_WAIT = 5.0  # seconds stop() gives the zygote to kill and reap its children and exit


def fallback_text(why: str) -> str:
    """The one warning a cluster logs when its instances are spawned instead of forked."""
    return f"flamepy-fake: {why}; instances are spawned instead (slower start-up)"


def fork_supported() -> bool:
    """Whether the fork server can run here: Linux only (fork is unsafe by default on macOS)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


class ForkedProcess:
    """A child of the zygote, seen from the cluster: the ``subprocess.Popen`` subset instances use."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = threading.Event()

    def _set_exit(self, status: int) -> None:
        if self.returncode is None:
            self.returncode = status
        self._exited.set()

    def poll(self) -> int | None:
        """The exit status once the zygote reported it, else None."""
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        if not self._exited.wait(timeout):
            raise subprocess.TimeoutExpired(f"forked instance {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


class ForkServer:
    """The cluster's handle on its zygote.

    Args:
        python: the interpreter of the zygote (and of the programs it can stand in for).
        modules: the instance programs it serves (``python -m <module>``); imported up front.
        preload: further modules imported up front (errors ignored: e.g. flamepy missing).
        env: the zygote's environment (the cluster's; each child gets its instance's own).
        log_path: the zygote's stdout and stderr.
        ready_timeout: seconds :meth:`spawn` waits for the zygote's imports.
    """

    def __init__(
        self,
        *,
        python: str,
        modules: tuple[str, ...],
        preload: tuple[str, ...] = (),
        env: Mapping[str, str],
        log_path: Path,
        ready_timeout: float = 60.0,
    ) -> None:
        self.python = python
        self.modules = modules
        self.preload = preload
        self.env = dict(env)
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.pid: int | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self._down = threading.Event()
        self._stopping = False
        self._reason = ""
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._next_id = 0
        self._replies: dict[int, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._warned = False
        # Modules the zygote's import scope refused while it preloaded (its scope: what every
        # program's distributions make visible). Their absence is baked into its modules (e.g.
        # flamepy's cache decides at import whether numpy exists), so an instance whose scope
        # makes one visible is spawned instead.
        self.hidden_at_start: frozenset[str] = frozenset()

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the zygote in the background (its reader thread spawns it); returns at once."""
        self._thread = threading.Thread(target=self._run, name="flamepy-fake-zygote", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """Spawn the zygote, then read its messages until it goes away (this thread's life
        bounds the zygote's: the parent-death signal follows the spawning thread)."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            self._went_down(f"cannot create its socket: {exc}")
            return
        try:
            with self._lock:
                if self._stopping:
                    raise OSError("the executor manager is stopping")
                self._sock = ours
                argv = [self.python, "-c", _ENTRY, str(theirs.fileno()), *self.modules, "--", *self.preload]
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.log_path.open("wb") as log:
                    self._proc = subprocess.Popen(
                        _pdeath.wrap(argv, self.env, self.python),
                        env=self.env,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        pass_fds=(theirs.fileno(),),
                        start_new_session=True,
                    )
                self.pid = self._proc.pid
        except OSError as exc:
            theirs.close()
            self._went_down(f"cannot start: {exc}")
            return
        theirs.close()
        try:
            self._read(ours)
        finally:
            self._went_down(self._exit_text())

    def _read(self, sock: socket.socket) -> None:
        buffer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._handle(json.loads(line))

    def _handle(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            if message["ready"]:
                self.hidden_at_start = frozenset(str(n) for n in message.get("hidden", ()))
                self._ready.set()
            else:
                self._reason = str(message.get("error", "it is not ready"))
            return
        if "exit" in message:
            pid, status = int(message["exit"]), int(message["status"])
            with self._lock:
                child = self._children.pop(pid, None)
                if child is None:
                    self._early_exits[pid] = status
            if child is not None:
                child._set_exit(status)
            return
        with self._lock:
            slot = self._replies.pop(int(message["id"]), None)
            if slot is not None and "pid" in message:
                pid = int(message["pid"])
                child = ForkedProcess(pid)
                early = self._early_exits.pop(pid, None)
                if early is None:
                    self._children[pid] = child
                else:
                    child._set_exit(early)
                message["child"] = child
        if slot is not None:
            slot[1].append(message)
            slot[0].set()

    def _exit_text(self) -> str:
        if self._reason:
            return self._reason
        proc = self._proc
        if proc is None:
            return "it did not start"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
        code = proc.poll()
        if code is None:
            return "its connection closed"
        if code < 0:
            return f"it was killed by signal {-code} ({signal.Signals(-code).name})"
        return f"it exited with code {code}"

    def _went_down(self, reason: str) -> None:
        """The zygote is gone: fail waiting spawns; its children died with it (death signal)."""
        with self._lock:
            if self._down.is_set():
                return
            self._reason = reason
            self._down.set()
            replies, self._replies = list(self._replies.values()), {}
            children, self._children = list(self._children.values()), {}
        for event, box in replies:
            box.append({"error": reason})
            event.set()
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            _wait_gone(child.pid, 5.0)
            child._set_exit(_LOST_STATUS)

    def stop(self) -> None:
        """Stop the zygote (its children die with it), reap it, join the reader; idempotent."""
        with self._lock:
            self._stopping = True
            proc, sock = self._proc, self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if proc is not None:
            # The closed socket makes the zygote kill and reap its children, then exit; killed
            # here instead, they would become orphans that nothing may reap (zombies of pid 1).
            # A zygote still importing has forked nothing: no need to wait for it.
            if self._ready.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=_EXIT_WAIT)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        if sock is not None:
            sock.close()
        self._went_down("the executor manager stopped it")

    # -- use ------------------------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether the zygote can (or soon will) fork instances."""
        return not self._down.is_set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the zygote can fork (True) or is down or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.01):
            if self._down.is_set() or time.monotonic() > deadline:
                return False
        return not self._down.is_set()

    def reason(self) -> str:
        """Why the zygote is down (empty while it is up)."""
        return self._reason if self._down.is_set() else ""

    def program(self, argv: list[str], env: Mapping[str, str]) -> tuple[str, list[str]] | None:
        """``(module, args)`` when the zygote can stand in for ``argv`` run with ``env``.

        That is ``python -m <module> ...`` of a served module, with the interpreter's start-up
        settings (``PYTHON*`` variables but ``PYTHONPATH``, e.g. ``PYTHONHASHSEED``,
        ``PYTHONOPTIMIZE``) equal to the zygote's: those are read once, at start-up, so an
        instance asking for other ones is spawned.
        """
        if not (len(argv) >= 3 and argv[0] == self.python and argv[1] == "-m" and argv[2] in self.modules):
            return None
        if _startup_settings(env) != _startup_settings(self.env):
            return None
        return argv[2], argv[3:]

    def spawn(
        self,
        module: str,
        args: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        stdout_path: Path,
        stderr_path: Path,
    ) -> ForkedProcess | None:
        """Fork an instance running ``python -m module *args``; None when the zygote is down
        (:meth:`reason` says why; the caller spawns instead)."""
        try:
            child = self._spawn(module, args, env, cwd, stdout_path, stderr_path)
        except _WiderScope as wider:
            logger.info("flamepy-fake: spawning an instance instead of forking it: %s", wider)
            return None
        if child is None and not self._stopping:
            self._warn_once()
        return child

    def _warn_once(self) -> None:
        with self._lock:
            warned, self._warned = self._warned, True
        if not warned:
            logger.warning(fallback_text(f"the fork server is down ({self.reason()})"))

    def _spawn(
        self,
        module: str,
        args: list[str],
        env: Mapping[str, str],
        cwd: Path,
        stdout_path: Path,
        stderr_path: Path,
    ) -> ForkedProcess | None:
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready.wait(0.05):
            if self._down.is_set():
                return None
            if time.monotonic() > deadline:
                self._reason = f"it did not finish its imports within {self.ready_timeout:g} s"
                self.stop()
                return None
        self._check_scope(env)
        event: threading.Event = threading.Event()
        box: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "module": module,
            "args": args,
            "env": dict(env),
            "cwd": str(cwd),
            "stdout": str(stdout_path),
            "stderr": str(stderr_path),
        }
        with self._lock:
            if self._down.is_set() or self._sock is None:
                return None
            self._next_id += 1
            request["id"] = self._next_id
            self._replies[self._next_id] = (event, box)
            sock = self._sock
        try:
            with self._send_lock:
                sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:
            self._went_down(f"its connection failed: {exc}")
            return None
        event.wait()
        reply = box[0]
        child = reply.get("child")
        return child if isinstance(child, ForkedProcess) else None

    def _check_scope(self, env: Mapping[str, str]) -> None:
        """Raise :class:`_WiderScope` when ``env``'s import scope shows a module this zygote
        was refused while it preloaded."""
        text = env.get(_import_scope.ENV_VAR)
        if not text or not self.hidden_at_start:
            return
        try:
            names = _import_scope.ImportScope.from_env(text).names
        except ValueError:
            return  # the child reports the bad scope itself
        wider = sorted(names & self.hidden_at_start)
        if wider:
            raise _WiderScope(
                f"its application declares {', '.join(wider)}, which the fork server's modules "
                "were imported without"
            )


class _WiderScope(Exception):
    """An instance sees modules its zygote's imports could not: it must be spawned."""


def _startup_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until ``pid`` has exited (it is not our child: poll ``/proc``; a zombie has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return
        time.sleep(0.005)
