"""Introspection records: what ``FakeCluster.applications()``, ``sessions()``, ``tasks()``,
``objects()``, ``executors()`` and ``abandoned_instances`` return.

Plain frozen dataclasses with :class:`enum.Enum` states, built from the state model's records
by the functions below (the only place that knows the protobuf values). Nothing here imports
grpc or pyarrow.
"""

from __future__ import annotations

import dataclasses
import enum
import warnings

from .._control._records import AppRecord, EventRecord, SessionRecord, TaskRecord
from .._options import deprecated_backend_text

__all__ = [
    "AbandonedInstance",
    "AppInfo",
    "AppState",
    "ExecutorInfo",
    "ExecutorState",
    "ObjectInfo",
    "SessionInfo",
    "SessionState",
    "TaskInfo",
    "TaskState",
    "app_info",
    "executor_state",
    "session_info",
    "task_info",
]


class AppState(str, enum.Enum):
    """flame.v1 ApplicationState (a ``str`` enum: ``AppState.ENABLED == "enabled"``)."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class SessionState(str, enum.Enum):
    """flame.v1 SessionState."""

    OPEN = "open"
    CLOSED = "closed"


class TaskState(str, enum.Enum):
    """flame.v1 TaskState (upstream's names: ``SUCCEED``, not succeeded)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEED = "succeed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ExecutorState(str, enum.Enum):
    """flame.v1 ExecutorState (``ExecutorState.BOUND == "bound"``)."""

    UNKNOWN = "unknown"
    VOID = "void"
    IDLE = "idle"
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    RELEASING = "releasing"
    RELEASED = "released"


# flame.v1's protobuf values, in order (the enums' definition order above).
_APP_STATES = tuple(AppState)
_SESSION_STATES = tuple(SessionState)
_TASK_STATES = tuple(TaskState)
_EXECUTOR_STATES = tuple(ExecutorState)


def executor_state(value: int) -> ExecutorState:
    """The :class:`ExecutorState` of a flame.v1 ExecutorState value."""
    return _EXECUTOR_STATES[value] if 0 <= value < len(_EXECUTOR_STATES) else ExecutorState.UNKNOWN


@dataclasses.dataclass(frozen=True)
class AppInfo:
    """One registered application.

    Attributes:
        name: its name.
        state: enabled or disabled.
        command: the command its instances run (None for in-process templates without one).
        url: the package URL, if any.
        max_instances: the most instances a session of it gets.
        delay_release: seconds an idle instance waits for work before it is released.
    """

    name: str
    state: AppState
    command: str | None
    url: str | None
    max_instances: int
    delay_release: int


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """One session (closed ones included) with its task counts.

    Attributes:
        id: the session id.
        application: its application.
        state: open or closed.
        pending, running, succeeded, failed, cancelled: how many of its tasks are in each state.
        min_instances, max_instances, batch_size, priority: its spec.
        events: session-level events (1001 per failed bind, 1002 at the retry limit).
    """

    id: str
    application: str
    state: SessionState
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    min_instances: int
    max_instances: int | None
    batch_size: int
    priority: int
    events: tuple[EventRecord, ...]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One task of a session.

    Attributes:
        id: the task id (1, 2, ... within its session).
        session_id: its session.
        state: pending, running, succeed, failed or cancelled.
        message: the text of its last event (a failed task's error), if any.
        events: its events, oldest first.
        input_size: bytes of its input (0 without input).
        output_size: bytes of its output (0 without output).
    """

    id: int
    session_id: str
    state: TaskState
    message: str | None
    events: tuple[EventRecord, ...]
    input_size: int
    output_size: int


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """One object of the object cache (evicted ones included).

    Attributes:
        key: ``app/session/id``.
        version: its version (1 after a put, +1 per patch).
        size: bytes of its payload (base and patches).
        patches: how many patches were appended since the last put.
    """

    key: str
    version: int
    size: int
    patches: int


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

    A thread cannot be killed: the executor manager's stop leaves it running (a daemon thread,
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


def app_info(app: AppRecord) -> AppInfo:
    """The :class:`AppInfo` of a state record."""
    return AppInfo(
        name=app.name,
        state=_APP_STATES[app.state],
        command=app.command,
        url=app.url,
        max_instances=app.max_instances,
        delay_release=app.delay_release,
    )


def session_info(ssn: SessionRecord) -> SessionInfo:
    """The :class:`SessionInfo` of a state record."""
    return SessionInfo(
        id=ssn.id,
        application=ssn.application,
        state=_SESSION_STATES[ssn.state],
        pending=ssn.pending,
        running=ssn.running,
        succeeded=ssn.succeed,
        failed=ssn.failed,
        cancelled=ssn.cancelled,
        min_instances=ssn.min_instances,
        max_instances=ssn.max_instances,
        batch_size=ssn.batch_size,
        priority=ssn.priority,
        events=tuple(ssn.events),
    )


def task_info(task: TaskRecord) -> TaskInfo:
    """The :class:`TaskInfo` of a state record."""
    return TaskInfo(
        id=task.id,
        session_id=task.session_id,
        state=_TASK_STATES[task.state],
        message=task.events[-1].message if task.events else None,
        events=tuple(task.events),
        input_size=len(task.input or b""),
        output_size=len(task.output or b""),
    )
