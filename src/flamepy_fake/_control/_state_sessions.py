"""The state model's sessions and tasks: create, open, close, delete, watch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import _msgs as msgs
from ._records import (
    APP_ENABLED,
    FALLBACK_RESREQ,
    SESSION_CLOSED,
    SESSION_OPEN,
    TASK_CANCELLED,
    TASK_PENDING,
    TERMINAL_TASK_STATES,
    EventRecord,
    ResReq,
    SessionRecord,
    SessionSpec,
    StateError,
    TaskRecord,
    now_ms,
)
from ._rules import (
    batch_of,
    check_batch_alignment,
    parse_task_id,
    resreq_debug,
    rust_option,
)
from ._state_core import StateCore, _copy_session, _copy_task, _Session, _Watch


class SessionsAndTasks(StateCore):
    """The state model's sessions and tasks: create, open, close, delete, watch."""

    # -- sessions -------------------------------------------------------------------------------

    def _resolve_resreq(self, spec: SessionSpec) -> ResReq:
        if spec.resreq is not None:
            return spec.resreq
        return self.default_resreq if self.default_resreq is not None else FALLBACK_RESREQ

    def _create_session(self, session_id: str, spec: SessionSpec) -> SessionRecord:
        """Create (lock held); the unknown-application check comes before the duplicate check."""
        app = self._apps.get(spec.application)
        if app is None:
            raise StateError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=spec.application))
        if app.state != APP_ENABLED:
            raise StateError("INVALID_ARGUMENT", msgs.APP_NOT_ENABLED.format(name=spec.application))
        if session_id in self._sessions:
            raise StateError("ALREADY_EXISTS", msgs.SESSION_EXISTS.format(id=session_id))
        rec = SessionRecord(
            id=session_id,
            application=spec.application,
            common_data=spec.common_data,
            min_instances=spec.min_instances,
            max_instances=spec.max_instances,
            batch_size=batch_of(spec.batch_size),
            priority=spec.priority,
            resreq=self._resolve_resreq(spec),
            creation_time=now_ms(),
        )
        self._seq += 1
        ssn = _Session(rec, self._seq, self._lock)
        self._sessions[session_id] = ssn
        self._bump()
        return _copy_session(ssn, events=False)

    def create_session(self, session_id: str, spec: SessionSpec | None) -> SessionRecord:
        """CreateSession.

        Raises:
            StateError: INVALID_ARGUMENT without a spec, NOT_FOUND for an unknown application,
                ALREADY_EXISTS for a taken id.
        """
        if spec is None:
            raise StateError("INVALID_ARGUMENT", msgs.SESSION_SPEC_MISSING)
        check_batch_alignment(spec)  # v0.6.0: before the application lookup
        with self._lock:
            return self._create_session(session_id, spec)

    def open_session(self, session_id: str, spec: SessionSpec | None) -> SessionRecord:
        """OpenSession: get the open session (checking ``spec`` against it) or create it.

        Raises:
            StateError: INVALID_ARGUMENT on a spec mismatch or a closed session, NOT_FOUND for an
                unknown id without a spec, and CreateSession's errors when creating. A given
                spec's batch alignment is checked before any session lookup (v0.6.0).
        """
        if spec is not None:
            check_batch_alignment(spec)
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                if spec is None:
                    raise StateError("NOT_FOUND", msgs.SESSION_OPEN_NOT_FOUND.format(id=session_id))
                return self._create_session(session_id, spec)
            if ssn.rec.state != SESSION_OPEN:
                raise StateError("INVALID_ARGUMENT", msgs.SESSION_NOT_OPEN.format(id=session_id))
            if spec is not None:
                self._check_spec(ssn.rec, spec)
            return _copy_session(ssn, events=False)

    def _check_spec(self, rec: SessionRecord, spec: SessionSpec) -> None:
        # v0.6.0's comparison order; common_data is not compared, batch_size normalised to max(B, 1).
        resreq = self._resolve_resreq(spec)
        # Rendered forms are compared: each rendering is one-to-one with the value it shows.
        rows = (
            ("application", f"'{rec.application}'", f"'{spec.application}'"),
            ("resreq", resreq_debug(rec.resreq), resreq_debug(resreq)),
            ("min_instances", str(rec.min_instances), str(spec.min_instances)),
            ("max_instances", rust_option(rec.max_instances), rust_option(spec.max_instances)),
            ("batch_size", str(batch_of(rec.batch_size)), str(batch_of(spec.batch_size))),
            ("priority", str(rec.priority), str(spec.priority)),
        )
        for name, expected, got in rows:
            if expected != got:
                raise StateError(
                    "INVALID_ARGUMENT",
                    msgs.SESSION_SPEC_MISMATCH.format(id=rec.id, field=name, expected=expected, got=got),
                )

    def close_session(self, session_id: str) -> SessionRecord:
        """CloseSession: cancels Pending tasks (no event); closing again refreshes completion_time.

        Raises:
            StateError: NOT_FOUND for an unknown id, INTERNAL while a task is Running.
        """
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", msgs.SESSION_CACHE_NOT_FOUND.format(id=session_id))
            if ssn.rec.running:
                raise StateError("INTERNAL", msgs.SESSION_RUNNING_TASKS)
            t = now_ms()
            while ssn.pending_ids:
                task = ssn.tasks[ssn.pending_ids.popleft()]
                ssn.move(task, TASK_CANCELLED)
                task.completion_time = t
            ssn.rec.state = SESSION_CLOSED
            ssn.rec.completion_time = t
            self._bump(ssn)
            return _copy_session(ssn, events=False)

    def delete_session(self, session_id: str) -> SessionRecord:
        """DeleteSession: forget a closed session whose tasks are all terminal.

        Raises:
            StateError: NOT_FOUND for an unknown id, INTERNAL if open or with unfinished tasks.
        """
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", msgs.SESSION_CACHE_NOT_FOUND.format(id=session_id))
            if ssn.rec.state == SESSION_OPEN:
                raise StateError("INTERNAL", msgs.SESSION_DELETE_OPEN)
            if ssn.rec.pending or ssn.rec.running:
                raise StateError("INTERNAL", msgs.SESSION_DELETE_NON_TERMINAL)
            del self._sessions[session_id]
            self._bump(ssn)  # watchers find the session gone and end silently
            return _copy_session(ssn, events=False)

    def get_session(self, session_id: str) -> SessionRecord:
        """GetSession, with the session-level events (1001/1002).

        Raises:
            StateError: NOT_FOUND (the bare id) for an unknown id.
        """
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", session_id)
            return _copy_session(ssn, events=True)

    def list_sessions(self) -> list[SessionRecord]:
        """ListSession: every session, open and closed, with session-level events."""
        with self._lock:
            return [_copy_session(s, events=True) for s in self._sessions.values()]

    # -- tasks ----------------------------------------------------------------------------------

    def create_task(self, session_id: str, input: bytes | None) -> TaskRecord:
        """CreateTask: next id, Pending, event 0; wakes LaunchTask long-polls. Response has no events.

        Raises:
            StateError: NOT_FOUND for an unknown session, INVALID_ARGUMENT for a closed one.
        """
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", msgs.TASK_SESSION_NOT_FOUND.format(id=session_id))
            if ssn.rec.state != SESSION_OPEN:
                raise StateError("INVALID_ARGUMENT", msgs.TASK_SESSION_CLOSED)
            t = now_ms()
            task = TaskRecord(
                id=len(ssn.tasks) + 1,  # tasks are never removed from a session: len+1 is max+1
                session_id=session_id,
                input=input,
                creation_time=t,
                events=[EventRecord(TASK_PENDING, msgs.EVENT_TASK_CREATED, t)],
            )
            ssn.tasks[task.id] = task
            ssn.pending_ids.append(task.id)
            ssn.rec.pending += 1
            self._bump(ssn, watchers=False)  # a new task has no watchers yet
            return _copy_task(task, events=False)

    def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        """GetTask, with the task's full event list in record order.

        Raises:
            StateError: INVALID_ARGUMENT for a task id that is not an i64, NOT_FOUND (bare id)
                for an unknown session or task.
        """
        tid = parse_task_id(task_id)
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", session_id)
            task = ssn.tasks.get(tid)
            if task is None:
                raise StateError("NOT_FOUND", str(tid))
            return _copy_task(task, events=True)

    def list_tasks(self, session_id: str) -> list[TaskRecord]:
        """ListTask: every task of the session by id, without events (as upstream).

        Raises:
            StateError: NOT_FOUND (bare id) for an unknown session.
        """
        with self._lock:
            ssn = self._sessions.get(session_id)
            if ssn is None:
                raise StateError("NOT_FOUND", session_id)
            return [_copy_task(t, events=False) for t in ssn.tasks.values()]

    def watch_task(
        self, session_id: str, task_id: str, *, active: Callable[[], bool] = lambda: True, poll: float = 1.0
    ) -> Iterator[TaskRecord]:
        """WatchTask: validate now, then return an iterator of the task's state changes.

        The iterator yields nothing for the current state unless it is already terminal, then one
        snapshot per observed state change, and ends right after a terminal state. It ends
        silently if the session or task is unknown or disappears, when ``active()`` turns false
        (checked at least every ``poll`` seconds and after :meth:`wake`), or when the state
        stops. Snapshots carry the task's events: a superset of upstream (whose watch messages
        normally have none) that lets flamepy raise the executor's real failure message instead
        of "Task failed without error message".

        Raises:
            StateError: INVALID_ARGUMENT for a task id that is not an i64.
        """
        tid = parse_task_id(task_id)
        return self._watch(session_id, tid, active, poll)

    def _watch(
        self, session_id: str, tid: int, active: Callable[[], bool], poll: float
    ) -> Iterator[TaskRecord]:
        with self._lock:
            ssn = self._sessions.get(session_id)
            task = ssn.tasks.get(tid) if ssn is not None else None
            if ssn is None or task is None:
                return
            seen = task.state
            first = _copy_task(task, events=True) if seen in TERMINAL_TASK_STATES else None
        if first is not None:
            yield first
            return
        with self._lock:
            watch = ssn.watches.get(tid)
            if watch is None:
                watch = ssn.watches[tid] = _Watch(self._lock)
            watch.users += 1
        try:
            while True:
                with self._lock:
                    while True:
                        if self._stopped or self._sessions.get(session_id) is not ssn or not active():
                            return
                        if task.state == TASK_PENDING:
                            seen = TASK_PENDING  # a retried task: upstream never streams Pending
                        elif task.state != seen:
                            break
                        watch.cond.wait(poll)
                    seen = task.state
                    snapshot = _copy_task(task, events=True)
                yield snapshot
                if seen in TERMINAL_TASK_STATES:
                    return
        finally:
            with self._lock:
                watch.users -= 1
                if watch.users == 0 and ssn.watches.get(tid) is watch:
                    del ssn.watches[tid]
