"""What the executor manager reports: each executor as ``cluster.executors()`` shows it, and the
thread instances its stop had to leave running."""

from __future__ import annotations

import dataclasses
import warnings

from .._options import deprecated_backend_text
from .._toolkit._introspect import ExecutorState

__all__ = ["AbandonedInstance", "ExecutorInfo"]


@dataclasses.dataclass(frozen=True)
class ExecutorInfo:
    """One executor as ``cluster.executors()`` shows it.

    Attributes:
        id: the executor id (a UUID).
        state: an :class:`~flamepy_fake.ExecutorState` (a ``str`` enum, so it also equals
            ``"binding"``, ``"bound"``, ``"unbinding"``, ...: upstream's names, lowercase).
        session: the session it serves, if any.
        app: the application of that session.
        executors: ``thread`` or ``process``, how this one runs (the cluster's ``executors``
            option resolved for its application). ``backend``, its former name, still reads it
            (deprecated: a ``DeprecationWarning``).
        pid: the instance's process id (None for thread instances or before spawning).
        task_id: the task it is running, if any.
    """

    id: str
    state: ExecutorState
    session: str | None
    app: str | None
    executors: str
    pid: int | None
    task_id: int | None = None

    @property
    def backend(self) -> str:
        """The former name of :attr:`executors` (deprecated)."""
        warnings.warn(deprecated_backend_text("ExecutorInfo.backend"), DeprecationWarning, stacklevel=2)
        return self.executors


@dataclasses.dataclass(frozen=True)
class AbandonedInstance:
    """A thread instance still running user code when the manager stopped.

    A thread cannot be killed: :meth:`ExecutorManager.stop` leaves it running (a daemon thread,
    renamed ``flamepy-fake-abandoned-<id>``) instead of waiting for it.

    Attributes:
        executor_id: the executor the thread served.
        thread_name: the thread's name after it was marked.
        session_id: the session it was bound to, if known.
        task_id: the task it was running, if any.
    """

    executor_id: str
    thread_name: str
    session_id: str | None
    task_id: int | None

    def describe(self) -> str:
        """One line: which executor, thread, task and session."""
        what = f"executor {self.executor_id} (thread {self.thread_name})"
        if self.task_id is not None:
            return f"{what} running task {self.task_id} of session {self.session_id}"
        if self.session_id is not None:
            return f"{what} serving session {self.session_id}"
        return what
