"""What the Runner does under each injected fault: a typed error with its exact text, or a
documented retry, and never a hang (every wait is bounded).

Run on every setup of ``tests/runner/conftest.py``, so instance faults hit a thread instance
(``builtin-thread``) and process instances (our worker and the stock runpy).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest
from support import eventually

from flamepy_fake import CallTarget, FakeCluster, TaskState
from flamepy_runner import (
    DeadlineExceededError,
    FlameConfig,
    InternalError,
    InvalidStateError,
    RemoteError,
    Runner,
    UnavailableError,
)

WAIT = 60  # seconds; a bound on every wait, never reached when things work

# Functions defined here travel by value, as those of a script's __main__ do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x * x


def wait_for_gate(path: str) -> str:
    import os
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return "open"


# -- Frontend calls -----------------------------------------------------------------------------


def test_a_failed_create_task_fails_that_call_only(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(square)
    assert svc(2).get(timeout=WAIT) == 4
    with cluster.faults.fail("CreateTask", "UNAVAILABLE", "boom", times=2) as fault:
        for _ in range(2):
            with pytest.raises(UnavailableError) as err:
                svc(3).get(timeout=WAIT)
            assert str(err.value) == (
                f"cannot create a task in session '{svc.session_id}': "
                f"session manager {cluster.endpoint} is unreachable: boom"
            )
        assert svc(3).get(timeout=WAIT) == 9  # the third call passes
    assert fault.hits == 2
    failed = cluster.calls(method="CreateTask", status="UNAVAILABLE")
    assert [(c.session_id, c.service) for c in failed] == [(svc.session_id, "flame.v1.Frontend")] * 2


def test_an_internal_error_is_an_internal_error(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(square)
    cluster.faults.fail("CreateTask", "INTERNAL", "disk on fire")
    with pytest.raises(InternalError) as err:
        svc(3).get(timeout=WAIT)
    assert str(err.value) == f"cannot create a task in session '{svc.session_id}': disk on fire"


def test_a_failed_get_application_fails_the_runner_start(
    make_runner: Callable[..., Runner], cluster: FakeCluster
) -> None:
    cluster.faults.fail("GetApplication", "UNAVAILABLE", "boom", when=lambda t: t.app == "fa-app")
    with pytest.raises(UnavailableError) as err:
        make_runner("fa-app")
    assert str(err.value) == (
        f"cannot get application 'fa-app': session manager {cluster.endpoint} is unreachable: boom"
    )
    assert [a.name for a in cluster.applications()] == ["flmexec", "flmping", "flmrun"]  # nothing left


def test_a_delay_past_the_deadline_is_a_deadline_error(
    make_runner: Callable[..., Runner], cluster: FakeCluster
) -> None:
    config = FlameConfig(endpoint=cluster.endpoint, cache_endpoint=cluster.cache_endpoint, timeout=0.5)
    cluster.faults.delay("GetApplication", 2.0)
    with pytest.raises(DeadlineExceededError) as err:
        make_runner("slow-app", config=config)
    assert str(err.value) == (
        f"cannot get application 'slow-app': no answer from session manager {cluster.endpoint} "
        "in time: Deadline Exceeded"
    )


def test_a_short_delay_only_slows_the_call(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(square)
    with cluster.faults.delay("CreateTask", 0.2, times=None):
        assert svc(5).get(timeout=WAIT) == 25


# -- WatchTask ----------------------------------------------------------------------------------


def test_watch_cut_three_times_is_retried(runner: Runner, cluster: FakeCluster, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    svc = runner.service(wait_for_gate)
    cluster.faults.cut_watch(times=3)
    future = svc(str(gate))
    eventually(
        lambda: len(cluster.calls(method="WatchTask", status="UNAVAILABLE")) == 3,
        "3 cut watches",
        timeout=WAIT,
    )
    gate.touch()
    assert future.get(timeout=WAIT) == "open"


def test_watch_cut_a_fourth_time_fails_the_future(
    runner: Runner, cluster: FakeCluster, tmp_path: Path
) -> None:
    svc = runner.service(wait_for_gate)
    cluster.faults.cut_watch("UNAVAILABLE", "link down", times=4)
    future = svc(str(tmp_path / "gate"))
    with pytest.raises(UnavailableError) as err:
        future.get(timeout=WAIT)
    assert str(err.value) == (
        f"cannot watch task {future.task_id} of session '{svc.session_id}': "
        f"session manager {cluster.endpoint} is unreachable: link down"
    )
    (tmp_path / "gate").touch()  # let the task end, so the session closes


def test_watch_ended_without_a_terminal_state_is_watched_again(
    runner: Runner, cluster: FakeCluster, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    svc = runner.service(wait_for_gate)
    fault = cluster.faults.cut_watch(status=None, times=None)  # every watch ends at once
    future = svc(str(gate))
    eventually(lambda: fault.hits >= 5, "5 clean cuts", timeout=WAIT)
    fault.remove()
    gate.touch()
    assert future.get(timeout=WAIT) == "open"
    assert len(cluster.calls(method="GetTask", where=lambda c: c.session_id == svc.session_id)) >= 5


# -- instances ----------------------------------------------------------------------------------


def test_an_instance_killed_mid_task_fails_that_task(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(square)
    assert svc(2).get(timeout=WAIT) == 4
    cluster.faults.kill_instance("task", when=lambda t: t.session_id == svc.session_id)
    future = svc(3)
    with pytest.raises(RemoteError) as err:
        future.get(timeout=WAIT)
    (eid,) = cluster.executors_of(svc.session_id)
    prefix = f"task {future.task_id} of session '{svc.session_id}' (application '{runner.name}') failed: "
    if cluster.options["executors"] == "thread":  # a thread instance
        killed = f"thread instance of executor {eid} was killed (injected fault) while running task 2"
        assert str(err.value) == prefix + killed
    else:
        killed = r"instance process \d+ was killed by signal 9 \(SIGKILL\) while running task 2"
        assert re.fullmatch(re.escape(prefix) + killed, str(err.value)), str(err.value)
    assert [t.state for t in cluster.tasks(svc.session_id)] == [TaskState.SUCCEED, TaskState.FAILED]
    assert svc(4).get(timeout=WAIT) == 16  # a fresh instance takes the next task
    assert len(cluster.executors_of(svc.session_id)) == 2


def test_an_instance_killed_between_tasks_is_replaced(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(square)
    assert svc(2).get(timeout=WAIT) == 4
    cluster.faults.kill_instance("idle", when=lambda t: t.session_id == svc.session_id)
    assert svc(3).get(timeout=WAIT) == 9  # the task waits for a fresh instance
    assert len(cluster.executors_of(svc.session_id)) == 2


def test_on_session_enter_failing_once_is_retried(runner: Runner, cluster: FakeCluster) -> None:
    cluster.faults.fail_session_enter(times=1)
    svc = runner.service(square)
    assert svc(6).get(timeout=WAIT) == 36
    (event,) = cluster.session_events(svc.session_id)
    assert event.code == 1001 and event.message.endswith(
        "failed to bind session with return_code <12>: on_session_enter failed: injected fault"
    )


def test_on_session_enter_failing_always_fails_the_futures(runner: Runner, cluster: FakeCluster) -> None:
    cluster.faults.fail_session_enter("no GPU", times=None)
    svc = runner.service(square)
    with pytest.raises(InvalidStateError) as err:
        svc(6).get(timeout=WAIT)
    expected = _retry_limit(runner, svc.session_id, 12, "on_session_enter failed: no GPU")
    assert re.fullmatch(expected, str(err.value)), str(err.value)
    svc.close()


@pytest.mark.parametrize(
    ("stage", "text"),
    [("download", "cannot download the package: 404"), ("install", "cannot install the package: 404")],
)
def test_a_failing_package_download_or_install_fails_the_futures(
    runner: Runner, cluster: FakeCluster, stage: str, text: str
) -> None:
    cluster.faults.fail_install(stage, "404", times=None, when=lambda t: t.app == runner.name)
    svc = runner.service(square)
    with pytest.raises(InvalidStateError) as err:
        svc(6).get(timeout=WAIT)
    detail = f"application installation failed: {text}"
    assert re.fullmatch(_retry_limit(runner, svc.session_id, 10, detail), str(err.value)), str(err.value)
    svc.close()


# -- the object cache ---------------------------------------------------------------------------


def test_a_failed_upload_fails_put_object(runner: Runner, cluster: FakeCluster) -> None:
    cluster.faults.fail("DoPut", "UNAVAILABLE", "boom", when=lambda t: (t.key or "").startswith(runner.name))
    with pytest.raises(UnavailableError) as err:
        runner.put_object({"a": 1})
    assert str(err.value) == f"object cache {cluster.cache_endpoint}: unreachable: boom"
    assert runner.put_object({"a": 1}).key.startswith(f"{runner.name}/shared/")  # one call only


def test_a_failed_download_fails_get_once(runner: Runner, cluster: FakeCluster) -> None:
    future = runner.service(square)(7)
    future.wait(timeout=WAIT)
    key = future.ref().key
    cluster.faults.fail("DoGet", "UNAVAILABLE", "boom", when=lambda t: t.key == key)
    with pytest.raises(UnavailableError) as err:
        future.get(timeout=WAIT)
    assert str(err.value) == f"object cache {cluster.cache_endpoint}: unreachable: boom"
    assert future.get(timeout=WAIT) == 49


def test_the_predicate_sees_the_call(runner: Runner, cluster: FakeCluster) -> None:
    seen: list[CallTarget] = []
    cluster.faults.fail("CreateTask", when=lambda t: seen.append(t) or False)
    svc = runner.service(square)
    assert svc(1).get(timeout=WAIT) == 1
    assert seen == [CallTarget("CreateTask", None, svc.session_id, None, None)]


# -- helpers ------------------------------------------------------------------------------------


def _retry_limit(runner: Runner, session_id: str, code: int, detail: str) -> str:
    return (
        re.escape(
            f"session '{session_id}' of application '{runner.name}' cannot run its tasks: event 1002: "
            "Session retry limit reached after 2/2 failed attempts; new executor assignment is paused "
            "for this session; existing executors are unchanged. Last bind failure (event 1001): Executor "
        )
        + rf"<\S+> on node <\S+> failed to bind session with return_code <{code}>: "
        + re.escape(detail)
    )
