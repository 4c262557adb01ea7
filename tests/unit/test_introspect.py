"""Introspection of a FakeCluster: applications(), sessions(), tasks(), objects(), executors()."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from support import eventually

from flamepy_fake import (
    AppInfo,
    AppState,
    ExecutorInfo,
    ExecutorState,
    FakeCluster,
    ObjectInfo,
    SessionState,
    TaskState,
)
from flamepy_fake._toolkit._introspect import executor_state
from flamepy_runner import CacheClient, UsageError
from flamepy_runner._proto import pb, rpc


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster(executors="thread") as c:
        yield c


@pytest.fixture
def stub(cluster: FakeCluster) -> Iterator[rpc.Stub]:
    with grpc.insecure_channel(cluster.endpoint.removeprefix("http://")) as channel:
        yield rpc.Stub(channel, pb.FRONTEND_SERVICE)


def test_enums_follow_the_protobuf_values() -> None:
    assert [s.name for s in TaskState] == [pb.TaskState.Name(i).upper() for i in range(5)]
    assert [s.name for s in SessionState] == ["OPEN", "CLOSED"]
    assert [s.name for s in AppState] == ["ENABLED", "DISABLED"]
    names = [pb.ExecutorState.Name(i).removeprefix("Executor").upper() for i in range(8)]
    assert [s.name for s in ExecutorState] == names
    assert executor_state(pb.ExecutorState.Value("ExecutorBound")) is ExecutorState.BOUND
    assert executor_state(99) is ExecutorState.UNKNOWN
    assert ExecutorState.BOUND == "bound" and TaskState.FAILED == "failed"  # str enums


def test_default_applications(cluster: FakeCluster) -> None:
    apps = cluster.applications()
    assert [a.name for a in apps] == ["flmexec", "flmping", "flmrun"]
    assert all(isinstance(a, AppInfo) and a.state is AppState.ENABLED for a in apps)


def test_sessions_tasks_and_executors(cluster: FakeCluster, stub: rpc.Stub) -> None:
    spec = pb.SessionSpec(application="flmping")
    stub.CreateSession(pb.CreateSessionRequest(session_id="p1", session=spec), timeout=10)
    stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="p1", input=b"{}")), timeout=10)
    stub.CreateTask(
        pb.CreateTaskRequest(task=pb.TaskSpec(session_id="p1", input=b'{"memory": 1e30}')), timeout=10
    )
    finished = (TaskState.SUCCEED, TaskState.FAILED)
    eventually(lambda: all(t.state in finished for t in cluster.tasks("p1")), "both tasks to finish")
    (ssn,) = cluster.sessions()
    assert (ssn.id, ssn.application, ssn.state) == ("p1", "flmping", SessionState.OPEN)
    assert (ssn.pending, ssn.running, ssn.succeeded, ssn.failed, ssn.cancelled) == (0, 0, 1, 1, 0)
    assert ssn.events == ()
    first, second = cluster.tasks("p1")
    assert (first.id, first.session_id, first.state, first.input_size) == (1, "p1", TaskState.SUCCEED, 2)
    assert first.output_size > 0
    assert second.state is TaskState.FAILED and second.message is not None
    assert second.message == second.events[-1].message

    # One executor per pending task (autoscaling); the second may still be binding when the
    # first has run both tasks.
    def all_bound() -> list[ExecutorInfo] | None:
        executors = cluster.executors()
        return executors if executors and all(e.state is ExecutorState.BOUND for e in executors) else None

    executors = eventually(all_bound, "every executor to be bound")
    assert {(e.state, e.session, e.app, e.task_id, e.executors) for e in executors} == {
        (ExecutorState.BOUND, "p1", "flmping", None, "thread")
    }
    with pytest.warns(DeprecationWarning) as caught:
        assert executors[0].backend == "thread"  # the former name still reads it
    assert [(str(w.message), w.filename) for w in caught] == [
        (
            "ExecutorInfo.backend is deprecated: the instance mode is now executors (executors=..., "
            "--executors, --flame-executors, ini flame_executors; same values: auto, thread, process); "
            "backend names where clusters come from (fake, real, external)",
            __file__,
        )
    ]
    invokes = cluster.calls(service="flame.v1.Instance", method="OnTaskInvoke")
    assert sorted((c.session_id, c.task_id, c.status, c.app) for c in invokes) == [
        ("p1", "1", "OK", "flmping"),
        ("p1", "2", "OK", "flmping"),  # the instance answered; its result says the task failed
    ]
    backend = cluster.calls(service="flame.v1.Backend", where=lambda c: c.method != "LaunchTask")
    assert sorted((c.method, c.status, c.session_id, c.task_id) for c in backend) == sorted(
        [("BindExecutorCompleted", "OK", "p1", None)] * len(cluster.executors_of("p1"))
        + [("CompleteTask", "OK", "p1", "1"), ("CompleteTask", "OK", "p1", "2")]
    )
    enters = cluster.calls(method="OnSessionEnter")
    assert {(c.service, c.status, c.session_id) for c in enters} == {("flame.v1.Instance", "OK", "p1")}
    assert len(enters) == len(cluster.executors_of("p1"))
    stub.CloseSession(pb.CloseSessionRequest(session_id="p1"), timeout=10)
    assert cluster.sessions()[0].state is SessionState.CLOSED


def test_tasks_of_an_unknown_session(cluster: FakeCluster) -> None:
    with pytest.raises(UsageError) as err:
        cluster.tasks("nope")
    assert str(err.value) == "no session 'nope' on this FakeCluster"


def test_objects_with_versions_sizes_and_patches(cluster: FakeCluster) -> None:
    with CacheClient(cluster.config) as cache:
        ref = cache.put_object("app/ssn", b"x" * 10)
        cache.patch_object(ref, b"y")
        cache.patch_object(ref, b"z")
        other = cache.put_object("app/ssn", 1)
    objects = {o.key: o for o in cluster.objects()}
    assert sorted(objects) == sorted([ref.key, other.key])
    mine = objects[ref.key]
    assert isinstance(mine, ObjectInfo) and (mine.version, mine.patches) == (3, 2)
    assert mine.size > 0 and objects[other.key].patches == 0 and objects[other.key].version == 1


def test_introspection_needs_a_running_cluster() -> None:
    cluster = FakeCluster()
    for call, name in (
        (cluster.applications, "applications()"),
        (cluster.sessions, "sessions()"),
        (cluster.objects, "objects()"),
        (lambda: cluster.tasks("s"), "tasks()"),
    ):
        with pytest.raises(UsageError) as err:
            call()
        assert str(err.value).startswith(f"Cannot use {name} before the FakeCluster is started")
    assert cluster.calls() == []  # the call record is readable at any time
