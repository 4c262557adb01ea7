"""Fault triggers (``_faults.Faults``) alone, and their effect on the wire of a FakeCluster.

What the Runner does under each fault is in ``tests/runner/test_runner_faults.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pyarrow.flight as flight
import pytest

from flamepy_fake import CallTarget, FakeCluster, FaultError, Faults
from flamepy_fake._toolkit._faults import CACHE_METHODS
from flamepy_runner import UsageError
from flamepy_runner._proto import pb, rpc

CREATE = CallTarget("CreateTask", session_id="s1")


@pytest.fixture
def faults() -> Faults:
    return Faults(["CreateTask", "GetTask"])


def test_n_times_hits_exactly_n(faults: Faults) -> None:
    fault = faults.fail("CreateTask", times=2)
    assert faults.armed and faults.active == [fault]
    assert faults.take("fail", CREATE) is fault
    assert faults.take("fail", CREATE) is fault
    assert faults.take("fail", CREATE) is None  # the third passes
    assert fault.hits == 2 and not fault.active and not faults.armed


def test_one_shot_by_default(faults: Faults) -> None:
    fault = faults.fail("CreateTask", "INTERNAL", "x")
    assert (fault.times, fault.status, fault.message) == (1, "INTERNAL", "x")
    assert faults.take("fail", CREATE) is fault
    assert faults.take("fail", CREATE) is None


def test_only_the_named_method_and_kind_count(faults: Faults) -> None:
    fault = faults.fail("CreateTask")
    assert faults.take("fail", CallTarget("GetTask")) is None
    assert faults.take("delay", CREATE) is None
    assert fault.hits == 0 and fault.active


def test_predicate_trigger_counts_matching_calls_only(faults: Faults) -> None:
    fault = faults.fail("CreateTask", times=1, when=lambda t: t.session_id == "s2")
    assert faults.take("fail", CREATE) is None
    assert faults.take("fail", CallTarget("CreateTask", session_id="s2")) is fault
    assert faults.take("fail", CallTarget("CreateTask", session_id="s2")) is None


def test_every_call_until_removed(faults: Faults) -> None:
    fault = faults.delay("GetTask", 0.0, times=None)
    for _ in range(5):
        assert faults.take("delay", CallTarget("GetTask")) is fault
    fault.remove()
    fault.remove()  # idempotent
    assert faults.take("delay", CallTarget("GetTask")) is None and fault.hits == 5


def test_context_manager_removes_on_exit(faults: Faults) -> None:
    with faults.fail("CreateTask", times=None) as fault:
        assert faults.active == [fault]
    assert faults.active == [] and faults.take("fail", CREATE) is None


def test_clear_removes_everything(faults: Faults) -> None:
    faults.fail("CreateTask")
    faults.cut_watch()
    faults.kill_instance("idle")
    faults.fail_session_enter()
    faults.fail_install("download")
    assert [f.kind for f in faults.active] == [
        "fail",
        "cut_watch",
        "kill_between_tasks",
        "session_enter",
        "download",
    ]
    faults.clear()
    assert faults.active == [] and not faults.armed


def test_unknown_method_lists_the_known_ones(faults: Faults) -> None:
    with pytest.raises(FaultError) as err:
        faults.fail("CreateTasks")
    assert str(err.value) == (
        "unknown method 'CreateTasks'; Frontend methods: CreateTask, GetTask; "
        "object cache methods: DoAction, DoGet, DoPut, GetFlightInfo, GetSchema, ListActions, ListFlights"
    )
    with pytest.raises(FaultError):
        faults.delay("OnSessionEnter", 1.0)
    assert isinstance(err.value, ValueError)


def test_statuses_a_transport_cannot_send_are_refused(faults: Faults) -> None:
    with pytest.raises(FaultError) as err:
        faults.fail("CreateTask", "NOPE")
    assert str(err.value).startswith("unknown status 'NOPE'; known: CANCELLED, UNKNOWN, INVALID_ARGUMENT, ")
    with pytest.raises(FaultError) as err2:
        faults.fail("DoPut", "ALREADY_EXISTS")
    assert str(err2.value) == (
        "the object cache (pyarrow's Flight server) cannot answer ALREADY_EXISTS; it can answer "
        "CANCELLED, DEADLINE_EXCEEDED, INTERNAL, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, "
        "UNAUTHENTICATED, UNAVAILABLE, UNIMPLEMENTED"
    )
    faults.fail("CreateTask", "ALREADY_EXISTS")  # the session manager can


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (
            lambda f: f.fail("CreateTask", times=0),
            "times must be a positive integer or None (every call); got 0",
        ),
        (lambda f: f.delay("CreateTask", -1), "seconds must be >= 0; got -1"),
        (lambda f: f.cut_watch(after=-1), "after must be a non-negative integer; got -1"),
        (lambda f: f.kill_instance("later"), "during must be 'task' or 'idle'; got 'later'"),
        (lambda f: f.fail_install("unpack"), "stage must be 'download' or 'install'; got 'unpack'"),
    ],
)
def test_bad_arguments(faults: Faults, make: object, text: str) -> None:
    with pytest.raises(FaultError) as err:
        make(faults)  # type: ignore[operator]
    assert str(err.value) == text
    assert faults.active == []


# -- on the wire ----------------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


@pytest.fixture
def stub(cluster: FakeCluster) -> Iterator[rpc.Stub]:
    with grpc.insecure_channel(cluster.endpoint.removeprefix("http://")) as channel:
        yield rpc.Stub(channel, pb.FRONTEND_SERVICE)


def test_frontend_fault_answers_the_status_and_text(cluster: FakeCluster, stub: rpc.Stub) -> None:
    cluster.faults.fail("GetApplication", "PERMISSION_DENIED", "go away", times=2)
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as err:
            stub.GetApplication(pb.GetApplicationRequest(name="flmrun"), timeout=10)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "go away")
    assert stub.GetApplication(pb.GetApplicationRequest(name="flmrun"), timeout=10).metadata.name == "flmrun"
    statuses = [c.status for c in cluster.calls(method="GetApplication")]
    assert statuses == ["PERMISSION_DENIED", "PERMISSION_DENIED", "OK"]


def test_a_failed_call_does_not_reach_the_state(cluster: FakeCluster, stub: rpc.Stub) -> None:
    spec = pb.ApplicationSpec(shim=pb.Wasm)
    cluster.faults.fail("RegisterApplication", "UNAVAILABLE", "later")
    with pytest.raises(grpc.RpcError):
        stub.RegisterApplication(pb.RegisterApplicationRequest(name="w", application=spec), timeout=10)
    assert "w" not in [a.name for a in cluster.applications()]


def test_cut_watch_after_a_message_and_cleanly(cluster: FakeCluster, stub: rpc.Stub) -> None:
    stub.RegisterApplication(
        pb.RegisterApplicationRequest(name="w", application=pb.ApplicationSpec(shim=pb.Wasm)), timeout=10
    )
    stub.CreateSession(
        pb.CreateSessionRequest(session_id="s1", session=pb.SessionSpec(application="w")), timeout=10
    )
    stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="s1")), timeout=10)
    stub.CloseSession(pb.CloseSessionRequest(session_id="s1"), timeout=10)  # task 1: Cancelled
    request = pb.WatchTaskRequest(session_id="s1", task_id="1")
    cluster.faults.cut_watch(status=None)
    assert list(stub.WatchTask(request, timeout=10)) == []  # ends at once, no error
    cluster.faults.cut_watch("DATA_LOSS", "gone", after=1)
    stream = stub.WatchTask(request, timeout=10)
    assert next(stream).status.state == pb.Cancelled
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.DATA_LOSS, "gone")
    assert [c.status for c in cluster.calls(method="WatchTask")] == ["OK", "DATA_LOSS"]
    assert len(list(stub.WatchTask(request, timeout=10))) == 1  # no fault left


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        # pyarrow's server appends ". Detail: ..." to every refusal (README: Differences).
        ("UNAVAILABLE", flight.FlightUnavailableError, "boom. Detail: Unavailable"),
        ("PERMISSION_DENIED", flight.FlightUnauthorizedError, "boom. Detail: Unauthorized"),
        ("NOT_FOUND", KeyError, "boom. Detail: Python exception: ObjectNotFound"),
    ],
)
def test_cache_fault_answers_the_status_and_text(
    cluster: FakeCluster, status: str, error: type[Exception], text: str
) -> None:
    client = flight.connect(cluster.cache_endpoint)
    try:
        cluster.faults.fail("ListFlights", status, "boom")
        with pytest.raises(error) as err:
            list(client.list_flights())
        message = err.value.args[0] if isinstance(err.value, KeyError) else str(err.value)
        assert message.split(". gRPC client debug context")[0] == text
        assert list(client.list_flights()) == []  # one-shot
    finally:
        client.close()
    assert [c.status for c in cluster.calls(method="ListFlights")] == [status, "OK"]


def test_every_cache_method_can_be_named(cluster: FakeCluster) -> None:
    for method in CACHE_METHODS:
        with cluster.faults.fail(method):
            pass
    assert cluster.faults.active == []


def test_faults_need_a_running_cluster() -> None:
    cluster = FakeCluster()
    with pytest.raises(UsageError) as err:
        cluster.faults  # noqa: B018
    assert str(err.value) == (
        "Cannot use faults before the FakeCluster is started: "
        "call start() or use 'with FakeCluster() as cluster:'."
    )
