"""The call record: every Frontend and object cache call a FakeCluster served, in order.

``CallLog`` keeps the last :data:`MAX_CALLS` calls in a bounded deque behind one lock, so
recording costs one small object and one append per call. Transports (``_intercept.py`` for
gRPC, ``_cache/_server.py`` for Flight) append; tests read ``cluster.calls``. Nothing here
imports grpc or pyarrow.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator

__all__ = [
    "BACKEND_SERVICE",
    "CACHE_SERVICE",
    "FRONTEND_SERVICE",
    "INSTANCE_SERVICE",
    "MAX_CALLS",
    "CallLog",
    "CallRecord",
]

#: How many calls a cluster remembers (older ones are dropped first).
MAX_CALLS = 10_000
#: The ``service`` of session manager calls.
FRONTEND_SERVICE = "flame.v1.Frontend"
#: The ``service`` of the executor manager's calls to the session manager (LaunchTask, ...).
BACKEND_SERVICE = "flame.v1.Backend"
#: The ``service`` of the executor manager's calls into an instance (OnSessionEnter, OnTaskInvoke).
INSTANCE_SERVICE = "flame.v1.Instance"
#: The ``service`` of object cache calls.
CACHE_SERVICE = "arrow.flight.protocol.FlightService"


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """One call served by the fake cluster.

    Attributes:
        seq: its position in the cluster's record (0 for the first call; grows by one per call).
        service: ``flame.v1.Frontend``, ``flame.v1.Backend`` (the executor manager's
            BindExecutorCompleted, LaunchTask, CompleteTask), ``flame.v1.Instance`` (its calls
            into instances) or ``arrow.flight.protocol.FlightService`` (the object cache).
        method: the RPC name, e.g. ``CreateTask``, ``LaunchTask``, ``OnTaskInvoke``, ``DoPut``.
        status: the gRPC status code name the caller got, e.g. ``OK``, ``NOT_FOUND``.
        duration: seconds the handler took (for streams: until the stream ended).
        app: the application named by the request, if any.
        session_id: the session named by the request, if any.
        task_id: the task named by the request, if any.
        key: the object cache key (or key pattern) named by the request, if any.
    """

    seq: int
    service: str
    method: str
    status: str
    duration: float
    app: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    key: str | None = None


class CallLog:
    """The last :data:`MAX_CALLS` calls of a cluster, oldest first (thread-safe).

    Iterating, ``len()`` and indexing see a snapshot. ``cluster.calls(...)`` filters.
    """

    def __init__(self, maxlen: int = MAX_CALLS) -> None:
        self._calls: collections.deque[CallRecord] = collections.deque(maxlen=maxlen)
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def record(
        self,
        service: str,
        method: str,
        status: str,
        duration: float,
        app: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Append one finished call (called by the transports)."""
        with self._lock:
            self._calls.append(
                CallRecord(next(self._seq), service, method, status, duration, app, session_id, task_id, key)
            )

    def __call__(
        self,
        *,
        service: str | None = None,
        method: str | None = None,
        status: str | None = None,
        where: Callable[[CallRecord], bool] | None = None,
    ) -> list[CallRecord]:
        """The recorded calls matching every given filter, oldest first.

        Args:
            service: keep calls of this service (``"flame.v1.Frontend"``; the short names
                ``"Frontend"``, ``"Backend"``, ``"Instance"``, ``"FlightService"`` work too).
            method: keep calls of this RPC (``"CreateTask"``).
            status: keep calls that ended with this status code name (``"UNAVAILABLE"``).
            where: keep calls for which this predicate is true.
        """
        calls = self.snapshot()
        if service is not None:
            calls = [c for c in calls if c.service == service or c.service.rsplit(".", 1)[-1] == service]
        if method is not None:
            calls = [c for c in calls if c.method == method]
        if status is not None:
            calls = [c for c in calls if c.status == status]
        if where is not None:
            calls = [c for c in calls if where(c)]
        return calls

    def snapshot(self) -> list[CallRecord]:
        """Every recorded call, oldest first."""
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        """Forget every recorded call (``seq`` keeps growing)."""
        with self._lock:
            self._calls.clear()

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._calls)

    def __getitem__(self, index: int) -> CallRecord:
        with self._lock:
            return self._calls[index]

    def __repr__(self) -> str:
        return f"<CallLog {len(self)} calls>"
