"""TaskWatcher: bounded streams, the sweep for tasks outside the window, close, unknown tasks."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from support import eventually

from flamepy_fake import FakeCluster
from flamepy_runner import NotFoundError, Runner, UsageError, _wire
from flamepy_runner._proto import pb
from flamepy_runner._tasks import TaskWatcher

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SUCCEED = pb.TaskState.Value("Succeed")


def double(x: int) -> int:
    return 2 * x


def gated(path: str) -> int:
    import os

    while path and not os.path.exists(path):
        time.sleep(0.01)
    return 1


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    project = tmp_path / "project"
    project.mkdir()
    with (
        FakeCluster(work_dir=tmp_path) as cluster,
        Runner("tw", config=cluster.config, project_dir=project) as r,
    ):
        yield r


class Results:
    """Collects on_done calls; ``wait_for(n)`` waits (bounded) until n have arrived."""

    def __init__(self) -> None:
        self.done: dict[str, tuple[Any, BaseException | None]] = {}
        self._cond = threading.Condition()

    def __call__(self, task_id: str) -> Any:
        def on_done(task: Any, error: BaseException | None) -> None:
            with self._cond:
                self.done[task_id] = (task, error)
                self._cond.notify_all()

        return on_done

    def wait_for(self, count: int, timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.done) >= count, timeout), self.done


def _task(runner: Runner, session_id: str, *args: Any) -> str:
    data = _wire.dumps(_wire.RunnerRequest(method=None, args=args, kwargs=None))
    return str(runner.frontend.create_task(session_id, data).metadata.id)


def test_streams_stay_within_the_window(runner: Runner) -> None:
    svc = runner.service(double)
    watcher = TaskWatcher(runner.frontend, window=2)
    results = Results()
    try:
        ids = [_task(runner, svc.session_id, i) for i in range(30)]
        for tid in ids:
            watcher.track(svc.session_id, tid, results(tid))
        results.wait_for(30)
    finally:
        watcher.close()
    assert watcher.peak_streams == 2
    assert {tid: (t.status.state, e) for tid, (t, e) in results.done.items()} == {
        tid: (SUCCEED, None) for tid in ids
    }


def test_sweep_finds_tasks_that_finish_outside_the_window(runner: Runner, tmp_path: Path) -> None:
    svc = runner.service(gated, autoscale=False, warmup=2)
    gate = tmp_path / "gate"
    watcher = TaskWatcher(runner.frontend, window=1, sweep_interval=0.2)
    results = Results()
    try:
        blocked = _task(runner, svc.session_id, str(gate))
        quick = [_task(runner, svc.session_id, "") for _ in range(4)]
        for tid in [blocked, *quick]:
            watcher.track(svc.session_id, tid, results(tid))
        # The one stream watches the blocked task; only the sweep can see the quick ones end.
        results.wait_for(4)
        assert sorted(results.done) == sorted(quick)
        assert all(t.status.state == SUCCEED for t, _ in results.done.values())
        gate.touch()
        results.wait_for(5)
    finally:
        watcher.close()
    assert results.done[blocked][0].status.state == SUCCEED


def test_close_fails_what_is_still_tracked(runner: Runner, tmp_path: Path) -> None:
    svc = runner.service(gated)
    watcher = TaskWatcher(runner.frontend)
    results = Results()
    tid = _task(runner, svc.session_id, str(tmp_path / "gate"))
    watcher.track(svc.session_id, tid, results(tid))
    # Once the task runs (held by its gate), the watcher has nothing to report yet.
    running = pb.TaskState.Value("Running")
    eventually(
        lambda: runner.frontend.get_task(svc.session_id, tid).status.state == running, "the task to run"
    )
    assert results.done == {}
    watcher.close(UsageError("stopped by the test"))
    assert [(t, str(e)) for t, e in results.done.values()] == [(None, "stopped by the test")]
    with pytest.raises(UsageError) as err:
        watcher.track(svc.session_id, tid, results(tid))
    assert str(err.value) == f"cannot watch task {tid} of session '{svc.session_id}': the watcher is closed"
    watcher.close()  # idempotent
    (tmp_path / "gate").touch()


def test_unknown_task_is_a_clear_error(runner: Runner) -> None:
    svc = runner.service(double)
    watcher = TaskWatcher(runner.frontend)
    results = Results()
    try:
        watcher.track(svc.session_id, "999", results("999"))
        watcher.track("ghost", "1", results("1"))
        results.wait_for(2)
    finally:
        watcher.close()
    errors = {tid: (task, type(e), str(e)) for tid, (task, e) in results.done.items()}
    assert errors == {
        "999": (
            None,
            NotFoundError,
            f"task 999 of session '{svc.session_id}' does not exist (any more): "
            "the session was deleted or never had this task",
        ),
        "1": (
            None,
            NotFoundError,
            "task 1 of session 'ghost' does not exist (any more): "
            "the session was deleted or never had this task",
        ),
    }


def test_window_must_be_positive(runner: Runner) -> None:
    with pytest.raises(UsageError) as err:
        TaskWatcher(runner.frontend, window=0)
    assert str(err.value) == "window must be at least 1, got 0"


def test_a_closed_watchers_loop_drops_late_grpc_completions(runner: Runner) -> None:
    # grpc.aio has one poller per process; whichever loop reads it hands each completion to its
    # call's loop with call_soon_threadsafe. A call this watcher cancelled at close() can complete
    # after its loop closed: another Runner's loop then hands it over, and the stock loop's
    # RuntimeError("Event loop is closed") was logged there as an asyncio error (CI, stop 25).
    watcher = TaskWatcher(runner.frontend)
    ran: list[str] = []
    handed = threading.Event()
    watcher._loop.call_soon_threadsafe(lambda: (ran.append("open"), handed.set()))
    assert handed.wait(10)
    watcher.close()
    assert watcher._loop.is_closed()
    outcome: list[object] = []

    def hand_over() -> None:
        try:
            outcome.append(watcher._loop.call_soon_threadsafe(ran.append, "closed").cancelled())
        except RuntimeError as exc:  # pragma: no cover - the bug
            outcome.append(exc)

    other = threading.Thread(target=hand_over)
    other.start()
    other.join(10)
    assert outcome == [True]
    assert ran == ["open"]


def test_a_stalled_session_is_listed_only_once_a_task_finished_unseen(tmp_path: Path) -> None:
    # On a cluster whose instances take seconds to start, every session stalls: listing all of
    # its tasks each second (ListTask streams every task) loads the session manager for nothing.
    # The session's check (GetSession) says how many tasks ended; only more than the watcher saw
    # end means a queued task finished outside the window.
    project = tmp_path / "project"
    project.mkdir()
    gate = tmp_path / "gate"
    with (
        FakeCluster(work_dir=tmp_path) as cluster,
        Runner("tw-stall", config=cluster.config, project_dir=project) as runner,
    ):
        svc = runner.service(gated, autoscale=False, warmup=1)  # one instance: tasks run in order
        watcher = TaskWatcher(runner.frontend, window=1, sweep_interval=0.05)
        results = Results()
        try:
            checks = len(cluster.calls(method="GetSession"))
            ids = [_task(runner, svc.session_id, str(gate)) for _ in range(3)]
            for tid in ids:
                watcher.track(svc.session_id, tid, results(tid))
            eventually(lambda: len(cluster.calls(method="GetSession")) >= checks + 3, "three session checks")
            assert cluster.calls(method="ListTask") == []  # nothing ended: nothing to find
            assert results.done == {}
            gate.touch()
            results.wait_for(3)
        finally:
            watcher.close()
    assert [results.done[tid][0].status.state for tid in ids] == [SUCCEED] * 3


def test_a_loop_that_ended_on_its_own_refuses_work_at_once(runner: Runner) -> None:
    # Dropping late completions is for a loop close() shut down; one whose thread ended any other
    # way must still refuse at once (else a caller waits for an answer that never comes).
    watcher = TaskWatcher(runner.frontend)
    watcher._loop.call_soon_threadsafe(watcher._loop.stop)
    watcher._thread.join(10)
    assert not watcher._thread.is_alive() and watcher._loop.is_closed()
    with pytest.raises(RuntimeError) as err:
        watcher.track("s", "1", lambda task, error: None)
    assert str(err.value) == "Event loop is closed"
    watcher.close()  # returns: nothing to shut down
    assert not watcher._loop.closing
