"""What a test reads off a running FakeCluster: its calls, faults, records and instance logs.

:class:`ClusterToolkit` is a part of :class:`~flamepy_fake.FakeCluster` (its base): every
accessor here is a method or property of the cluster, documented with it. It holds no state of
its own; it reads the parts that ``FakeCluster`` starts (the state model, the object cache, the
executor manager) and refuses, with ``FakeCluster``'s message, once they are gone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flamepy_runner import UsageError

if TYPE_CHECKING:
    from ._control._records import EventRecord
    from ._parts import ClusterParts
    from ._toolkit._calls import CallLog
    from ._toolkit._faults import Faults
    from ._toolkit._introspect import (
        AbandonedInstance,
        AppInfo,
        ExecutorInfo,
        ObjectInfo,
        SessionInfo,
        TaskInfo,
    )

__all__ = ["ClusterToolkit"]


class ClusterToolkit:
    """The introspection and fault accessors of :class:`~flamepy_fake.FakeCluster`."""

    # Set by FakeCluster (its __init__ and stop()); declared here for the type checker.
    _calls: CallLog
    _abandoned: tuple[AbandonedInstance, ...]

    if TYPE_CHECKING:

        def _running_parts(self, what: str) -> ClusterParts: ...

    @property
    def calls(self) -> CallLog:
        """Every call the cluster served, oldest first: the last 10,000 (``MAX_CALLS``).

        Frontend RPCs, the executor manager's Backend calls (``BindExecutorCompleted``,
        ``LaunchTask``, ``CompleteTask``), its calls into instances (``flame.v1.Instance``:
        ``OnSessionEnter``, ``OnTaskInvoke``) and object cache (Flight) calls, each a
        :class:`CallRecord` (seq,
        service, method, status, duration, app, session_id, task_id, key).
        ``cluster.calls(method=..., service=..., status=..., where=...)`` filters;
        ``cluster.calls.clear()`` forgets them. Readable after :meth:`stop`.
        """
        return self._calls

    @property
    def faults(self) -> Faults:
        """The cluster's fault injection (see :class:`flamepy_fake.Faults`).

        Raises:
            UsageError: the cluster is not running.
        """
        faults = self._running_parts("faults").faults
        assert faults is not None
        return faults

    def applications(self) -> list[AppInfo]:
        """Every registered application, by name.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import app_info

        state = self._running_parts("applications()").state
        assert state is not None
        return sorted((app_info(a) for a in state.list_applications()), key=lambda a: a.name)

    def sessions(self) -> list[SessionInfo]:
        """Every session (closed ones included) with its task counts, oldest first.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import session_info

        state = self._running_parts("sessions()").state
        assert state is not None
        return [session_info(s) for s in state.list_sessions()]

    def tasks(self, session_id: str) -> list[TaskInfo]:
        """The tasks of a session, by id.

        Raises:
            UsageError: the cluster is not running, or has no such session.
        """
        from ._control._state import StateError
        from ._toolkit._introspect import task_info

        state = self._running_parts("tasks()").state
        assert state is not None
        try:
            ids = sorted(t.id for t in state.list_tasks(session_id))  # ListTask's copies lack events
            return [task_info(state.get_task(session_id, str(tid))) for tid in ids]
        except StateError:
            raise UsageError(f"no session {session_id!r} on this FakeCluster") from None

    def objects(self) -> list[ObjectInfo]:
        """Every object of the object cache (evicted ones included), by key.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import ObjectInfo

        cache = self._running_parts("objects()").cache
        assert cache is not None
        return [ObjectInfo(*row) for row in cache.store.objects()]

    def executors(self) -> list[ExecutorInfo]:
        """The cluster's executors now: id, state, session, app, executors (thread or process), pid, task_id.

        Raises:
            UsageError: the cluster is not running.
        """
        manager = self._running_parts("executors()").manager
        assert manager is not None
        return manager.executors()

    def instance_logs(self, executor_id: str) -> str:
        """The stdout and stderr an instance wrote so far (also once its executor is gone).

        Thread instances have none (empty); so does an instance not started yet.

        Args:
            executor_id: the id from :meth:`executors` (also ``ListExecutor``).

        Raises:
            UsageError: the cluster is not running.
            KeyError: no executor with that id ever ran on this cluster.
        """
        manager = self._running_parts("instance_logs()").manager
        assert manager is not None
        return manager.instance_logs(executor_id)

    def executors_of(self, session_id: str) -> list[str]:
        """Ids of every executor started for ``session_id``, oldest first, gone ones included.

        Pass them to :meth:`instance_logs`, which keeps an instance's output after its
        executor is released, until the cluster stops.

        Raises:
            UsageError: the cluster is not running.
        """
        manager = self._running_parts("executors_of()").manager
        assert manager is not None
        return manager.executors_of(session_id)

    def session_events(self, session_id: str) -> list[EventRecord]:
        """The session's events (code, message, creation_time): 1001 per failed bind, then 1002.

        Real Flame keeps a session whose instances cannot start open with its tasks pending
        (as the fake does); these events, with :meth:`instance_logs` of :meth:`executors_of`,
        say why.

        Raises:
            UsageError: the cluster is not running, or has no such session.
        """
        from ._control._state import StateError

        state = self._running_parts("session_events()").state
        assert state is not None
        try:
            return list(state.get_session(session_id).events)
        except StateError:
            raise UsageError(f"no session {session_id!r} on this FakeCluster") from None

    @property
    def abandoned_instances(self) -> tuple[AbandonedInstance, ...]:
        """Thread instances that :meth:`stop` left running inside user code (readable after stop).

        A thread cannot be killed, so ``stop()`` does not wait for one: it renames the thread
        ``flamepy-fake-abandoned-<id>`` and lists it here. Process instances are always killed.
        """
        return self._abandoned
