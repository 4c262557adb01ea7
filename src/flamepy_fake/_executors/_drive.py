"""One executor's binding, on its own thread: install, instance, session enter, tasks, release.

Per executor, in order (upstream's Idle → Bound → Unbinding, reference B1):

1. install the app (:mod:`flamepy_fake._install`); failure → bind code 10;
2. create the instance, a thread or a child process; failure → code 11;
3. OnSessionEnter; failure → code 12 (OnSessionLeave is still called, as upstream);
4. LaunchTask / OnTaskInvoke / CompleteTask until no task comes within the app's
   ``delay_release`` or the session closes; a crash fails the running task with a message
   naming the exit code or signal, and the executor ends (a fresh one serves the rest);
5. UnbindExecutor, OnSessionLeave, teardown (process group killed, socket and directories
   removed), executor record released.

:class:`ExecutorDrive` is the part of :class:`~._manager.ExecutorManager` (its base) that runs
on an executor's thread; the manager owns the threads, the instances' registry and the stop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flamepy_runner._for_fake import pb

from .._control._state import AppRecord, ClusterState, SessionRecord, StateError, TaskRecord
from .._install import Installer, InstallError
from ._instance import Instance, InstanceCrashed, ProcessInstance, ShimError

if TYPE_CHECKING:
    from ._factory import InstanceFactory
    from ._hooks import ExecutorHooks

__all__ = ["ExecutorDrive"]

# The manager's logger: what an executor logs kept its name when this code moved here.
logger = logging.getLogger("flamepy_fake._executors._manager")
_T = TypeVar("_T")


class ExecutorDrive:
    """Drives one executor through its binding (see the module docstring)."""

    # Set by ExecutorManager; declared here for the type checker.
    state: ClusterState
    hooks: ExecutorHooks | None
    installer: Installer
    _factory: InstanceFactory | None
    _lock: threading.Lock
    _instances: dict[str, Instance]
    _logs: dict[str, Instance]
    _stopping: threading.Event

    if TYPE_CHECKING:

        def _report_bind(self, eid: str, ok: bool | None) -> None: ...

        def executors_for(self, app: AppRecord) -> str: ...

    def _bind_failed(self, eid: str, session_id: str, code: int, message: str) -> None:
        self._report_bind(eid, False)
        logger.info("executor %s failed to bind session %s: %s", eid, session_id, message)
        with contextlib.suppress(StateError):
            self._backend(
                "BindExecutorCompleted", session_id, None, self.state.bind_completed, eid, code, message
            )

    def _backend(
        self, method: str, session_id: str, task_id: str | None, fn: Callable[..., _T], *args: Any
    ) -> _T:
        """``fn(*args)``: a state call that stands for a ``flame.v1.Backend`` RPC, recorded as one."""
        if self.hooks is None:
            return fn(*args)
        return self.hooks.backend_call(method, session_id, task_id, fn, *args)

    def _serve(self, eid: str, app: AppRecord, ssn: SessionRecord) -> None:
        executors = self.executors_for(app)
        try:
            if self.hooks is not None:
                self.hooks.before_install(app.name, ssn.id)
            installation = self.installer.install(app, dependencies=executors == "process")
        except InstallError as exc:
            self._bind_failed(eid, ssn.id, 10, f"application installation failed: {exc}")
            return
        except Exception as exc:  # an installer bug must still end as a bind failure
            self._bind_failed(eid, ssn.id, 10, f"application installation failed: {exc!r}")
            return
        try:
            assert self._factory is not None, "the manager is not started"
            inst = self._factory.make(eid, app, executors, installation)
        except ShimError as exc:
            self._bind_failed(eid, ssn.id, 11, f"shim creation failed: {exc}")
            return
        with self._lock:
            self._instances[eid] = inst
            self._logs[eid] = inst
            if self._stopping.is_set():
                return
        try:
            inst.start()
        except ShimError as exc:
            self._bind_failed(eid, ssn.id, 11, f"shim creation failed: {exc}")
            return
        if inst.pid is not None:
            with contextlib.suppress(StateError):
                self.state.set_executor_pid(eid, inst.pid)
        bound = threading.Event()
        if isinstance(inst, ProcessInstance):
            # An instance that dies while idle must not wait for a task to notice.
            inst.watch(
                lambda: self._instance_exited(eid, ssn.id, bound), name=f"flamepy-fake-watch-{eid[:8]}"
            )
        started = time.perf_counter()
        injected = None if self.hooks is None else self.hooks.session_enter_fault(app.name, ssn.id)
        status = "OK"
        try:
            if injected is not None:
                status, rc, message = "UNKNOWN", -1, injected
            else:
                result = inst.enter(_session_context(app, ssn))
                rc, message = result.return_code, result.message
        except Exception as exc:
            status, rc, message = "UNKNOWN", -1, _error_text(exc)
        if self.hooks is not None:
            self.hooks.record("OnSessionEnter", status, started, app.name, ssn.id)
        if rc != 0:
            self._bind_failed(eid, ssn.id, 12, f"on_session_enter failed: {message}")
            inst.leave()
            return
        self._report_bind(eid, True)
        try:
            self._backend("BindExecutorCompleted", ssn.id, None, self.state.bind_completed, eid, 0, None)
        except StateError:
            inst.leave()
            return
        # From here the exit watcher ends the LaunchTask wait itself. If the child died before
        # this point the watcher skipped that, but it set the exit status before calling back,
        # so inst.alive() below is already False.
        bound.set()
        crashed = False
        while not self._stopping.is_set() and inst.alive():
            task = self._backend(
                "LaunchTask", ssn.id, None, self.state.launch_task, eid, float(app.delay_release)
            )
            if task is None:
                break
            if self.hooks is not None and self.hooks.kill_between_tasks(inst, app.name, ssn.id):
                # Killed before it saw the task: as an idle death, the task goes back to Pending.
                logger.info("instance of executor %s killed between tasks (injected fault)", eid)
                crashed = True
                break
            if not inst.alive():
                # It died while idle: the task is not its victim. Releasing the executor puts
                # the task back to Pending for a fresh instance.
                logger.info("instance of executor %s died while idle: %s", eid, inst.describe())
                crashed = True
                break
            crashed = self._run_task(eid, inst, task, app.name)
            if crashed:
                break
        crashed = crashed or not inst.alive()
        with contextlib.suppress(StateError):
            self.state.unbind_executor(eid)
        if not crashed:
            inst.leave()

    def _instance_exited(self, eid: str, session_id: str, bound: threading.Event) -> None:
        """The child of ``eid`` exited on its own: end its LaunchTask wait (unbind + wake).

        Only once the executor is bound: while binding, the executor thread reports the failed
        OnSessionEnter itself, and an executor unbound under it could not record that failure
        (the session's retry count would never grow).
        """
        if not bound.is_set():
            return
        with contextlib.suppress(StateError):
            self.state.unbind_executor(eid)
        self.state.wake(session_id)

    def _run_task(self, eid: str, inst: Instance, task: TaskRecord, app: str = "") -> bool:
        """Run one task; True when the instance is gone afterwards."""
        request = pb.TaskContext(task_id=str(task.id), session_id=task.session_id)
        if task.input is not None:
            request.input = task.input
        crashed, status = False, "OK"
        started = time.perf_counter()
        try:
            if self.hooks is not None:
                self.hooks.before_task(eid, inst, app, task.session_id, str(task.id))
            result = inst.invoke(request)
            rc = 0 if result.return_code == 0 else -1
            output = result.output if result.HasField("output") else None
            message = result.message if result.HasField("message") else None
        except InstanceCrashed as exc:
            rc, output, message, crashed, status = -1, None, str(exc), True, "UNAVAILABLE"
        except Exception as exc:
            rc, output, message, status = -1, None, _error_text(exc), "UNKNOWN"
        if self.hooks is not None:
            self.hooks.record("OnTaskInvoke", status, started, app, task.session_id, str(task.id))
        with contextlib.suppress(StateError):
            self._backend(
                "CompleteTask",
                task.session_id,
                str(task.id),
                self.state.complete_task,
                eid,
                rc,
                output,
                message,
            )
        return crashed


def _session_context(app: AppRecord, ssn: SessionRecord) -> pb.SessionContext:
    """OnSessionEnter's request: the application context exactly as registered."""
    ctx = pb.ApplicationContext(name=app.name, shim=app.shim)
    for field in ("image", "command", "working_directory", "url", "installer"):
        value = getattr(app, field)
        if value is not None:
            setattr(ctx, field, value)
    request = pb.SessionContext(session_id=ssn.id, application=ctx)
    if ssn.common_data is not None:
        request.common_data = ssn.common_data
    return request


def _error_text(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if callable(details):
        with contextlib.suppress(Exception):
            text = details()
            if text:
                return str(text)
    return str(exc) or type(exc).__name__
