"""Retirement: clusters stopped in the background, at most N at once, reported in order."""

from __future__ import annotations

import threading

from support import eventually

from flamepy_fake._plugin._retire import MAX_IN_FLIGHT, Retirement


def _gate() -> tuple[threading.Event, threading.Event, object]:
    """A finish() that says it started, then waits until released."""
    started, release = threading.Event(), threading.Event()

    def finish() -> None:
        started.set()
        assert release.wait(30)

    return started, release, finish


def test_retire_returns_while_the_stop_runs_and_wait_waits_for_it() -> None:
    retirement = Retirement()
    started, release, finish = _gate()
    retirement.retire(finish, lambda: [], "t.py::test_a")  # type: ignore[arg-type]
    assert started.wait(30)
    assert retirement.pending() == 1
    done: list[list[str]] = []
    waiter = threading.Thread(target=lambda: done.append(retirement.wait()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not done  # blocked on the running stop
    release.set()
    waiter.join(30)
    assert done == [[]]
    assert retirement.pending() == 0


def test_one_stop_more_than_the_bound_waits_until_one_has_ended() -> None:
    assert MAX_IN_FLIGHT == 2
    retirement = Retirement(max_in_flight=2)
    gates = [_gate() for _ in range(3)]
    for number, (_, _, finish) in enumerate(gates[:2]):
        retirement.retire(finish, lambda: [], f"t.py::test_{number}")  # type: ignore[arg-type]
    assert gates[0][0].wait(30) and gates[1][0].wait(30)
    third = threading.Thread(target=retirement.retire, args=(gates[2][2], lambda: [], "t.py::test_2"))
    third.start()
    third.join(0.2)
    assert third.is_alive() and not gates[2][0].is_set()  # blocked: two stops run
    assert retirement.pending() == 2
    gates[1][1].set()  # the younger one ends first: its slot is the third's
    third.join(30)
    assert not third.is_alive()
    assert gates[2][0].wait(30)
    assert retirement.pending() == 2  # the oldest and the third
    gates[0][1].set()
    gates[2][1].set()
    assert retirement.wait() == []
    assert retirement.pending() == 0


def test_problems_are_reported_in_retirement_order_with_their_test() -> None:
    retirement = Retirement()
    first_started, first_release, first_finish = _gate()
    retirement.retire(first_finish, lambda: ["- directory /x/flame0"], "t.py::test_first")  # type: ignore[arg-type]
    assert first_started.wait(30)

    def broken_stop() -> None:
        raise RuntimeError("boom")

    def broken_check() -> list[str]:
        raise OSError("no /proc")

    retirement.retire(broken_stop, broken_check, "t.py::test_second")
    eventually(lambda: retirement.pending() == 1, "the second stop ended first")
    first_release.set()
    assert retirement.wait() == [
        "  t.py::test_first:",
        "    - directory /x/flame0",
        "  t.py::test_second:",
        "    - stop() failed: RuntimeError('boom')",
        "    - the check of what stop() left failed: OSError('no /proc')",
    ]
    assert retirement.wait() == []  # reported once


def test_a_stop_that_does_not_end_is_reported_and_not_waited_for_again() -> None:
    retirement = Retirement(join_timeout=0.05)
    started, release, finish = _gate()
    retirement.retire(finish, lambda: ["- never reached"], "t.py::test_hung")  # type: ignore[arg-type]
    assert started.wait(30)
    try:
        assert retirement.wait() == ["  t.py::test_hung:", "    - stop() did not end within 0.05 s"]
        assert retirement.pending() == 0
    finally:
        release.set()
