"""The call record (``_calls.CallLog``) alone, and as ``FakeCluster.calls`` through each transport."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from flamepy_fake import CallLog, CallRecord, FakeCluster
from flamepy_fake._toolkit._calls import MAX_CALLS
from flamepy_runner import CacheClient, NotFoundError
from flamepy_runner._proto import pb, rpc


def test_records_in_order_with_growing_seq() -> None:
    log = CallLog()
    log.record("flame.v1.Frontend", "GetApplication", "NOT_FOUND", 0.5, app="a")
    log.record("arrow.flight.protocol.FlightService", "DoPut", "OK", 0.25, key="a/b")
    assert log.snapshot() == [
        CallRecord(0, "flame.v1.Frontend", "GetApplication", "NOT_FOUND", 0.5, app="a"),
        CallRecord(1, "arrow.flight.protocol.FlightService", "DoPut", "OK", 0.25, key="a/b"),
    ]
    assert len(log) == 2 and log[-1].method == "DoPut" and [c.seq for c in log] == [0, 1]


def test_filters_combine() -> None:
    log = CallLog()
    log.record("flame.v1.Frontend", "CreateTask", "OK", 0.0, session_id="s1")
    log.record("flame.v1.Frontend", "CreateTask", "UNAVAILABLE", 0.0, session_id="s2")
    log.record("flame.v1.Instance", "OnTaskInvoke", "OK", 0.0, session_id="s1", task_id="1")
    log.record("arrow.flight.protocol.FlightService", "DoGet", "OK", 0.0, key="k")
    assert [c.seq for c in log(service="flame.v1.Frontend")] == [0, 1]
    assert [c.seq for c in log(service="Frontend")] == [0, 1]  # the short name
    assert [c.seq for c in log(service="Instance")] == [2]
    assert [c.seq for c in log(service="FlightService")] == [3]
    assert [c.seq for c in log(method="CreateTask", status="OK")] == [0]
    assert [c.seq for c in log(status="OK", where=lambda c: c.session_id == "s1")] == [0, 2]
    assert log(method="Nope") == []


def test_clear_forgets_but_seq_keeps_growing() -> None:
    log = CallLog()
    log.record("s", "m", "OK", 0.0)
    log.clear()
    assert len(log) == 0 and log() == []
    log.record("s", "m", "OK", 0.0)
    assert [c.seq for c in log] == [1]


def test_bounded_to_the_last_calls() -> None:
    assert MAX_CALLS == 10_000
    assert CallLog()._calls.maxlen == MAX_CALLS
    log = CallLog(maxlen=3)
    for i in range(5):
        log.record("s", f"m{i}", "OK", 0.0)
    assert [(c.seq, c.method) for c in log] == [(2, "m2"), (3, "m3"), (4, "m4")]


def test_thread_safe() -> None:
    log = CallLog()

    def work() -> None:
        for _ in range(1000):
            log.record("s", "m", "OK", 0.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.seq for c in log) == list(range(8000))


def test_records_are_frozen() -> None:
    record = CallRecord(0, "s", "m", "OK", 0.0)
    with pytest.raises(AttributeError):
        record.status = "UNKNOWN"  # type: ignore[misc]


# -- through the transports -----------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


@pytest.fixture
def stub(cluster: FakeCluster) -> Iterator[rpc.Stub]:
    with grpc.insecure_channel(cluster.endpoint.removeprefix("http://")) as channel:
        yield rpc.Stub(channel, pb.FRONTEND_SERVICE)


def _calls(cluster: FakeCluster, service: str) -> list[tuple[str, str, str | None, str | None, str | None]]:
    return [(c.method, c.status, c.app, c.session_id, c.task_id) for c in cluster.calls(service=service)]


def test_frontend_calls_with_their_key_arguments(cluster: FakeCluster, stub: rpc.Stub) -> None:
    with pytest.raises(grpc.RpcError):
        stub.GetApplication(pb.GetApplicationRequest(name="nope"), timeout=10)
    # Wasm sessions never get executors: the task stays Pending.
    stub.RegisterApplication(
        pb.RegisterApplicationRequest(name="w", application=pb.ApplicationSpec(shim=pb.Wasm)), timeout=10
    )
    spec = pb.SessionSpec(application="w")
    stub.CreateSession(pb.CreateSessionRequest(session_id="s1", session=spec), timeout=10)
    stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="s1")), timeout=10)
    stub.GetTask(pb.GetTaskRequest(session_id="s1", task_id="1"), timeout=10)
    assert list(stub.ListTask(pb.ListTaskRequest(session_id="s1"), timeout=10))
    assert _calls(cluster, "Frontend") == [
        ("GetApplication", "NOT_FOUND", "nope", None, None),
        ("RegisterApplication", "OK", "w", None, None),
        ("CreateSession", "OK", "w", "s1", None),
        ("CreateTask", "OK", None, "s1", None),
        ("GetTask", "OK", None, "s1", "1"),
        ("ListTask", "OK", None, "s1", None),
    ]
    assert all(c.duration >= 0 for c in cluster.calls())


def test_cache_calls_with_their_keys(cluster: FakeCluster) -> None:
    with CacheClient(cluster.config) as cache:
        ref = cache.put_object("app/ssn", {"a": 1})
        cache.get_object(ref)
        cache.delete_objects("app/*")
        with pytest.raises(NotFoundError):
            cache.patch_object(ref, [1])
    got = [(c.method, c.status, c.key) for c in cluster.calls(service="FlightService")]
    assert got == [
        ("DoPut", "OK", "app/ssn"),
        ("DoGet", "OK", ref.key),
        ("DoAction", "OK", "app/*"),
        ("DoPut", "NOT_FOUND", ref.key),
    ]
