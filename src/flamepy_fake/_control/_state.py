"""State model of the fake session manager: applications, sessions, tasks, executors, nodes.

Plain Python with no transport imports: the gRPC servicers (``_frontend``, ``_backend``) and the
fake's scheduler and executors all drive this one object. Everything is guarded by a single lock,
so no caller ever observes a half-applied change, and every method hands out copies (snapshots),
never the live records. Errors are raised as :class:`StateError` carrying the name of the gRPC
status code; the transport maps them in one place.

Behaviour follows upstream Flame's filesystem storage engine (``session-manager.md``). Times are
epoch milliseconds.

:class:`ClusterState` is assembled from one part per concern, each a mixin over
:class:`._state_core.StateCore` (the lock, the records, change notification, the node):
:mod:`._state_executors` (demand, executors, bindings, task launches), :mod:`._state_apps`
(applications) and :mod:`._state_sessions` (sessions and tasks). Callers import from here.
"""

from __future__ import annotations

from ._records import (
    DEFAULT_DELAY_RELEASE,
    DEFAULT_MAX_INSTANCES,
    FALLBACK_RESREQ,
    AppRecord,
    AppSpec,
    EventRecord,
    ExecutorRecord,
    NodeRecord,
    ResultError,
    SessionDemand,
    SessionRecord,
    SessionSpec,
    StateError,
    TaskRecord,
)
from ._state_apps import Applications
from ._state_executors import ExecutorSide
from ._state_sessions import SessionsAndTasks

__all__ = [
    "DEFAULT_DELAY_RELEASE",
    "DEFAULT_MAX_INSTANCES",
    "FALLBACK_RESREQ",
    "AppRecord",
    "AppSpec",
    "ClusterState",
    "EventRecord",
    "ExecutorRecord",
    "NodeRecord",
    "ResultError",
    "SessionDemand",
    "SessionRecord",
    "SessionSpec",
    "StateError",
    "TaskRecord",
]


class ClusterState(ExecutorSide, Applications, SessionsAndTasks):
    """The whole state of one fake Flame cluster.

    Args:
        default_resreq: the cluster's default session resreq ``(cpu, memory, gpu)``, used when a
            session spec gives none; ``None`` means upstream's fallback (1 cpu, 1 GiB, 0 gpu).
        retry_limit: bind failures after which a session gets no new executors (event 1002).
        node_name: name of the fake's single node.
        capacity: the node's capacity ``(cpu, memory, gpu)``; the host's when ``None``.
    """
