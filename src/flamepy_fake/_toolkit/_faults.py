"""Fault injection: what a test asks to go wrong, and the one question transports ask.

``Faults`` is the test-facing registry (``cluster.faults``). Each method adds a :class:`Fault`
and returns it; a fault fires on the next matching calls (``times``: 1 by default, N, or None
for every one) for which the optional ``when`` predicate is true, and is removed when it has
fired ``times`` times, by :meth:`Fault.remove`, on leaving its ``with`` block, or by
:meth:`Faults.clear` (the pytest plugin clears them after each test).

A ``when`` predicate runs on the serving thread under the registry's lock: keep it quick and do
not call ``faults`` from it; an exception it raises fails the call it was asked about.

The transports call :meth:`Faults.take` at one place each: the Frontend servicer wrapper
(``_intercept.py``), the Flight server's handlers (``_cache/_server.py``) and the executor
manager. With no fault set, :meth:`Faults.take` returns at its first line (one attribute read).
Nothing here imports grpc or pyarrow.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Collection
from types import TracebackType

from .._errors import FaultError

__all__ = ["CallTarget", "Fault", "FaultError", "Faults"]

# Status codes a fault may answer with (gRPC names, OK excluded).
GRPC_STATUSES = (
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
#: The statuses pyarrow's Flight server can send (it maps exception classes to codes).
CACHE_STATUSES = (
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "INTERNAL",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "UNAVAILABLE",
    "UNIMPLEMENTED",
)
#: The object cache's methods, as on the wire.
CACHE_METHODS = ("DoAction", "DoGet", "DoPut", "GetFlightInfo", "GetSchema", "ListActions", "ListFlights")

FAIL, DELAY, CUT_WATCH, KILL_TASK, KILL_IDLE, SESSION_ENTER, DOWNLOAD, INSTALL = (
    "fail",
    "delay",
    "cut_watch",
    "kill_in_task",
    "kill_between_tasks",
    "session_enter",
    "download",
    "install",
)


@dataclasses.dataclass(frozen=True)
class CallTarget:
    """What a ``when`` predicate sees: the call (or executor step) a fault may hit.

    Attributes:
        method: the RPC (``CreateTask``, ``DoPut``, ``WatchTask``) or executor step
            (``OnSessionEnter``, ``OnTaskInvoke``, ``download``, ``install``).
        app: the application concerned, if known.
        session_id: the session concerned, if known.
        task_id: the task concerned, if known.
        key: the object cache key concerned, if any.
    """

    method: str
    app: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    key: str | None = None


class Fault:
    """One injected fault (returned by every :class:`Faults` method).

    Use it as a context manager to remove it on exit. ``hits`` counts how often it fired.

    Attributes:
        kind: ``fail``, ``delay``, ``cut_watch``, ``kill_in_task``, ``kill_between_tasks``,
            ``session_enter``, ``download`` or ``install``.
        method: the method it applies to (None for executor faults).
        status: the gRPC status code name it answers with, if any.
        message: the error text it answers with, if any.
        seconds: the delay, for ``delay`` faults.
        times: how many calls it fires on (None: every matching call until removed).
        after: for ``cut_watch`` faults, the messages a stream sends before it is cut.
    """

    def __init__(
        self,
        registry: Faults,
        kind: str,
        method: str | None,
        *,
        status: str | None = None,
        message: str | None = None,
        seconds: float = 0.0,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> None:
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise FaultError(f"times must be a positive integer or None (every call); got {times!r}")
        self._registry = registry
        self.kind = kind
        self.method = method
        self.status = status
        self.message = message
        self.seconds = seconds
        self.times = times
        self.when = when
        self.after = 0
        self.hits = 0

    @property
    def active(self) -> bool:
        """Whether it can still fire."""
        return self in self._registry.active

    def remove(self) -> None:
        """Stop it from firing (idempotent)."""
        self._registry._remove(self)

    def __enter__(self) -> Fault:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        what = f"{self.kind} {self.method}" if self.method else self.kind
        left = "always" if self.times is None else f"{self.times - self.hits} left"
        return f"<Fault {what} {self.status or ''} hits={self.hits} {left}>".replace("  ", " ")


class Faults:
    """The faults injected into one cluster (``FakeCluster.faults``); thread-safe.

    Args:
        frontend_methods: the ``flame.v1.Frontend`` RPC names this cluster serves.
    """

    def __init__(self, frontend_methods: Collection[str]) -> None:
        self._frontend = tuple(sorted(frontend_methods))
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    # ----------------------------------------------------------------- test-facing

    def fail(
        self,
        method: str,
        status: str = "UNAVAILABLE",
        message: str = "injected fault",
        *,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Answer the next ``times`` calls of ``method`` with ``status`` and ``message``.

        The call does not reach the cluster's state. ``method`` is a Frontend RPC
        (``CreateTask``) or an object cache one (``DoPut``, ``DoGet``, ``DoAction``, ...).

        Raises:
            FaultError: unknown method or status, or a status the object cache cannot send.
        """
        self._check_method(method)
        if status not in GRPC_STATUSES:
            raise FaultError(f"unknown status {status!r}; known: {', '.join(GRPC_STATUSES)}")
        if method in CACHE_METHODS and status not in CACHE_STATUSES:
            raise FaultError(
                f"the object cache (pyarrow's Flight server) cannot answer {status}; "
                f"it can answer {', '.join(CACHE_STATUSES)}"
            )
        return self._add(Fault(self, FAIL, method, status=status, message=message, times=times, when=when))

    def delay(
        self,
        method: str,
        seconds: float,
        *,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Hold the next ``times`` calls of ``method`` for ``seconds`` before serving them.

        Raises:
            FaultError: unknown method, or a negative delay.
        """
        self._check_method(method)
        if seconds < 0:
            raise FaultError(f"seconds must be >= 0; got {seconds!r}")
        return self._add(Fault(self, DELAY, method, seconds=float(seconds), times=times, when=when))

    def cut_watch(
        self,
        status: str | None = "UNAVAILABLE",
        message: str = "injected fault: WatchTask stream cut",
        *,
        after: int = 0,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Cut the next ``times`` ``WatchTask`` streams after ``after`` messages (0: at once).

        With a ``status``, the stream ends with that error (a connection lost); with
        ``status=None`` it ends cleanly although the task is not finished. A watch sends a
        message per state change only, so a stream with ``after=1`` on a task that stays
        Running is never cut.

        Raises:
            FaultError: unknown status, or a negative ``after``.
        """
        if status is not None and status not in GRPC_STATUSES:
            raise FaultError(f"unknown status {status!r}; known: {', '.join(GRPC_STATUSES)}")
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise FaultError(f"after must be a non-negative integer; got {after!r}")
        fault = Fault(self, CUT_WATCH, "WatchTask", status=status, message=message, times=times, when=when)
        fault.after = after
        return self._add(fault)

    def kill_instance(
        self,
        during: str = "task",
        *,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Kill the instance of the next ``times`` matching executors.

        ``during="task"``: as a task is handed to it, so the task fails with the crash;
        ``during="idle"``: between tasks, when its next task is assigned and before it sees it,
        so the task goes back to Pending and runs on a fresh instance. A process instance gets
        SIGKILL; a thread instance's worker dies (its executor ends as if its process had
        died). The predicate sees ``OnTaskInvoke`` (with the task) or ``LaunchTask`` (without).

        Raises:
            FaultError: ``during`` is neither ``task`` nor ``idle``.
        """
        kinds = {"task": KILL_TASK, "idle": KILL_IDLE}
        if during not in kinds:
            raise FaultError(f"during must be 'task' or 'idle'; got {during!r}")
        return self._add(Fault(self, kinds[during], None, times=times, when=when))

    def fail_session_enter(
        self,
        message: str = "injected fault",
        *,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Make the next ``times`` ``OnSessionEnter`` calls fail with ``message`` (a failed bind)."""
        return self._add(Fault(self, SESSION_ENTER, None, message=message, times=times, when=when))

    def fail_install(
        self,
        stage: str = "install",
        message: str = "injected fault",
        *,
        times: int | None = 1,
        when: Callable[[CallTarget], bool] | None = None,
    ) -> Fault:
        """Make the next ``times`` package downloads (``stage="download"``) or installs fail.

        Raises:
            FaultError: ``stage`` is neither ``download`` nor ``install``.
        """
        if stage not in (DOWNLOAD, INSTALL):
            raise FaultError(f"stage must be 'download' or 'install'; got {stage!r}")
        return self._add(Fault(self, stage, None, message=message, times=times, when=when))

    @property
    def armed(self) -> bool:
        """Whether any fault is set (the transports' fast check)."""
        return bool(self._faults)

    @property
    def active(self) -> list[Fault]:
        """The faults that can still fire, oldest first."""
        with self._lock:
            return list(self._faults)

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults = []

    # ----------------------------------------------------------------- transport-facing

    def take(self, kind: str, target: CallTarget) -> Fault | None:
        """The first active fault of ``kind`` that matches ``target``, counted as fired.

        Called by the transports; cheap when no fault is set.
        """
        if not self._faults:
            return None
        with self._lock:
            for fault in self._faults:
                if fault.kind != kind or (fault.method is not None and fault.method != target.method):
                    continue
                if fault.when is not None and not fault.when(target):
                    continue
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    self._faults = [f for f in self._faults if f is not fault]
                return fault
        return None

    # ----------------------------------------------------------------- internals

    def _check_method(self, method: str) -> None:
        if method not in self._frontend and method not in CACHE_METHODS:
            raise FaultError(
                f"unknown method {method!r}; Frontend methods: {', '.join(self._frontend)}; "
                f"object cache methods: {', '.join(CACHE_METHODS)}"
            )

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults = [*self._faults, fault]
        return fault

    def _remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]
