"""Records and errors of the fake session manager's state (plain data, no behaviour).

Everything here is re-exported by :mod:`flamepy_fake._control._state`, which is where callers import it
from. Enum values mirror flame.v1 (``types.proto``) so no protobuf import is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from .._errors import ResultError, StateError

__all__ = [
    "APP_ENABLED",
    "DEFAULT_DELAY_RELEASE",
    "DEFAULT_MAX_INSTANCES",
    "EXECUTOR_BINDING",
    "EXECUTOR_BOUND",
    "EXECUTOR_IDLE",
    "EXECUTOR_RELEASED",
    "EXECUTOR_RELEASING",
    "EXECUTOR_UNBINDING",
    "EXECUTOR_VOID",
    "FALLBACK_RESREQ",
    "NODE_READY",
    "SESSION_CLOSED",
    "SESSION_OPEN",
    "TASK_CANCELLED",
    "TASK_FAILED",
    "TASK_PENDING",
    "TASK_RUNNING",
    "TASK_SUCCEED",
    "TERMINAL_TASK_STATES",
    "AppRecord",
    "AppSpec",
    "EventRecord",
    "ExecutorRecord",
    "NodeRecord",
    "ResReq",
    "ResultError",
    "SessionDemand",
    "SessionRecord",
    "SessionSpec",
    "StateError",
    "TaskRecord",
    "now_ms",
]

# Enum values of flame.v1 (types.proto), mirrored so this module needs no protobuf import.
SESSION_OPEN, SESSION_CLOSED = 0, 1
TASK_PENDING, TASK_RUNNING, TASK_SUCCEED, TASK_FAILED, TASK_CANCELLED = 0, 1, 2, 3, 4
TERMINAL_TASK_STATES = frozenset({TASK_SUCCEED, TASK_FAILED, TASK_CANCELLED})
APP_ENABLED = 0
EXECUTOR_VOID, EXECUTOR_IDLE, EXECUTOR_BINDING, EXECUTOR_BOUND = 1, 2, 3, 4
EXECUTOR_UNBINDING, EXECUTOR_RELEASING, EXECUTOR_RELEASED = 5, 6, 7
NODE_READY = 1

DEFAULT_MAX_INSTANCES = 1_000_000
DEFAULT_DELAY_RELEASE = 60  # seconds, as upstream's code (its docs say ms)
FALLBACK_RESREQ = (1, 1073741824, 0)  # cpu, memory bytes, gpu

ResReq = tuple[int, int, int]


def now_ms() -> int:
    """Return the current time as epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class EventRecord:
    """One task or session event: ``code`` is the new TaskState, or 1001/1002 for sessions."""

    code: int
    message: str
    creation_time: int


@dataclass
class AppSpec:
    """An application spec as a client sends it (``None`` means the optional field is unset).

    ``schema`` is ``None`` when the schema message is absent, else the (input, output,
    common_data) triple of optional JSON-Schema texts.
    """

    shim: int = 0
    description: str | None = None
    labels: list[str] = field(default_factory=list)
    image: str | None = None
    command: str | None = None
    arguments: list[str] = field(default_factory=list)
    environments: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    max_instances: int | None = None
    delay_release: int | None = None
    schema: tuple[str | None, str | None, str | None] | None = None
    url: str | None = None
    installer: str | None = None


@dataclass
class AppRecord:
    """A registered application with upstream's defaults applied.

    ``has_schema`` tells an absent schema message from a present one whose fields are all unset
    (the default applications carry the latter).
    """

    name: str
    shim: int = 0
    description: str | None = None
    labels: list[str] = field(default_factory=list)
    image: str | None = None
    command: str | None = None
    arguments: list[str] = field(default_factory=list)
    environments: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    max_instances: int = DEFAULT_MAX_INSTANCES
    delay_release: int = DEFAULT_DELAY_RELEASE
    schema_input: str | None = None
    schema_output: str | None = None
    schema_common_data: str | None = None
    url: str | None = None
    installer: str | None = None
    creation_time: int = 0
    state: int = APP_ENABLED
    has_schema: bool = False
    version: int = 1

    def copy(self) -> AppRecord:
        """Return a snapshot that shares no mutable field with this record."""
        return replace(
            self,
            labels=list(self.labels),
            arguments=list(self.arguments),
            environments=dict(self.environments),
        )


@dataclass
class SessionSpec:
    """A session spec as a client sends it; ``resreq`` is ``None`` when not given."""

    application: str
    common_data: bytes | None = None
    min_instances: int = 0
    max_instances: int | None = None
    batch_size: int = 1
    priority: int = 0
    resreq: ResReq | None = None


@dataclass
class SessionRecord:
    """A session as a client sees it, counters included."""

    id: str
    application: str
    common_data: bytes | None
    min_instances: int
    max_instances: int | None
    batch_size: int
    priority: int
    resreq: ResReq
    state: int = SESSION_OPEN
    creation_time: int = 0
    completion_time: int | None = None
    pending: int = 0
    running: int = 0
    succeed: int = 0
    failed: int = 0
    cancelled: int = 0
    events: list[EventRecord] = field(default_factory=list)
    retry_count: int = 0


@dataclass
class TaskRecord:
    """A task of a session; ``id`` is per session, from 1."""

    id: int
    session_id: str
    input: bytes | None
    output: bytes | None = None
    state: int = TASK_PENDING
    creation_time: int = 0
    completion_time: int | None = None
    events: list[EventRecord] = field(default_factory=list)


@dataclass
class ExecutorRecord:
    """An executor of the fake's node; ``state`` is a flame.v1 ExecutorState value."""

    id: str
    node: str
    state: int
    session_id: str | None
    task_id: int | None
    application: str | None
    executors: str
    pid: int | None = None
    resreq: ResReq = FALLBACK_RESREQ


@dataclass(frozen=True)
class NodeRecord:
    """The fake's node as ListNodes/GetNode report it."""

    name: str
    state: int
    capacity: ResReq
    allocatable: ResReq
    arch: str
    os: str


@dataclass(frozen=True)
class SessionDemand:
    """What the scheduler needs to know about one Open session that still may get executors."""

    session_id: str
    application: str
    app: AppRecord
    pending: int
    running: int
    min_instances: int
    max_instances: int | None
    executors: int
    priority: int = 0
    batch_size: int = 1
    resreq: ResReq = FALLBACK_RESREQ
