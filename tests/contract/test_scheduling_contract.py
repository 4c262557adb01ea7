"""Executors as a client sees them on Flame v0.6.0 with ``policies: [priority, gang]``.

Runs on every backend (``flame_backend``): the fake with its default policies, and a real v0.6.0
cluster whose generated config uses upstream's CI setting (``_backends.py``). The facts are in
``shared/reference/v0.6.0.md`` sections 2 and 3, and mirror v0.6.0's own e2e test
``TestBatchSession::test_batch_session_no_partial_start``:

- a batch session holds executors in whole gangs of ``batch_size``, bound together, so a
  ListExecutor never shows part of a gang;
- a session with no executors gets its first gang only once it has ``batch_size`` unfinished
  tasks: a lone task of a ``batch_size=2`` session stays Pending;
- tasks are still pulled one at a time, so a task count that is not a multiple of the batch
  runs in full, and a bound gang serves later lone tasks;
- ``limits.max_executors`` is never read: a session gets one executor per unfinished task, past
  the fake's former cap of 10.

"Stays Pending" is shown without a timed wait: a second session's task is created after the
lone task, and once it has run the scheduler has certainly looked at the lone task too.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from _backends import Names

from flamepy_runner._proto import pb

CALL = 10.0
RUN = 120.0  # v0.6.0's e2e allows 120 s for a gang to form and run


def create_session(frontend: Any, session_id: str, **spec: Any) -> None:
    request = pb.CreateSessionRequest(
        session_id=session_id, session=pb.SessionSpec(application="flmping", **spec)
    )
    frontend.CreateSession(request, timeout=CALL)


def create_task(frontend: Any, session_id: str, data: bytes = b"{}") -> str:
    request = pb.CreateTaskRequest(task=pb.TaskSpec(session_id=session_id, input=data))
    task_id: str = frontend.CreateTask(request, timeout=CALL).metadata.id
    return task_id


def task_states(frontend: Any, session_id: str) -> dict[str, int]:
    tasks = frontend.ListTask(pb.ListTaskRequest(session_id=session_id), timeout=CALL)
    return {t.metadata.id: t.status.state for t in tasks}


def holding(frontend: Any, session_id: str) -> int:
    """How many executors hold ``session_id`` now (ListExecutor)."""
    executors = frontend.ListExecutor(pb.ListExecutorRequest(), timeout=CALL).executors
    return sum(1 for e in executors if e.status.session_id == session_id)


def run_until_done(frontend: Any, session_id: str, count: int) -> list[int]:
    """Poll until the session's ``count`` tasks all Succeed; return the executor counts seen."""
    seen: list[int] = []
    deadline = time.monotonic() + RUN
    while True:
        seen.append(holding(frontend, session_id))
        states = task_states(frontend, session_id)
        if len(states) == count and set(states.values()) == {pb.Succeed}:
            return seen
        assert pb.Failed not in states.values(), states
        if time.monotonic() > deadline:
            raise AssertionError(
                f"tasks of {session_id} did not all succeed: {states}, executors {seen[-5:]}"
            )
        time.sleep(0.05)


def witness(frontend: Any, names: Names) -> None:
    """Run one task on a fresh ``batch_size=1`` session; the scheduler has cycled once it is done."""
    sid = names.session("witness")
    create_session(frontend, sid)
    create_task(frontend, sid)
    run_until_done(frontend, sid, 1)


def test_a_lone_task_waits_for_a_whole_gang(frontend: Any, names: Names) -> None:
    sid = names.session("batch")
    create_session(frontend, sid, batch_size=2)
    create_task(frontend, sid)
    witness(frontend, names)
    assert task_states(frontend, sid) == {"1": pb.Pending}  # no partial start
    assert holding(frontend, sid) == 0

    create_task(frontend, sid)  # now the batch is full
    seen = run_until_done(frontend, sid, 2)
    assert set(seen) <= {0, 2} and seen[-1] == 2, seen  # a whole gang, never part of one

    create_task(frontend, sid)  # a later lone task runs on the still-bound gang
    seen = run_until_done(frontend, sid, 3)
    assert set(seen) == {2}, seen
    session = frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL)
    assert (session.spec.batch_size, session.status.succeed, session.status.pending) == (2, 3, 0)


def test_tasks_round_down_to_whole_batches_and_all_run(frontend: Any, names: Names) -> None:
    sid = names.session("batch3")
    create_session(frontend, sid, batch_size=3)
    for _ in range(4):
        create_task(frontend, sid, b'{"duration":300}')
    # 4 tasks make one batch of 3: three executors, and the 4th task runs when one frees.
    seen = run_until_done(frontend, sid, 4)
    assert set(seen) <= {0, 3} and seen[-1] == 3, seen


def test_min_instances_warm_a_gang_without_tasks(frontend: Any, names: Names) -> None:
    sid = names.session("warm")
    create_session(frontend, sid, batch_size=2, min_instances=2)
    deadline = time.monotonic() + RUN
    seen = [holding(frontend, sid)]
    while seen[-1] != 2:
        assert time.monotonic() < deadline, f"no warm gang: {seen[-5:]}"
        time.sleep(0.05)
        seen.append(holding(frontend, sid))
    assert set(seen) <= {0, 2}, seen


@pytest.mark.parametrize("count", [12])
def test_executor_count_follows_the_tasks_not_max_executors(frontend: Any, names: Names, count: int) -> None:
    sid = names.session("wide")
    create_session(frontend, sid)
    for _ in range(count):
        create_task(frontend, sid, b'{"duration":5000}')
    # One executor per unfinished task: v0.6.0 never reads limits.max_executors (10 in the
    # real backend's config), and node cpu does not cap it without drf (memory still fits).
    seen = run_until_done(frontend, sid, count)
    assert max(seen) == count, seen
