"""The executor manager's one interception point: injected faults and call records.

``ExecutorHooks`` is handed to :class:`~._manager.ExecutorManager` by ``FakeCluster``; the
manager calls it at four steps of an executor's life (install, OnSessionEnter, each task,
between tasks), records each call into the instance (``flame.v1.Instance``) and each state
call that stands for a ``flame.v1.Backend`` RPC (the fake's manager is in-process, so
BindExecutorCompleted, LaunchTask and CompleteTask are method calls, recorded as those RPCs). Killing uses
the instance's own process (SIGKILL to its process group) or, for a thread instance, makes its
executor end as if the instance had died.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._control._records import StateError
from .._install import InstallError
from .._toolkit._calls import BACKEND_SERVICE, INSTANCE_SERVICE, CallLog
from .._toolkit._faults import DOWNLOAD, INSTALL, KILL_IDLE, KILL_TASK, SESSION_ENTER, CallTarget, Faults
from ._instance import Instance, InstanceCrashed

__all__ = ["ExecutorHooks"]

_T = TypeVar("_T")
_REAP_WAIT = 10.0  # seconds a SIGKILLed child gets to be reaped


class ExecutorHooks:
    """Faults and call records for one manager.

    Args:
        faults: the cluster's faults.
        calls: the cluster's call record.
    """

    def __init__(self, faults: Faults, calls: CallLog) -> None:
        self.faults = faults
        self.calls = calls

    def record(
        self, method: str, status: str, started: float, app: str, session_id: str, task_id: str | None = None
    ) -> None:
        """Record one call into an instance that began at ``started`` (``time.perf_counter``)."""
        self.calls.record(
            INSTANCE_SERVICE, method, status, time.perf_counter() - started, app, session_id, task_id
        )

    def backend_call(
        self, method: str, session_id: str, task_id: str | None, fn: Callable[..., _T], *args: Any
    ) -> _T:
        """Run ``fn(*args)``, a state call standing for a ``flame.v1.Backend`` RPC, and record it.

        The status is ``OK``, or the code of the :class:`StateError` it raised.
        """
        started = time.perf_counter()
        status = "UNKNOWN"
        try:
            result = fn(*args)
            status = "OK"
            return result
        except StateError as exc:
            status = exc.code
            raise
        finally:
            self.calls.record(
                BACKEND_SERVICE, method, status, time.perf_counter() - started, None, session_id, task_id
            )

    def before_install(self, app: str, session_id: str) -> None:
        """Raise :class:`InstallError` when a download or install fault matches."""
        if not self.faults.armed:
            return
        for stage in (DOWNLOAD, INSTALL):
            fault = self.faults.take(stage, CallTarget(stage, app, session_id))
            if fault is not None:
                what = "cannot download the package" if stage == DOWNLOAD else "cannot install the package"
                raise InstallError(f"{what}: {fault.message}")

    def session_enter_fault(self, app: str, session_id: str) -> str | None:
        """The message OnSessionEnter must fail with, or None."""
        if not self.faults.armed:
            return None
        fault = self.faults.take(SESSION_ENTER, CallTarget("OnSessionEnter", app, session_id))
        return None if fault is None else fault.message

    def before_task(self, eid: str, inst: Instance, app: str, session_id: str, task_id: str) -> None:
        """Kill the instance as the task is handed to it, when a fault says so.

        Raises:
            InstanceCrashed: a thread instance's worker "died" (a process instance is SIGKILLed
                and its own invoke then reports the crash).
        """
        if not self.faults.armed:
            return
        if self.faults.take(KILL_TASK, CallTarget("OnTaskInvoke", app, session_id, task_id)) is None:
            return
        if not _kill(inst):
            raise InstanceCrashed(
                f"thread instance of executor {eid} was killed (injected fault) while running task {task_id}"
            )

    def kill_between_tasks(self, inst: Instance, app: str, session_id: str) -> bool:
        """Kill the idle instance when a fault says so; True when it was killed."""
        if not self.faults.armed:
            return False
        if self.faults.take(KILL_IDLE, CallTarget("LaunchTask", app, session_id)) is None:
            return False
        _kill(inst)
        return True


def _kill(inst: Instance) -> bool:
    """SIGKILL a process instance and wait until it is gone; False for a thread instance."""
    pid = inst.pid
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)  # instances lead their own process group
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + _REAP_WAIT
    while inst.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return True
