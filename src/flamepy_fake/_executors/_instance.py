"""Instances: what serves one session binding, in a thread or in a child process.

Both kinds expose the same driver interface used by the executor loop: ``start()`` (raises
:class:`ShimError` when the instance cannot be created), ``enter``/``invoke``/``leave`` with
flame.v1 messages, ``stop()`` (idempotent; frees everything), ``pid`` and ``logs()``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import grpc

from flamepy_runner._for_fake import InstanceService, InstanceServicer, pb, rpc

from .._errors import InstanceCrashed, ShimError
from . import _pdeath
from ._import_scope import guarded_argv, spawn_env
from ._zygote import ForkServer

__all__ = ["Instance", "InstanceCrashed", "ProcessInstance", "ShimError", "ThreadInstance"]

_CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
# Socket readiness polling: a forked instance is ready in ~10-15 ms, so probe every 0.5 ms for
# its first 50 ms (a refused connect costs ~20 us), then every 5 ms (a spawned one takes 100+
# ms). Backing off from the start cost a forked instance ~2.5 ms of waiting past its readiness.
_POLL_FAST = 0.0005
_POLL_FAST_FOR = 0.05
_POLL = 0.005
_REAP_WAIT = 10.0  # seconds a broken connection waits for the child's exit status
_STOP_WAIT = 30.0  # upper bound on waiting for a stop another thread is running
_CONNECTION_LOST = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class _Process(Protocol):
    """What an instance needs of its child: ``subprocess.Popen`` or a forked ``ForkedProcess``."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class Instance:
    """Driver interface of one instance (see the module docstring)."""

    pid: int | None = None

    def start(self) -> None:
        """Create the instance; raise :class:`ShimError` on failure."""
        raise NotImplementedError

    def enter(self, request: pb.SessionContext) -> pb.Result:
        """OnSessionEnter; raises on transport errors."""
        raise NotImplementedError

    def invoke(self, request: pb.TaskContext) -> pb.TaskResult:
        """OnTaskInvoke; raises :class:`InstanceCrashed` if the instance dies meanwhile."""
        raise NotImplementedError

    def leave(self) -> pb.Result | None:
        """OnSessionLeave; None if the instance could not be reached."""
        raise NotImplementedError

    def terminate(self) -> None:
        """Ask the instance to end now without waiting (the first step of a fast stop)."""

    def stop(self, grace: float | None = None) -> None:
        """Tear the instance down (idempotent); ``grace`` overrides the SIGTERM-to-SIGKILL wait."""

    def alive(self) -> bool:
        """Whether the instance can still serve calls."""
        return True

    def describe(self) -> str:
        """What happened to the instance, for logs."""
        return "running"

    def logs(self) -> str:
        """The instance's stdout and stderr so far."""
        return ""


class ThreadInstance(Instance):
    """An in-process instance: the hooks are called on the executor's own thread.

    Requests and responses still go through protobuf serialisation, so the service sees
    exactly what it would receive over the socket.

    Args:
        factory: builds the service (one per instance).
        servicer_config: exposed to task code through ``flamepy_runner._worker.current_config``.
    """

    def __init__(self, factory: Callable[[], InstanceService], servicer_config: object = None) -> None:
        self._factory = factory
        self._config = servicer_config
        self._servicer: InstanceServicer | None = None
        self._service: InstanceService | None = None

    def start(self) -> None:
        """Build the service object."""
        try:
            self._service = self._factory()
        except Exception as exc:
            raise ShimError(f"failed to create the in-process instance: {exc}") from exc
        self._servicer = InstanceServicer(self._service, self._config)  # type: ignore[arg-type]

    def enter(self, request: pb.SessionContext) -> pb.Result:
        """Call OnSessionEnter in-process."""
        assert self._servicer is not None
        response = self._servicer.OnSessionEnter(pb.SessionContext.FromString(request.SerializeToString()))
        return pb.Result.FromString(response.SerializeToString())

    def invoke(self, request: pb.TaskContext) -> pb.TaskResult:
        """Call OnTaskInvoke in-process."""
        assert self._servicer is not None
        response = self._servicer.OnTaskInvoke(pb.TaskContext.FromString(request.SerializeToString()))
        return pb.TaskResult.FromString(response.SerializeToString())

    def leave(self) -> pb.Result | None:
        """Call OnSessionLeave in-process."""
        if self._servicer is None:
            return None
        return self._servicer.OnSessionLeave(pb.EmptyRequest())

    def terminate(self) -> None:
        """Kill what the service started if it knows how (flmexec scripts); its thread cannot be."""
        kill = getattr(self._service, "kill", None)
        if callable(kill):
            with contextlib.suppress(Exception):
                kill()

    def stop(self, grace: float | None = None) -> None:
        """Drop the service; kill what it started if it knows how (flmexec scripts)."""
        service, self._service, self._servicer = self._service, None, None
        kill = getattr(service, "kill", None)
        if callable(kill):
            with contextlib.suppress(Exception):
                kill()


def describe_exit(returncode: int) -> str:
    """Human text for a child's exit status (negative = killed by a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


class ProcessInstance(Instance):
    """A child process serving ``flame.v1.Instance`` on a unix socket.

    Args:
        argv: the program and its arguments (already expanded).
        env: the complete child environment.
        cwd: the child's working directory (created if missing).
        socket_path: where the child must create its socket (``FLAME_INSTANCE_ENDPOINT``).
        stdout_path: file receiving stdout (truncated at start).
        stderr_path: file receiving stderr (truncated at start).
        cleanup: directories removed at :meth:`stop`.
        ready_timeout: seconds to wait for the socket and the connection.
        call_timeout: deadline of OnSessionEnter and OnSessionLeave.
        stop_grace: seconds between SIGTERM and SIGKILL.
        display: the command as shown in error messages.
        die_with_parent: on Linux, the child gets SIGKILL when the cluster process dies
            (see :mod:`._pdeath`), so a SIGKILLed cluster leaves no instance behind.
        fork_server: when given and ``argv`` is one of its programs, the child is forked by
            it (see :mod:`._zygote`) instead of spawned; spawned when it is down.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        socket_path: Path,
        stdout_path: Path,
        stderr_path: Path,
        cleanup: tuple[Path, ...] = (),
        ready_timeout: float = 30.0,
        call_timeout: float = 30.0,
        stop_grace: float = 3.0,
        display: str | None = None,
        die_with_parent: bool = True,
        fork_server: ForkServer | None = None,
    ) -> None:
        self.argv = argv
        self.fork_server = fork_server
        self.forked = False
        self.die_with_parent = die_with_parent
        self.env = env
        self.cwd = cwd
        self.socket_path = socket_path
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.cleanup = cleanup
        self.ready_timeout = ready_timeout
        self.call_timeout = call_timeout
        self.stop_grace = stop_grace
        self.display = display or " ".join(argv)
        self._proc: _Process | None = None
        self._channel: grpc.Channel | None = None
        self._stub: rpc.Stub | None = None
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._stop_done = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited."""
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        """Spawn the child in a new process group and wait until its socket answers.

        Raises:
            ShimError: the command cannot start, the child exits early, or the socket does not
                appear (or does not accept a connection) within ``ready_timeout``.
        """
        try:
            self.cwd.mkdir(parents=True, exist_ok=True)
            for d in (self.stdout_path.parent, self.stderr_path.parent, self.socket_path.parent):
                d.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
            forked = self._fork()
        except OSError as exc:
            raise self._start_failed(exc) from exc
        if not forked:
            self._spawn()
        self._connect()

    def _spawn(self) -> None:
        """Spawn the child under the stop lock: a concurrent stop() either prevents it or sees it."""
        try:
            with self._stop_lock, self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
                if self._stopped:
                    raise ShimError("the executor manager is stopping")
                # An import scope in the environment is applied before the program starts.
                argv, env = guarded_argv(self.argv, self.env), spawn_env(self.env)
                self._proc = subprocess.Popen(
                    _pdeath.wrap(argv, env) if self.die_with_parent else argv,
                    cwd=self.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as exc:
            raise self._start_failed(exc) from exc

    def _start_failed(self, exc: OSError) -> ShimError:
        """v0.6.0's host shim text: the command in literal angle brackets, Rust's io::Error text."""
        reason = f"{exc.strerror} (os error {exc.errno})" if exc.errno else str(exc)
        return ShimError(f"failed to start service by command <{self.argv[0]}>: {reason}")

    def _fork(self) -> bool:
        """Fork the child from the fork server, if it serves this program; False: spawn it.

        Not under the stop lock (the fork server may still be importing); a stop() that ran
        meanwhile gets the forked child killed here.
        """
        server = self.fork_server
        program = None if server is None else server.program(self.argv, self.env)
        if server is None or program is None:
            return False
        proc = server.spawn(
            *program,
            env=self.env,
            cwd=self.cwd,
            stdout_path=self.stdout_path,
            stderr_path=self.stderr_path,
        )
        if proc is None:
            return False
        with self._stop_lock:
            stopped = self._stopped
            if not stopped:
                self._proc, self.forked = proc, True
        if stopped:
            _signal_group(proc.pid, signal.SIGKILL)
            raise ShimError("the executor manager is stopping")
        return True

    def _connect(self) -> None:
        """Wait for the child's socket, then open the channel."""
        assert self._proc is not None
        self.pid = self._proc.pid
        self._wait_listening(time.monotonic() + self.ready_timeout)
        # Under the stop lock, like the spawn: a stop() that already ran would never close a
        # channel made after it.
        with self._stop_lock:
            if self._stopped:
                raise ShimError("the executor manager is stopping")
            self._channel = grpc.insecure_channel(f"unix://{self.socket_path}", options=_CHANNEL_OPTIONS)
            self._stub = rpc.Stub(self._channel, pb.INSTANCE_SERVICE)

    def _wait_listening(self, deadline: float) -> None:
        """Return once the child accepts connections on its socket.

        A plain socket connect, not ``grpc.channel_ready_future``: that subscribes a gRPC
        connectivity thread to the channel, which raises in the background ("Channel closed!")
        when a concurrent :meth:`stop` closes the channel under it.

        Raises:
            ShimError: the child exited, the manager is stopping, the deadline passed, or the
                socket path cannot be connected to at all.
        """
        assert self._proc is not None
        fast_until = time.monotonic() + _POLL_FAST_FOR
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(str(self.socket_path))
                    return
                except (FileNotFoundError, ConnectionRefusedError, BlockingIOError, TimeoutError):
                    pass  # not created or not listening yet
                except OSError as exc:
                    raise ShimError(self._connect_failed(str(exc))) from exc
            if self._stopping.is_set():  # first: stop() also kills the child and removes the socket
                raise ShimError("the executor manager is stopping")
            created = self.socket_path.exists()
            code = self._proc.poll()
            if code is not None:
                when = "before accepting connections on" if created else "before creating"
                raise ShimError(
                    self._connect_failed(
                        f"instance {self.display} {describe_exit(code)} {when} its socket {self.socket_path}"
                    )
                )
            if time.monotonic() > deadline:
                if created:
                    raise ShimError(
                        self._connect_failed(
                            f"instance {self.display} does not accept connections on {self.socket_path} "
                            f"within {self.ready_timeout:g} s"
                        )
                    )
                raise ShimError(
                    self._connect_failed(
                        f"instance {self.display} did not create its socket {self.socket_path} "
                        f"within {self.ready_timeout:g} s"
                    )
                )
            time.sleep(_POLL_FAST if time.monotonic() < fast_until else _POLL)

    def _connect_failed(self, reason: str) -> str:
        """v0.6.0's grpc shim text (socket in literal angle brackets), with the fake's reason."""
        return f"failed to connect to service at <{self.socket_path}>: {reason}"

    def enter(self, request: pb.SessionContext) -> pb.Result:
        """OnSessionEnter with a deadline."""
        assert self._stub is not None
        result: pb.Result = self._stub.OnSessionEnter(request, timeout=self.call_timeout)
        return result

    def invoke(self, request: pb.TaskContext) -> pb.TaskResult:
        """OnTaskInvoke without a deadline, watching the child while the call runs.

        Raises:
            InstanceCrashed: the child died (message names the exit code or signal) or the
                manager stopped the instance.
            grpc.RpcError: the call failed while the child stayed alive.
        """
        assert self._stub is not None and self._proc is not None
        try:
            future = self._stub.OnTaskInvoke.future(request)
        except ValueError as exc:  # grpc's "closed channel": stop() got here first
            if not self._stopping.is_set():
                raise
            raise InstanceCrashed(f"instance was stopped before running task {request.task_id}") from exc
        while True:
            try:
                result: pb.TaskResult = future.result(timeout=0.2)
                return result
            except grpc.FutureTimeoutError:
                if self._stopping.is_set():
                    future.cancel()
                    raise InstanceCrashed(
                        f"instance was stopped while running task {request.task_id}"
                    ) from None
                if self._proc.poll() is not None:
                    future.cancel()
                    raise self._crashed(request.task_id) from None
            except grpc.RpcError as exc:
                # A dying child breaks the connection before its exit status can be read, and
                # the watcher thread (which holds the wait lock) reaps it only when scheduled.
                # On a broken connection wait long enough for a loaded machine, but bounded:
                # a child that stays alive turns the error into a plain task failure.
                lost = _code(exc) in _CONNECTION_LOST
                self._wait_exit(_REAP_WAIT if lost else 1.0)
                if self._proc.poll() is not None:
                    raise self._crashed(request.task_id) from exc
                if self._stopping.is_set():
                    raise InstanceCrashed(
                        f"instance was stopped while running task {request.task_id}"
                    ) from exc
                raise

    def _wait_exit(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the child to exit; returns early if the instance is stopped."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while self._proc.poll() is None and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=min(remaining, 0.1))

    def watch(self, on_exit: Callable[[], None], name: str) -> None:
        """Call ``on_exit`` (from a helper thread) if the child exits before :meth:`stop`."""
        proc = self._proc
        if proc is None:
            return

        def wait() -> None:
            proc.wait()
            if not self._stopping.is_set():
                on_exit()

        self._watcher = threading.Thread(target=wait, name=name, daemon=True)
        self._watcher.start()

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self._proc is not None and self._proc.poll() is None

    def describe(self) -> str:
        """The child's state: running, or how it exited."""
        code = self.returncode
        return "running" if code is None else f"process {self.pid} {describe_exit(code)}"

    def _crashed(self, task_id: str) -> InstanceCrashed:
        code = self._proc.poll() if self._proc is not None else None
        how = describe_exit(code) if code is not None else "stopped answering"
        return InstanceCrashed(f"instance process {self.pid} {how} while running task {task_id}")

    def leave(self) -> pb.Result | None:
        """OnSessionLeave with a deadline; None if the child cannot be reached."""
        if self._stub is None or self._proc is None or self._proc.poll() is not None:
            return None
        try:
            result: pb.Result = self._stub.OnSessionLeave(pb.EmptyRequest(), timeout=self.call_timeout)
            return result
        except (grpc.RpcError, ValueError):  # ValueError: stop() closed the channel first
            return None

    def terminate(self) -> None:
        """SIGTERM the process group now; :meth:`stop` then waits and SIGKILLs what is left."""
        self._stopping.set()
        with self._stop_lock:
            proc = None if self._stopped else self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL after the grace period, reap, remove files.

        When another thread is already stopping the instance (its executor releasing it while
        the manager stops), this call escalates to SIGKILL after its own ``grace`` and waits
        for that stop to finish, so a stopped manager never leaves the child running.

        Args:
            grace: seconds between SIGTERM and SIGKILL; ``stop_grace`` when None.
        """
        self._stopping.set()
        with self._stop_lock:
            first, self._stopped = not self._stopped, True
        if not first:
            proc = self._proc
            if proc is not None and grace is not None and not self._stop_done.is_set():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=grace)
                _signal_group(proc.pid, signal.SIGKILL)
            self._stop_done.wait(timeout=_STOP_WAIT)
            return
        try:
            self._stop(grace)
        finally:
            self._stop_done.set()

    def _stop(self, grace: float | None) -> None:
        if self._channel is not None:
            self._channel.close()
        proc = self._proc
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_grace if grace is None else grace)
            # Children of the instance share its group; SIGKILL whatever is left of it.
            _signal_group(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        for d in self.cleanup:
            shutil.rmtree(d, ignore_errors=True)

    def logs(self) -> str:
        """stdout then stderr of the child (kept after :meth:`stop`)."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {label} ---\n{text}")
        return "".join(p if p.endswith("\n") else p + "\n" for p in parts)


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    if not callable(code):
        return None
    try:
        value: grpc.StatusCode | None = code()
    except Exception:
        return None
    return value


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
