"""The job's tests, on a fresh fake Flame cluster per test (flamepy_fake's pytest plugin)."""

from __future__ import annotations

import pytest
from shop.jobs import revenue

from flamepy_runner import RemoteError, UnavailableError

ORDERS = [
    {"country": "FR", "quantity": 2, "unit_price": 1000},  # 2400
    {"country": "DE", "quantity": 1, "unit_price": 5000},  # 5950
    {"country": "LU", "quantity": 3, "unit_price": 100},  # 351
]


def test_revenue(flame_runner):
    assert revenue(flame_runner(), ORDERS) == 2400 + 5950 + 351


def test_one_task_per_order_and_every_session_closed(flame_runner, flame_cluster):
    runner = flame_runner()
    flame_cluster.calls.clear()
    revenue(runner, ORDERS)
    created = flame_cluster.calls(method="CreateTask")
    assert len(created) == len(ORDERS) * 2 + 1  # price each, book each, one total
    sessions = [s for s in flame_cluster.sessions() if s.application == runner.name]
    assert sorted(s.succeeded for s in sessions) == [3, 4]
    assert all(s.failed == 0 for s in sessions)


def test_a_bad_order_fails_with_the_remote_error(flame_runner):
    with pytest.raises(RemoteError) as err:
        revenue(flame_runner(), [{"country": "XX", "quantity": 1, "unit_price": 1}])
    assert err.value.remote_message == "no VAT rate for country 'XX'"


def test_the_session_manager_going_away_is_a_clear_error(flame_runner, flame_cluster):
    runner = flame_runner()
    flame_cluster.faults.fail("CreateTask", "UNAVAILABLE", "maintenance", times=None)
    with pytest.raises(UnavailableError) as err:
        revenue(runner, ORDERS)
    assert str(err.value) == (
        f"cannot create a task in session '{err.value.session_id}': "
        f"session manager {flame_cluster.endpoint} is unreachable: maintenance"
    )


def test_a_crashed_instance_fails_only_its_task(flame_runner, flame_cluster):
    runner = flame_runner()
    flame_cluster.faults.kill_instance("task")
    with pytest.raises(RemoteError) as err:
        revenue(runner, ORDERS[:1])
    assert str(err.value).endswith(" while running task 1")  # killed: SIGKILL or a dead thread
    assert revenue(runner, ORDERS) == 2400 + 5950 + 351  # fresh instances serve the rest
