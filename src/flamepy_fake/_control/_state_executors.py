"""The state model's executor-facing part: demand, executors, bindings, task launches."""

from __future__ import annotations

import collections
import time
import uuid
from dataclasses import replace

from . import _msgs as msgs
from ._records import (
    EXECUTOR_BINDING,
    EXECUTOR_BOUND,
    EXECUTOR_UNBINDING,
    SESSION_OPEN,
    TASK_CANCELLED,
    TASK_FAILED,
    TASK_PENDING,
    TASK_RUNNING,
    TASK_SUCCEED,
    AppRecord,
    EventRecord,
    ExecutorRecord,
    SessionDemand,
    SessionRecord,
    StateError,
    TaskRecord,
    now_ms,
)
from ._state_core import StateCore, _copy_session, _copy_task, _Session


class ExecutorSide(StateCore):
    """The state model's executor-facing part: demand, executors, bindings, task launches."""

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

    def create_executor(self, session_id: str, *, executors: str) -> ExecutorRecord:
        """Create an executor already assigned to ``session_id``, in state Binding.

        Raises:
            StateError: NOT_FOUND if the session is unknown, INVALID_ARGUMENT if it is closed.
        """
        return self.create_executors(session_id, 1, executors=executors)[0]

    def create_executors(self, session_id: str, count: int, *, executors: str) -> list[ExecutorRecord]:
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
                    executors=executors,
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
