"""Stateful property test: the fake SM state against a tiny reference model of upstream's rules.

Hypothesis drives random sequences of client calls (create/open/close/delete sessions, create
tasks) and executor calls (bind, launch, complete, unbind, release); after every step the
counters and task states the state reports must equal the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from flamepy_fake._control._state import ClusterState, SessionSpec, StateError

PENDING, RUNNING, SUCCEED, FAILED, CANCELLED = range(5)
SESSION_IDS = st.sampled_from(["a", "b", "c"])


@dataclass
class _Ssn:
    open: bool = True
    tasks: dict[int, int] = field(default_factory=dict)  # id -> state


@dataclass
class _Exe:
    sid: str
    task: int | None = None
    task_sid: str = ""
    unbinding: bool = False


class StateMachine(RuleBasedStateMachine):
    executors = Bundle("executors")

    def __init__(self) -> None:
        super().__init__()
        self.state = ClusterState()
        self.sessions: dict[str, _Ssn] = {}
        self.exes: dict[str, _Exe] = {}

    def teardown(self) -> None:
        self.state.stop()

    def _code(self, call: object) -> str | None:
        try:
            call()  # type: ignore[operator]
        except StateError as exc:
            return exc.code
        return None

    @rule(sid=SESSION_IDS)
    def create_session(self, sid: str) -> None:
        code = self._code(lambda: self.state.create_session(sid, SessionSpec(application="flmping")))
        if sid in self.sessions:
            assert code == "ALREADY_EXISTS"
        else:
            assert code is None
            self.sessions[sid] = _Ssn()

    @rule(sid=SESSION_IDS, with_spec=st.booleans())
    def open_session(self, sid: str, with_spec: bool) -> None:
        spec = SessionSpec(application="flmping") if with_spec else None
        code = self._code(lambda: self.state.open_session(sid, spec))
        ssn = self.sessions.get(sid)
        if ssn is None:
            assert code == (None if with_spec else "NOT_FOUND")
            if with_spec:
                self.sessions[sid] = _Ssn()
        else:
            assert code == (None if ssn.open else "INVALID_ARGUMENT")

    @rule(sid=SESSION_IDS)
    def close_session(self, sid: str) -> None:
        code = self._code(lambda: self.state.close_session(sid))
        ssn = self.sessions.get(sid)
        if ssn is None:
            assert code == "NOT_FOUND"
        elif RUNNING in ssn.tasks.values():
            assert code == "INTERNAL"
        else:
            assert code is None
            ssn.open = False
            for tid, state in ssn.tasks.items():
                if state == PENDING:
                    ssn.tasks[tid] = CANCELLED

    @rule(sid=SESSION_IDS)
    def delete_session(self, sid: str) -> None:
        code = self._code(lambda: self.state.delete_session(sid))
        ssn = self.sessions.get(sid)
        if ssn is None:
            assert code == "NOT_FOUND"
        elif ssn.open or any(s in (PENDING, RUNNING) for s in ssn.tasks.values()):
            assert code == "INTERNAL"
        else:
            assert code is None
            del self.sessions[sid]
            for exe in self.exes.values():
                if exe.sid == sid:
                    exe.sid = ""  # the session is gone for this executor

    @rule(sid=SESSION_IDS)
    def create_task(self, sid: str) -> None:
        code = self._code(lambda: self.state.create_task(sid, b"x"))
        ssn = self.sessions.get(sid)
        if ssn is None:
            assert code == "NOT_FOUND"
        elif not ssn.open:
            assert code == "INVALID_ARGUMENT"
        else:
            assert code is None
            ssn.tasks[len(ssn.tasks) + 1] = PENDING

    @rule(target=executors, sid=SESSION_IDS)
    def bind(self, sid: str) -> str:
        ssn = self.sessions.get(sid)
        try:
            rec = self.state.create_executor(sid, executors="model")
        except StateError as exc:
            assert exc.code == ("NOT_FOUND" if ssn is None else "INVALID_ARGUMENT")
            return ""
        assert ssn is not None and ssn.open
        self.state.bind_completed(rec.id, 0, None)
        self.exes[rec.id] = _Exe(sid)
        return rec.id

    @rule(eid=executors)
    def launch(self, eid: str) -> None:
        task = self.state.launch_task(eid, 0)
        exe = self.exes.get(eid)
        ssn = self.sessions.get(exe.sid) if exe is not None else None
        if exe is None or exe.unbinding or ssn is None or not ssn.open:
            assert task is None
            return
        if exe.task is not None:
            assert task is not None and task.id == exe.task
            return
        pending = sorted(t for t, s in ssn.tasks.items() if s == PENDING)
        if not pending:
            assert task is None
            return
        assert task is not None and task.id == pending[0]
        ssn.tasks[task.id] = RUNNING
        exe.task, exe.task_sid = task.id, exe.sid

    @rule(eid=executors, rc=st.sampled_from([0, 1]))
    def complete(self, eid: str, rc: int) -> None:
        code = self._code(lambda: self.state.complete_task(eid, rc, None, None))
        exe = self.exes.get(eid)
        ssn = self.sessions.get(exe.sid) if exe is not None else None
        if exe is None:
            assert code == "NOT_FOUND"
        elif ssn is None or exe.task is None:
            assert code == "INVALID_ARGUMENT"
        else:
            assert code is None
            ssn.tasks[exe.task] = SUCCEED if rc == 0 else FAILED
            exe.task = None

    @rule(eid=executors)
    def unbind(self, eid: str) -> None:
        code = self._code(lambda: self.state.unbind_executor(eid))
        exe = self.exes.get(eid)
        if exe is None:
            assert code == "NOT_FOUND"
        elif exe.unbinding:
            assert code is None
            exe.sid = ""  # a second unbind clears the session
        else:
            assert code is None
            exe.unbinding = True

    @rule(eid=consumes(executors))
    def release(self, eid: str) -> None:
        self.state.release_executor(eid)
        exe = self.exes.pop(eid, None)
        ssn = self.sessions.get(exe.task_sid) if exe is not None else None
        if exe is not None and ssn is not None and exe.task is not None:
            ssn.tasks[exe.task] = PENDING if ssn.open else CANCELLED

    @invariant()
    def matches_the_model(self) -> None:
        assert {s.id for s in self.state.list_sessions()} == set(self.sessions)
        for sid, ssn in self.sessions.items():
            rec = self.state.get_session(sid)
            assert rec.state == (0 if ssn.open else 1)
            counts = [list(ssn.tasks.values()).count(s) for s in range(5)]
            assert [rec.pending, rec.running, rec.succeed, rec.failed, rec.cancelled] == counts
            assert {t.id: t.state for t in self.state.list_tasks(sid)} == ssn.tasks


StateMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=30, deadline=None)
TestStateModel = StateMachine.TestCase
