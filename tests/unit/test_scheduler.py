"""Scheduling decisions, one cycle at a time, against a real ClusterState."""

from __future__ import annotations

import pytest
from support import eventually

from flamepy_fake._control._scheduler import Scheduler
from flamepy_fake._control._state import AppSpec, ClusterState, SessionSpec
from flamepy_runner._proto import pb


class Recorder:
    """Stands in for the executor manager: records spawns and can play the executor's part.

    The scheduler's back-off timers run on ``self.now`` (advance it by hand), so no test
    depends on how fast the machine is.
    """

    def __init__(
        self,
        state: ClusterState,
        max_executors: int | None = 10,
        backoff: float = 0.2,
        policies: tuple[str, ...] = ("priority", "gang"),
    ) -> None:
        self.state = state
        self.spawned: list[tuple[str, str]] = []
        self.now = 1000.0
        self.scheduler = Scheduler(
            state,
            spawn=lambda d, eid: self.spawned.append((d.session_id, eid)),
            live=lambda: len(self.state.executors()),
            executors_for=lambda d: "thread",
            max_executors=max_executors,
            policies=policies,
            retry_backoff=backoff,
            clock=lambda: self.now,
        )

    def cycle(self) -> list[str]:
        before = len(self.spawned)
        self.scheduler.schedule_once()
        return [sid for sid, _ in self.spawned[before:]]

    def bind_all(self) -> None:
        for rec in self.state.executors():
            if rec.state == pb.ExecutorBinding:
                self.state.bind_completed(rec.id, 0, None)


@pytest.fixture
def state() -> ClusterState:
    st = ClusterState(retry_limit=3, capacity=(6, 70 << 30, 0))
    st.register_application("app", AppSpec(command="x"))
    st.register_application("wasm", AppSpec(shim=pb.Wasm, command="x"))
    return st


def test_one_instance_per_pending_task(state: ClusterState) -> None:
    r = Recorder(state)
    state.create_session("s", SessionSpec(application="app"))
    assert r.cycle() == []
    for _ in range(3):
        state.create_task("s", b"x")
    assert r.cycle() == ["s", "s", "s"]
    assert r.cycle() == []  # holding executors count, nothing more to do


def test_min_instances_warm_and_max_instances_cap(state: ClusterState) -> None:
    r = Recorder(state)
    state.create_session("warm", SessionSpec(application="app", min_instances=2))
    state.create_session("capped", SessionSpec(application="app", max_instances=1))
    for _ in range(4):
        state.create_task("capped", b"x")
    assert sorted(r.cycle()) == ["capped", "warm", "warm"]


def test_cluster_cap_serves_sessions_in_order(state: ClusterState) -> None:
    r = Recorder(state, max_executors=2)
    for sid in ("first", "second"):
        state.create_session(sid, SessionSpec(application="app"))
        state.create_task(sid, b"x")
        state.create_task(sid, b"x")
    # One gang per session per planning round, as v0.6.0's cycle: the cap is shared in turn.
    assert r.cycle() == ["first", "second"]
    assert r.cycle() == []


def test_high_priority_first(state: ClusterState) -> None:
    r = Recorder(state, max_executors=1)
    state.create_session("low", SessionSpec(application="app"))
    state.create_session("high", SessionSpec(application="app", priority=5))
    state.create_task("low", b"x")
    state.create_task("high", b"x")
    assert r.cycle() == ["high"]


def test_wasm_sessions_are_skipped(state: ClusterState) -> None:
    r = Recorder(state)
    state.create_session("w", SessionSpec(application="wasm", min_instances=1))
    state.create_task("w", b"x")
    assert r.cycle() == []


def test_idle_executors_are_reclaimed_for_waiting_sessions(state: ClusterState) -> None:
    r = Recorder(state, max_executors=1)
    state.create_session("a", SessionSpec(application="app"))
    state.create_task("a", b"x")
    assert r.cycle() == ["a"]
    r.bind_all()
    eid = r.spawned[0][1]
    task = state.launch_task(eid, 0)
    assert task is not None
    state.complete_task(eid, 0, None, None)
    state.create_session("b", SessionSpec(application="app"))
    state.create_task("b", b"x")
    assert r.cycle() == []  # at the cap: a's idle executor is asked to unbind instead
    assert state.executors()[0].state == pb.ExecutorUnbinding
    state.release_executor(eid)
    assert r.cycle() == ["b"]


def test_bind_failures_back_off_with_one_probe(state: ClusterState) -> None:
    r = Recorder(state, backoff=0.2)
    state.create_session("s", SessionSpec(application="app"))
    for _ in range(3):
        state.create_task("s", b"x")
    spawned = r.cycle()
    assert len(spawned) == 3
    for _, eid in r.spawned:
        r.scheduler.bind_finished("s", ok=False)
        state.bind_completed(eid, 11, "nope")
        state.release_executor(eid)
    # retry_limit is 3: the state stops offering the session
    assert [e.code for e in state.get_session("s").events] == [1001, 1001, 1001, 1002]
    assert r.cycle() == []


def test_probe_after_backoff(state: ClusterState) -> None:
    r = Recorder(state, backoff=0.1)
    state.create_session("s", SessionSpec(application="app"))
    state.create_task("s", b"x")
    state.create_task("s", b"x")
    assert len(r.cycle()) == 2
    first = r.spawned[0][1]
    r.scheduler.bind_finished("s", ok=False)
    state.bind_completed(first, 11, "nope")
    state.release_executor(first)
    assert r.cycle() == []  # backing off
    r.now += 0.09
    assert r.cycle() == []  # still backing off
    r.now += 0.02
    assert r.cycle() == ["s"]  # a single probe ...
    assert r.cycle() == []  # ... and no more while it binds
    r.scheduler.bind_finished("s", ok=True)
    state.create_task("s", b"x")
    state.create_task("s", b"x")
    assert r.cycle() == ["s", "s"]  # success lifts the restriction: back to pending + running


def test_rejects_bad_cap(state: ClusterState) -> None:
    def scheduler(cap: int) -> Scheduler:
        return Scheduler(
            state, spawn=lambda d, e: None, live=lambda: 0, executors_for=lambda d: "x", max_executors=cap
        )

    with pytest.raises(ValueError) as err:
        scheduler(0)
    assert str(err.value) == "max_executors must be at least 1, got 0"
    scheduler(1)  # the boundary's other side


def test_thread_starts_and_stops(state: ClusterState) -> None:
    r = Recorder(state)
    r.scheduler.start()
    state.create_session("s", SessionSpec(application="app"))
    state.create_task("s", b"x")
    eventually(lambda: r.spawned, "the scheduler to spawn", timeout=10)
    r.scheduler.stop()
    assert [sid for sid, _ in r.spawned] == ["s"]


def test_abandoned_probe_frees_the_slot(state: ClusterState) -> None:
    r = Recorder(state, backoff=0.05)
    state.create_session("s", SessionSpec(application="app"))
    state.create_task("s", b"x")
    assert r.cycle() == ["s"]
    first = r.spawned[0][1]
    r.scheduler.bind_finished("s", ok=False)
    state.bind_completed(first, 11, "nope")
    state.release_executor(first)
    r.now += 0.06
    assert r.cycle() == ["s"]  # the probe
    probe = r.spawned[-1][1]
    state.release_executor(probe)  # it ended before binding (say, the cluster was stopping)
    r.scheduler.bind_finished("s", ok=None)
    assert r.cycle() == ["s"]  # not blocked forever by the lost probe


# -- v0.6.0 gangs ----------------------------------------------------------------------------------


def test_a_batch_session_waits_for_a_whole_gang(state: ClusterState) -> None:
    r = Recorder(state)
    state.create_session("b", SessionSpec(application="app", batch_size=2))
    state.create_task("b", b"x")
    assert r.cycle() == []  # one task never fills a batch of 2: it stays Pending
    assert r.cycle() == []
    assert state.get_task("b", "1").state == pb.Pending
    state.create_task("b", b"x")
    assert r.cycle() == ["b", "b"]  # the whole gang at once
    state.create_task("b", b"x")
    assert r.cycle() == []  # 3 tasks round down to one batch: the third waits for a free executor


def test_a_gang_member_leaving_alone_is_topped_up(state: ClusterState) -> None:
    r = Recorder(state)
    state.create_session("b", SessionSpec(application="app", batch_size=2, min_instances=2))
    assert r.cycle() == ["b", "b"]  # min_instances >= B keeps a gang warm without tasks
    r.bind_all()
    gone = r.spawned[0][1]
    state.unbind_executor(gone)
    state.unbind_executor(gone)  # its session cleared: it no longer holds the session
    assert r.cycle() == ["b"]  # top-up to the next multiple of B


def test_the_cap_never_splits_a_gang(state: ClusterState) -> None:
    r = Recorder(state, max_executors=3)
    state.create_session("b", SessionSpec(application="app", batch_size=2))
    for _ in range(4):
        state.create_task("b", b"x")
    assert r.cycle() == ["b", "b"]  # a second gang of 2 would pass the cap of 3
    assert r.cycle() == []


def test_no_cap_by_default(state: ClusterState) -> None:
    r = Recorder(state, max_executors=None)
    state.create_session("s", SessionSpec(application="app"))
    for _ in range(12):
        state.create_task("s", b"x")
    assert r.cycle() == ["s"] * 12  # v0.6.0 never reads limits.max_executors


def test_policies_with_drf_start_a_lone_task(state: ClusterState) -> None:
    r = Recorder(state, policies=("priority", "drf", "gang"))
    state.create_session("b", SessionSpec(application="app", batch_size=2))
    state.create_task("b", b"x")
    assert r.cycle() == ["b", "b"]


def test_policies_without_gang_are_refused(state: ClusterState) -> None:
    with pytest.raises(ValueError, match=r"^policies \['priority'\] lack 'gang': "):
        Recorder(state, policies=("priority",))
