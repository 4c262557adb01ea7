"""State model of the fake session manager: applications, sessions, tasks, executors, nodes.

Plain Python with no transport imports: the gRPC servicers (``_frontend``, ``_backend``) and the
fake's scheduler and executors all drive this one object. Everything is guarded by a single lock,
so no caller ever observes a half-applied change, and every method hands out copies (snapshots),
never the live records. Errors are raised as :class:`StateError` carrying the name of the gRPC
status code; the transport maps them in one place.

Behaviour follows upstream Flame's filesystem storage engine (``session-manager.md``). Times are
epoch milliseconds.
"""

from __future__ import annotations

import collections
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace

from . import _msgs as msgs
from ._records import (
    APP_ENABLED,
    DEFAULT_DELAY_RELEASE,
    DEFAULT_MAX_INSTANCES,
    EXECUTOR_BINDING,
    EXECUTOR_BOUND,
    EXECUTOR_UNBINDING,
    FALLBACK_RESREQ,
    NODE_READY,
    SESSION_CLOSED,
    SESSION_OPEN,
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_RUNNING,
    TASK_SUCCEED,
    TERMINAL_TASK_STATES,
    AppRecord,
    AppSpec,
    EventRecord,
    ExecutorRecord,
    NodeRecord,
    ResReq,
    ResultError,
    SessionDemand,
    SessionRecord,
    SessionSpec,
    StateError,
    TaskRecord,
    now_ms,
)
from ._rules import (
    batch_of,
    check_app_spec,
    check_batch_alignment,
    default_apps,
    parse_task_id,
    resreq_debug,
    rust_option,
    validate_app_name,
)

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


class ClusterState:
    """The whole state of one fake Flame cluster.

    Args:
        default_resreq: the cluster's default session resreq ``(cpu, memory, gpu)``, used when a
            session spec gives none; ``None`` means upstream's fallback (1 cpu, 1 GiB, 0 gpu).
        retry_limit: bind failures after which a session gets no new executors (event 1002).
        node_name: name of the fake's single node.
        capacity: the node's capacity ``(cpu, memory, gpu)``; the host's when ``None``.
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

    # -- executor-facing (scheduler and executors) ---------------------------------------------

    def _holding(self, session_id: str) -> int:
        return sum(
            1
            for e in self._executors.values()
            if e.session_id == session_id
            and e.state in (EXECUTOR_BINDING, EXECUTOR_BOUND, EXECUTOR_UNBINDING)
        )

    def demand(self) -> list[SessionDemand]:
        """One entry per Open session below the retry limit, by (priority desc, creation asc)."""
        with self._lock:
            ready = [
                s
                for s in self._sessions.values()
                if s.rec.state == SESSION_OPEN and s.rec.retry_count < self.retry_limit
            ]
            ready.sort(key=lambda s: (-s.rec.priority, s.rec.creation_time, s.seq))
            result = []
            for s in ready:
                app = self._apps.get(s.rec.application)
                if app is None:  # cannot happen: apps with sessions cannot be unregistered
                    continue
                result.append(
                    SessionDemand(
                        session_id=s.rec.id,
                        application=s.rec.application,
                        app=app.copy(),
                        pending=s.rec.pending,
                        running=s.rec.running,
                        min_instances=s.rec.min_instances,
                        max_instances=s.rec.max_instances,
                        executors=self._holding(s.rec.id),
                        priority=s.rec.priority,
                        batch_size=s.rec.batch_size,
                        resreq=s.rec.resreq,
                    )
                )
            return result

    def create_executor(self, session_id: str, *, backend: str) -> ExecutorRecord:
        """Create an executor already assigned to ``session_id``, in state Binding.

        Raises:
            StateError: NOT_FOUND if the session is unknown, INVALID_ARGUMENT if it is closed.
        """
        return self.create_executors(session_id, 1, backend=backend)[0]

    def create_executors(self, session_id: str, count: int, *, backend: str) -> list[ExecutorRecord]:
        """Create a gang of ``count`` executors for ``session_id`` in one change, all Binding.

        Nobody (ListExecutor included) ever sees part of the gang, as v0.6.0 binds a gang in one
        scheduling cycle.

        Raises:
            StateError: NOT_FOUND if the session is unknown, INVALID_ARGUMENT if it is closed.
        """
        with self._lock:
            ssn = self._open_session_or_raise(session_id)
            made = []
            for _ in range(count):
                rec = ExecutorRecord(
                    id=str(uuid.uuid4()),
                    node=self.node_name,
                    state=EXECUTOR_BINDING,
                    session_id=session_id,
                    task_id=None,
                    application=ssn.rec.application,
                    backend=backend,
                    resreq=ssn.rec.resreq,
                )
                self._executors[rec.id] = rec
                made.append(replace(rec))
            self._bump()
            return made

    def _open_session_or_raise(self, session_id: str) -> _Session:
        ssn = self._sessions.get(session_id)
        if ssn is None:
            raise StateError("NOT_FOUND", msgs.SESSION_OPEN_NOT_FOUND.format(id=session_id))
        if ssn.rec.state != SESSION_OPEN:
            raise StateError("INVALID_ARGUMENT", msgs.SESSION_NOT_OPEN.format(id=session_id))
        return ssn

    def _executor(self, executor_id: str) -> ExecutorRecord:
        rec = self._executors.get(executor_id)
        if rec is None:
            raise StateError("NOT_FOUND", msgs.EXECUTOR_NOT_FOUND.format(id=executor_id))
        return rec

    @staticmethod
    def _bad_state(rec: ExecutorRecord) -> StateError:
        name = msgs.EXECUTOR_STATE_NAMES.get(rec.state, str(rec.state))
        return StateError("INVALID_ARGUMENT", msgs.EXECUTOR_BAD_STATE.format(state=name))

    def binding(self, executor_id: str) -> tuple[AppRecord, SessionRecord]:
        """What the executor must install and enter: its application and session (with common_data).

        Raises:
            StateError: NOT_FOUND if the executor, its session or the session's application is
                gone, or the session is closed (upstream answers BindExecutor with nothing then).
        """
        with self._lock:
            rec = self._executor(executor_id)
            ssn = self._sessions.get(rec.session_id) if rec.session_id is not None else None
            if ssn is None or ssn.rec.state != SESSION_OPEN:
                raise StateError("NOT_FOUND", msgs.SESSION_OPEN_NOT_FOUND.format(id=rec.session_id))
            app = self._apps.get(ssn.rec.application)
            if app is None:
                raise StateError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=ssn.rec.application))
            return app.copy(), _copy_session(ssn, events=False)

    def set_executor_pid(self, executor_id: str, pid: int | None) -> None:
        """Record the OS process id of the executor's instance (``None`` when it has none)."""
        with self._lock:
            self._executor(executor_id).pid = pid
            self._bump()

    def bind_completed(self, executor_id: str, return_code: int, message: str | None) -> None:
        """Finish binding: 0 → Bound; anything else records a bind failure on the session.

        A failure adds event 1001, counts a retry (event 1002 once the limit is reached) and
        moves the executor to Unbinding with its session cleared. Pending tasks stay Pending.

        Raises:
            StateError: NOT_FOUND for an unknown executor or (on success) a vanished session,
                INVALID_ARGUMENT unless the executor is Binding.
        """
        with self._lock:
            rec = self._executor(executor_id)
            if rec.state != EXECUTOR_BINDING:
                raise self._bad_state(rec)
            ssn = self._sessions.get(rec.session_id) if rec.session_id is not None else None
            if return_code == 0:
                if ssn is None:
                    raise StateError("NOT_FOUND", msgs.SESSION_OPEN_NOT_FOUND.format(id=rec.session_id))
                rec.state = EXECUTOR_BOUND
                self._bump(ssn, watchers=False)
                return
            if ssn is not None:
                t = now_ms()
                text = msgs.EVENT_BIND_FAILED.format(
                    executor=rec.id, node=rec.node, rc=return_code, message=message or ""
                )
                ssn.rec.events.append(EventRecord(msgs.EVENT_BIND_FAILED_CODE, text, t))
                ssn.rec.retry_count += 1
                if ssn.rec.retry_count == self.retry_limit:
                    text = msgs.EVENT_RETRY_LIMIT.format(count=ssn.rec.retry_count, limit=self.retry_limit)
                    ssn.rec.events.append(EventRecord(msgs.EVENT_RETRY_LIMIT_CODE, text, t))
            rec.state = EXECUTOR_UNBINDING
            rec.session_id = None
            self._bump(ssn, watchers=False)

    def launch_task(self, executor_id: str, timeout: float) -> TaskRecord | None:
        """Long-poll for the lowest-id Pending task of the executor's session and mark it Running.

        Args:
            executor_id: the asking executor.
            timeout: seconds to wait for a task (pass the application's delay_release).

        Returns:
            The task (with its events), the task the executor already holds, or ``None`` when
            the executor is gone or unbinding, its session is gone or closed, nothing arrived in
            time, or the state stopped.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                rec = self._executors.get(executor_id)
                if rec is None or rec.state not in (EXECUTOR_BINDING, EXECUTOR_BOUND) or self._stopped:
                    return None
                ssn = self._sessions.get(rec.session_id) if rec.session_id is not None else None
                if ssn is None or ssn.rec.state != SESSION_OPEN:
                    return None
                if rec.task_id is not None:
                    held = ssn.tasks.get(rec.task_id)
                    return None if held is None else _copy_task(held, events=True)
                if ssn.pending_ids:
                    task = ssn.tasks[ssn.pending_ids.popleft()]
                    ssn.move(task, TASK_RUNNING)
                    task.events.append(EventRecord(TASK_RUNNING, msgs.EVENT_TASK_RUNNING, now_ms()))
                    rec.task_id = task.id
                    self._held_in[rec.id] = ssn.rec.id
                    self._bump(ssn, task=task.id)
                    return _copy_task(task, events=True)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                ssn.changed.wait(remaining)

    def complete_task(
        self, executor_id: str, return_code: int, output: bytes | None, message: str | None
    ) -> None:
        """Finish the executor's task: 0 → Succeed, anything else → Failed with ``message``.

        Raises:
            StateError: NOT_FOUND for an unknown executor; INVALID_ARGUMENT when it is not Bound
                or Unbinding, or holds no session or no task.
        """
        with self._lock:
            rec = self._executor(executor_id)
            if rec.state not in (EXECUTOR_BOUND, EXECUTOR_UNBINDING, EXECUTOR_BINDING):
                raise self._bad_state(rec)
            ssn = self._sessions.get(rec.session_id) if rec.session_id is not None else None
            if ssn is None:
                raise StateError("INVALID_ARGUMENT", msgs.EXECUTOR_NO_SESSION)
            task = ssn.tasks.get(rec.task_id) if rec.task_id is not None else None
            if task is None:
                raise StateError("INVALID_ARGUMENT", msgs.EXECUTOR_NO_TASK)
            t = now_ms()
            if return_code == 0:
                event = EventRecord(TASK_SUCCEED, msgs.EVENT_TASK_SUCCEED, t)
                ssn.move(task, TASK_SUCCEED)
            else:
                event = EventRecord(TASK_FAILED, message or msgs.EVENT_TASK_FAILED, t)
                ssn.move(task, TASK_FAILED)
            if output is not None:
                task.output = output
            task.completion_time = t
            task.events.append(event)
            rec.task_id = None
            self._held_in.pop(rec.id, None)
            self._bump(ssn, task=task.id)

    def unbind_executor(self, executor_id: str) -> None:
        """Bound or Binding → Unbinding; a second call clears the executor's session.

        Raises:
            StateError: NOT_FOUND for an unknown executor, INVALID_ARGUMENT in any other state.
        """
        with self._lock:
            rec = self._executor(executor_id)
            sid = rec.session_id
            if rec.state in (EXECUTOR_BOUND, EXECUTOR_BINDING):
                rec.state = EXECUTOR_UNBINDING
            elif rec.state == EXECUTOR_UNBINDING:
                rec.session_id = None
            else:
                raise self._bad_state(rec)
            # Wake the session's waiters: this executor's LaunchTask long-poll must return now.
            self._bump(self._sessions.get(sid) if sid is not None else None, watchers=False)

    def release_executor(self, executor_id: str) -> None:
        """Delete the executor record. Idempotent.

        A task the executor still holds goes back to Pending (upstream's node-loss retry: same id,
        no event), or to Cancelled if its session was closed meanwhile, so it is never stuck.
        """
        with self._lock:
            rec = self._executors.pop(executor_id, None)
            if rec is None:
                return
            held_in = self._held_in.pop(executor_id, None)
            ssn = self._sessions.get(held_in) if held_in is not None else None
            if ssn is not None and rec.task_id is not None:
                task = ssn.tasks.get(rec.task_id)
                if task is not None and task.state == TASK_RUNNING:
                    if ssn.rec.state == SESSION_OPEN:
                        ssn.move(task, TASK_PENDING)
                        # Back under its own id, so it runs before later tasks (upstream's retry).
                        ssn.pending_ids = collections.deque(sorted([*ssn.pending_ids, task.id]))
                    else:
                        ssn.move(task, TASK_CANCELLED)
                        task.completion_time = now_ms()
            self._bump(ssn)

    def executors(self) -> list[ExecutorRecord]:
        """Snapshot of every executor, in creation order."""
        with self._lock:
            return [replace(e) for e in self._executors.values()]

    # -- applications ---------------------------------------------------------------------------

    def register_application(self, name: str, spec: AppSpec | None) -> None:
        """RegisterApplication.

        Raises:
            StateError: INVALID_ARGUMENT for a missing spec, a bad schema or working_directory.
            ResultError: bad name or duplicate (upstream's Result{-1}).
        """
        spec = check_app_spec(spec)
        validate_app_name(name)
        with self._lock:
            if name in self._apps:
                raise ResultError("ALREADY_EXISTS", msgs.APP_EXISTS.format(name=name))
            self._apps[name] = self._app_from_spec(name, spec, shim=spec.shim, created=now_ms())
            self._bump()

    @staticmethod
    def _app_from_spec(name: str, spec: AppSpec, *, shim: int, created: int) -> AppRecord:
        schema = spec.schema or (None, None, None)
        return AppRecord(
            name=name,
            shim=shim,
            description=spec.description,
            labels=list(spec.labels),
            image=spec.image,
            command=spec.command,
            arguments=list(spec.arguments),
            environments=dict(spec.environments),
            working_directory=spec.working_directory or None,
            max_instances=DEFAULT_MAX_INSTANCES if spec.max_instances is None else spec.max_instances,
            delay_release=DEFAULT_DELAY_RELEASE if spec.delay_release is None else spec.delay_release,
            schema_input=schema[0],
            schema_output=schema[1],
            schema_common_data=schema[2],
            url=spec.url,
            installer=spec.installer,
            creation_time=created,
            has_schema=spec.schema is not None,
        )

    def _app_has_open_sessions(self, name: str) -> bool:
        return any(s.rec.application == name and s.rec.state == SESSION_OPEN for s in self._sessions.values())

    def update_application(self, name: str, spec: AppSpec | None) -> None:
        """UpdateApplication: replaces everything but the shim and creation time.

        Raises:
            StateError: as :meth:`register_application` for the pre-checks.
            ResultError: bad name, unknown application, or open sessions use it.
        """
        spec = check_app_spec(spec)
        validate_app_name(name)
        with self._lock:
            old = self._apps.get(name)
            if old is None:
                raise ResultError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=name))
            if self._app_has_open_sessions(name):
                raise ResultError("INVALID_ARGUMENT", msgs.APP_UPDATE_OPEN.format(name=name))
            new = self._app_from_spec(name, spec, shim=old.shim, created=old.creation_time)
            new.version = old.version + 1
            self._apps[name] = new
            self._bump()

    def unregister_application(self, name: str) -> None:
        """UnregisterApplication: also forgets every (closed) session of the application.

        Raises:
            ResultError: open sessions use it, or it is unknown.
        """
        with self._lock:
            if self._app_has_open_sessions(name):
                raise ResultError("INVALID_ARGUMENT", msgs.APP_UNREGISTER_OPEN.format(name=name))
            if self._apps.pop(name, None) is None:
                raise ResultError("NOT_FOUND", msgs.APP_UNREGISTER_UNKNOWN.format(name=name))
            for sid in [sid for sid, s in self._sessions.items() if s.rec.application == name]:
                gone = self._sessions.pop(sid)
                gone.changed.notify_all()
                gone.notify_watchers()  # their watchers end silently
            self._bump()

    def get_application(self, name: str) -> AppRecord:
        """GetApplication.

        Raises:
            StateError: NOT_FOUND for an unknown name.
        """
        with self._lock:
            app = self._apps.get(name)
            if app is None:
                raise StateError("NOT_FOUND", msgs.APP_NOT_FOUND.format(name=name))
            return app.copy()

    def list_applications(self) -> list[AppRecord]:
        """ListApplication: every application, in registration order."""
        with self._lock:
            return [a.copy() for a in self._apps.values()]

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
