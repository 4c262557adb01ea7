"""v0.6.0's scheduling policies as a pure planning step (``flamepy_fake._control._policies``)."""

from __future__ import annotations

from typing import Any

import pytest

from flamepy_fake._control._policies import DEFAULT_POLICIES, POLICY_NAMES, check_policies, plan_cycle
from flamepy_fake._control._records import SessionDemand
from flamepy_fake._control._state import AppRecord

GIB = 1 << 30
UNIT = (1, GIB, 0)
CAPACITY = (6, 70 * GIB, 0)  # the probed cluster: 3 nodes of 2 cpu, ~23.5 GiB


def demand(sid: str = "s", **kw: Any) -> SessionDemand:
    base: dict[str, Any] = {
        "session_id": sid,
        "application": "app",
        "app": AppRecord(name="app"),
        "pending": 0,
        "running": 0,
        "min_instances": 0,
        "max_instances": None,
        "executors": 0,
        "resreq": UNIT,
    }
    base.update(kw)
    return SessionDemand(**base)


def plan(
    *demands: SessionDemand, policies: tuple[str, ...] = DEFAULT_POLICIES, **kw: Any
) -> list[tuple[str, int]]:
    capacity = kw.pop("capacity", CAPACITY)
    allocatable = kw.pop("allocatable", capacity)
    grants = plan_cycle(list(demands), capacity=capacity, allocatable=allocatable, policies=policies)
    return [(g.demand.session_id, g.count) for g in grants]


# -- the policies option ---------------------------------------------------------------------------


def test_default_is_upstreams_ci_setting() -> None:
    assert DEFAULT_POLICIES == ("priority", "gang")
    assert POLICY_NAMES == ("priority", "drf", "gang")


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        (["priority", "gang"], ("priority", "gang")),
        (["gang", "priority"], ("priority", "gang")),  # consulted in registry order
        (["drf", "gang"], ("drf", "gang")),
        (("gang", "drf", "priority", "gang"), ("priority", "drf", "gang")),
    ],
)
def test_accepted_lists(given: list[str], canonical: tuple[str, ...]) -> None:
    assert check_policies(given) == canonical


@pytest.mark.parametrize("name", ["shim", "fifo", "Priority", ""])
def test_unknown_policy_has_upstreams_text(name: str) -> None:
    with pytest.raises(ValueError) as exc:
        check_policies(["priority", name, "gang"])
    assert str(exc.value) == f'unknown policy: {name}. available: ["priority", "drf", "gang"]'


@pytest.mark.parametrize("given", [["priority"], ["drf"], ["priority", "drf"], []])
def test_a_list_without_gang_is_refused_with_the_reason(given: list[str]) -> None:
    with pytest.raises(ValueError) as exc:
        check_policies(given)
    assert str(exc.value) == (
        f"policies {given} lack 'gang': with them Flame v0.6.0 never creates an executor and every "
        "task stays Pending forever (an upstream defect, xflops/flame#500), so the fake refuses them; "
        "use ['priority', 'gang'] (upstream's images and CI) or ['priority', 'drf', 'gang'] "
        "(its built-in default)"
    )


def test_gang_alone_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as exc:
        check_policies(["gang"])
    assert str(exc.value) == (
        "policies ['gang'] alone never run a task on Flame v0.6.0 (no policy marks a session as "
        "needing executors), so the fake refuses them; add 'priority' or 'drf'"
    )


def test_a_bare_string_is_refused() -> None:
    with pytest.raises(ValueError) as exc:
        check_policies("priority,gang")
    assert (
        str(exc.value) == "policies must be a list of names, e.g. ['priority', 'gang']; got 'priority,gang'"
    )


# -- priority + gang -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "pending", "held", "expected"),
    [
        (1, 0, 0, []),
        (1, 1, 0, [("s", 1)]),
        (1, 3, 2, [("s", 1)]),  # one per cycle for B=1 (the scheduler repeats cycles)
        (1, 3, 3, []),
        (2, 1, 0, []),  # no partial start: one task never fills a batch of 2
        (2, 2, 0, [("s", 2)]),  # the whole gang at once
        (2, 3, 0, [("s", 2)]),  # rounded down to whole batches
        (3, 4, 3, []),  # demand 3 = held: the 4th task waits for a free executor
        (3, 6, 3, [("s", 3)]),
        (2, 2, 1, [("s", 1)]),  # a gang member left on its own: top up to a multiple of B
    ],
)
def test_whole_batches_of_unfinished_tasks(
    batch: int, pending: int, held: int, expected: list[tuple[str, int]]
) -> None:
    assert plan(demand(batch_size=batch, pending=pending, executors=held)) == expected


def test_running_tasks_count_towards_the_batch() -> None:
    assert plan(demand(batch_size=2, pending=1, running=1, executors=0)) == [("s", 2)]


def test_min_instances_warm_a_gang_without_tasks() -> None:
    assert plan(demand(batch_size=2, min_instances=2)) == [("s", 2)]
    assert plan(demand(batch_size=2, min_instances=2, executors=2)) == []


def test_max_instances_stops_growth() -> None:
    assert plan(demand(pending=5, max_instances=2, executors=1)) == [("s", 1)]
    assert plan(demand(pending=5, max_instances=2, executors=2)) == []
    assert plan(demand(pending=5, max_instances=0)) == []


def test_the_loosest_dimension_sets_the_count() -> None:
    # 10 tasks on 6 cpus: memory still allows them, so the session keeps growing (v0.6.0 probe).
    assert plan(demand(pending=10, executors=9)) == [("s", 1)]
    assert plan(demand(pending=10, executors=10)) == []
    # With every dimension exhausted it stops.
    assert plan(demand(pending=10, executors=2), capacity=(2, 2 * GIB, 0)) == []


def test_all_zero_resreq_never_runs() -> None:
    assert plan(demand(pending=3, resreq=(0, 0, 0))) == []


def test_capacity_goes_to_higher_priority_first() -> None:
    first = demand("high", priority=0, pending=2)
    second = demand("later", priority=0, pending=2)
    # capacity 2 cpu / 2 GiB: the first session's desire takes it all
    assert plan(first, second, capacity=(2, 2 * GIB, 0)) == [("high", 1)]


def test_a_needy_higher_priority_blocks_lower_ones() -> None:
    high = demand("high", priority=5, pending=1, batch_size=2)  # never fills its batch
    low = demand("low", priority=1, pending=4)
    assert plan(high, low) == []
    assert plan(demand("high", priority=5), low) == [("low", 1)]  # not needy: no block


# -- drf -------------------------------------------------------------------------------------------


def test_with_drf_a_lone_task_gets_a_full_gang() -> None:
    lone = demand(batch_size=2, pending=1)
    assert plan(lone) == []
    assert plan(lone, policies=("priority", "drf", "gang")) == [("s", 2)]
    assert plan(lone, policies=("drf", "gang")) == [("s", 2)]


def test_drf_needs_the_gang_to_fit_the_node() -> None:
    two = demand(batch_size=2, pending=2)
    assert plan(two, policies=("drf", "gang"), allocatable=(1, 70 * GIB, 0)) == []
    assert plan(two, policies=("drf", "gang"), allocatable=(2, 70 * GIB, 0)) == [("s", 2)]


def test_drf_stops_at_the_fair_share() -> None:
    a = demand("a", pending=5, executors=3)
    b = demand("b", pending=5, executors=0)
    capacity = (6, 6 * GIB, 0)
    assert plan(a, b, policies=("drf", "gang"), capacity=capacity) == [("b", 1)]  # a holds 1/2


def test_drf_does_not_count_tasks_idle_executors_are_about_to_take() -> None:
    assert plan(demand(batch_size=2, pending=1, executors=2), policies=("drf", "gang")) == []
    assert plan(demand(pending=3, running=1, executors=2), policies=("drf", "gang")) == [("s", 1)]
