"""The core of the state model: its lock, records, change notification and node.

:class:`StateCore` holds what every part of :class:`~._state.ClusterState` shares; the parts
(executors, applications, sessions and tasks) are mixins over it, one module each.
"""

from __future__ import annotations

import collections
import os
import platform
import threading
from dataclasses import replace

from . import _msgs as msgs
from ._records import (
    NODE_READY,
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_RUNNING,
    TASK_SUCCEED,
    AppRecord,
    ExecutorRecord,
    NodeRecord,
    ResReq,
    SessionRecord,
    StateError,
    TaskRecord,
    now_ms,
)
from ._rules import (
    default_apps,
    parse_task_id,
)

_COUNTER = {
    TASK_PENDING: "pending",
    TASK_RUNNING: "running",
    TASK_SUCCEED: "succeed",
    TASK_FAILED: "failed",
    TASK_CANCELLED: "cancelled",
}


class _Watch:
    """The condition a task's watchers wait on, and how many are waiting (it goes at zero)."""

    __slots__ = ("cond", "users")

    def __init__(self, lock: threading.Lock) -> None:
        self.cond = threading.Condition(lock)
        self.users = 0


class _Session:
    """Live session: its record (counters maintained on every transition) plus its tasks."""

    __slots__ = ("changed", "pending_ids", "rec", "seq", "tasks", "watches")

    def __init__(self, rec: SessionRecord, seq: int, lock: threading.Lock) -> None:
        self.rec = rec
        self.seq = seq  # creation order, the tie-break when creation times are equal
        self.tasks: dict[int, TaskRecord] = {}
        self.pending_ids: collections.deque[int] = collections.deque()  # ascending: ids only grow
        self.changed = threading.Condition(lock)  # LaunchTask long-polls
        # Task watchers wait on their task's own condition, so a change to one task wakes only
        # its watchers (with 64 watches open, a session-wide condition woke all 64 every time).
        self.watches: dict[int, _Watch] = {}

    def notify_watchers(self, task_id: int | None = None) -> None:
        """Wake the watchers of ``task_id``, or of every task when None (lock held)."""
        if task_id is None:
            for watch in self.watches.values():
                watch.cond.notify_all()
        else:
            one = self.watches.get(task_id)
            if one is not None:
                one.cond.notify_all()

    def move(self, task: TaskRecord, new_state: int) -> None:
        rec = self.rec
        setattr(rec, _COUNTER[task.state], getattr(rec, _COUNTER[task.state]) - 1)
        setattr(rec, _COUNTER[new_state], getattr(rec, _COUNTER[new_state]) + 1)
        task.state = new_state


def _copy_task(task: TaskRecord, *, events: bool) -> TaskRecord:
    return replace(task, events=list(task.events) if events else [])


def _copy_session(ssn: _Session, *, events: bool) -> SessionRecord:
    return replace(ssn.rec, events=list(ssn.rec.events) if events else [])


def _host_capacity() -> ResReq:
    cpus = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not every platform has these sysconf names
        memory = 8 * 1024**3
    return (cpus, int(memory), 0)


class StateCore:
    """What every part of :class:`~._state.ClusterState` shares: the lock and the change
    notification, the records, the node. Its arguments are :class:`~._state.ClusterState`'s.
    """

    def __init__(
        self,
        *,
        default_resreq: ResReq | None = None,
        retry_limit: int = 5,
        node_name: str = "fake-node-0",
        capacity: ResReq | None = None,
    ) -> None:
        self.default_resreq = default_resreq
        self.retry_limit = retry_limit
        self.node_name = node_name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # scheduler wake-ups (wait_for_change)
        self._generation = 0
        self._stopped = False
        self._seq = 0
        self._apps: dict[str, AppRecord] = {a.name: a for a in default_apps(now_ms())}
        self._sessions: dict[str, _Session] = {}
        self._executors: dict[str, ExecutorRecord] = {}
        # Session of the task each executor holds: an unbind may clear the executor's session
        # while it still holds a task, and releasing it must still find that task.
        self._held_in: dict[str, str] = {}
        self._capacity = capacity if capacity is not None else _host_capacity()

    # -- lifecycle and change notification -----------------------------------------------------

    @property
    def generation(self) -> int:
        """Counter bumped on every change; see :meth:`wait_for_change`."""
        with self._lock:
            return self._generation

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` has been called."""
        with self._lock:
            return self._stopped

    def _bump(self, ssn: _Session | None = None, *, task: int | None = None, watchers: bool = True) -> None:
        """Record a change (lock held): wake the scheduler and, if given, the session's waiters.

        Args:
            ssn: the session that changed; its LaunchTask long-polls are woken.
            task: the one task whose state changed: only its watchers are woken.
            watchers: False when no task's state changed (no watcher needs to look).
        """
        self._generation += 1
        self._changed.notify_all()
        if ssn is not None:
            ssn.changed.notify_all()
            if task is not None:
                ssn.notify_watchers(task)
            elif watchers:
                ssn.notify_watchers()

    def wait_for_change(self, generation: int, timeout: float) -> int:
        """Block until the generation differs from ``generation``, ``timeout`` passes or the state stops.

        Args:
            generation: the value the caller last saw.
            timeout: seconds to wait at most.

        Returns:
            The current generation.
        """
        with self._lock:
            self._changed.wait_for(lambda: self._generation != generation or self._stopped, timeout)
            return self._generation

    def stop(self) -> None:
        """Wake every waiter for good: long-polls return, task watches end. Idempotent."""
        with self._lock:
            self._stopped = True
            self._generation += 1
            self._changed.notify_all()
            for ssn in self._sessions.values():
                ssn.changed.notify_all()
                ssn.notify_watchers()

    def wake_watchers(self, session_id: str, task_id: str) -> None:
        """Make the watchers of one task re-check their exit conditions (its client went away)."""
        try:
            tid = parse_task_id(task_id)
        except StateError:
            return
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is not None:
                ssn.notify_watchers(tid)

    def wake(self, session_id: str | None = None) -> None:
        """Make waiters re-check their exit conditions (e.g. a client went away, a loop must stop).

        Bumps the generation, so :meth:`wait_for_change` returns, and wakes the long-polls and
        task watches of ``session_id`` (or of every session when ``None``).

        Args:
            session_id: the session whose waiters to wake; ``None`` wakes every session's.
        """
        with self._lock:
            if session_id is None:
                targets = list(self._sessions.values())
            else:
                one = self._sessions.get(session_id)
                targets = [] if one is None else [one]
            self._generation += 1
            self._changed.notify_all()
            for ssn in targets:
                ssn.changed.notify_all()
                ssn.notify_watchers()

    # -- nodes ----------------------------------------------------------------------------------

    def _node(self) -> NodeRecord:
        used = [e.resreq for e in self._executors.values()]
        allocatable = tuple(max(0, cap - sum(r[i] for r in used)) for i, cap in enumerate(self._capacity))
        return NodeRecord(
            name=self.node_name,
            state=NODE_READY,
            capacity=self._capacity,
            allocatable=(allocatable[0], allocatable[1], allocatable[2]),
            arch=platform.machine() or "unknown",
            os=platform.system().lower() or "unknown",
        )

    @property
    def capacity(self) -> ResReq:
        """The fake node's capacity (cpu, memory bytes, gpu): the whole cluster's."""
        return self._capacity

    def nodes(self) -> list[NodeRecord]:
        """ListNodes: the fake's single node."""
        with self._lock:
            return [self._node()]

    def get_node(self, name: str) -> NodeRecord:
        """GetNode.

        Raises:
            StateError: NOT_FOUND for any name but the fake's node.
        """
        with self._lock:
            if name != self.node_name:
                raise StateError("NOT_FOUND", msgs.NODE_NOT_FOUND.format(name=name))
            return self._node()
