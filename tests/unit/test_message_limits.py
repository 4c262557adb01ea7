"""Upstream's message size limits, server by server (reference: session-manager.md §0 and §7).

- Frontend (tonic): a request over 4 MiB (4194304 bytes, as encoded) is refused with
  ``OUT_OF_RANGE "Error, decoded message length too large: found N bytes, the limit is: 4194304
  bytes"`` before the handler runs; responses are unlimited on the server side.
- Object cache (Arrow Flight): unlimited both ways (covered by the cache tests' large objects).
- Instance service of ``flamepy_runner._worker``: grpc's Python default, as flamepy's own
  instance server, 4 MiB received (pinned side by side with flamepy's).

Not confirmed against a real cluster (no reference): what the executor manager's tonic client
does with an instance's TaskResult over 4 MiB, and what the Backend does with a CompleteTask
over 4 MiB; the fake stores such outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from flamepy_fake import FakeCluster
from flamepy_runner._proto import pb, rpc

LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


@pytest.fixture
def stub(cluster: FakeCluster) -> Iterator[rpc.Stub]:
    # The client sends anything (as flamepy does: no max_send_message_length of its own).
    channel = grpc.insecure_channel(
        cluster.endpoint.removeprefix("http://"), options=[("grpc.max_receive_message_length", -1)]
    )
    with channel:
        yield rpc.Stub(channel, pb.FRONTEND_SERVICE)


def _session(stub: rpc.Stub, session_id: str) -> None:
    # Wasm applications are never scheduled: the tasks stay pending, nothing runs them.
    app = pb.ApplicationSpec(shim=pb.Wasm, command="app.wasm")
    stub.RegisterApplication(pb.RegisterApplicationRequest(name="wasm", application=app), timeout=30)
    spec = pb.SessionSpec(application="wasm")
    stub.CreateSession(pb.CreateSessionRequest(session_id=session_id, session=spec), timeout=30)


def _task_request(session_id: str, size: int) -> pb.CreateTaskRequest:
    """A CreateTask request whose encoded size is exactly ``size`` bytes."""
    for n in range(size, size - 64, -1):
        request = pb.CreateTaskRequest(task=pb.TaskSpec(session_id=session_id, input=b"x" * n))
        if request.ByteSize() == size:
            return request
    raise AssertionError(f"no input length gives a {size}-byte request")


def _task_ids(stub: rpc.Stub, session_id: str) -> list[str]:
    tasks = stub.ListTask(pb.ListTaskRequest(session_id=session_id), timeout=30)
    return [t.metadata.id for t in tasks]


def test_the_issues_example_a_5_mib_input_is_refused_and_creates_no_task(stub: rpc.Stub) -> None:
    _session(stub, "ssn1")
    request = pb.CreateTaskRequest(task=pb.TaskSpec(session_id="ssn1", input=b"x" * (5 * 1024 * 1024)))
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateTask(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.details() == (
        "Error, decoded message length too large: found 5242896 bytes, the limit is: 4194304 bytes"
    )
    assert _task_ids(stub, "ssn1") == []
    # The session is not stranded: it closes and goes away as usual.
    stub.CloseSession(pb.CloseSessionRequest(session_id="ssn1"), timeout=30)
    stub.DeleteSession(pb.DeleteSessionRequest(session_id="ssn1"), timeout=30)


def test_exactly_4_mib_is_accepted_one_byte_more_is_refused(stub: rpc.Stub) -> None:
    _session(stub, "ssn-limit")
    accepted = stub.CreateTask(_task_request("ssn-limit", LIMIT), timeout=60)
    assert accepted.metadata.id == "1"
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateTask(_task_request("ssn-limit", LIMIT + 1), timeout=60)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.details() == (
        "Error, decoded message length too large: found 4194305 bytes, the limit is: 4194304 bytes"
    )
    assert _task_ids(stub, "ssn-limit") == ["1"]
    stub.CloseSession(pb.CloseSessionRequest(session_id="ssn-limit"), timeout=30)


def test_every_frontend_request_has_the_limit(stub: rpc.Stub) -> None:
    big = "a" * LIMIT
    calls = [
        (stub.RegisterApplication, pb.RegisterApplicationRequest(name=big)),
        (stub.OpenSession, pb.OpenSessionRequest(session_id=big)),
        (stub.GetSession, pb.GetSessionRequest(session_id=big)),
        (stub.GetApplication, pb.GetApplicationRequest(name=big)),
    ]
    for method, request in calls:
        size = request.ByteSize()
        assert size > LIMIT
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert info.value.details() == (
            f"Error, decoded message length too large: found {size} bytes, the limit is: 4194304 bytes"
        )
    # Streaming responses too: the limit is on what the server reads.
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ListTask(pb.ListTaskRequest(session_id=big), timeout=60))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_responses_over_4_mib_are_sent(stub: rpc.Stub) -> None:
    # tonic's server encodes without a limit; only the client's receive limit applies.
    _session(stub, "ssn-out")
    stub.CreateTask(_task_request("ssn-out", LIMIT), timeout=60)
    stub.CreateTask(_task_request("ssn-out", LIMIT), timeout=60)
    assert _task_ids(stub, "ssn-out") == ["1", "2"]
    task = stub.GetTask(pb.GetTaskRequest(session_id="ssn-out", task_id="1"), timeout=60)
    assert len(task.spec.input) > LIMIT - 64
    stub.CloseSession(pb.CloseSessionRequest(session_id="ssn-out"), timeout=30)


FLAMEPY_SERVICE = """
import flamepy
from flamepy import FlameService

class Echo(FlameService):
    def on_session_enter(self, context):
        pass

    def on_task_invoke(self, context):
        return b"ok"

    def on_session_leave(self):
        pass

flamepy.run(Echo())
"""


def _invoke_status(sock: Path, size: int) -> tuple[str, str]:
    """(status code name, details) of an OnTaskInvoke whose encoded request is ``size`` bytes."""
    for n in range(size, size - 64, -1):
        request = pb.TaskContext(task_id="1", session_id="ssn", input=b"x" * n)
        if request.ByteSize() == size:
            break
    else:
        raise AssertionError(f"no input length gives a {size}-byte request")
    with grpc.insecure_channel(
        f"unix://{sock}", options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        stub = rpc.Stub(channel, pb.INSTANCE_SERVICE)
        try:
            stub.OnTaskInvoke(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details() or ""
    return "OK", ""


@pytest.mark.parametrize("program", ["flamepy_runner", "flamepy"])
def test_instance_servers_receive_at_most_4_mib_as_flamepys_does(tmp_path: Path, program: str) -> None:
    if program == "flamepy":
        (tmp_path / "echo.py").write_text(FLAMEPY_SERVICE)
        argv = [sys.executable, str(tmp_path / "echo.py")]
    else:
        argv = [sys.executable, "-m", "flamepy_runner._worker"]
    with tempfile.TemporaryDirectory(prefix="ffl-", dir="/tmp") as tmp:
        sock = Path(tmp) / "i.sock"
        env = {**os.environ, "FLAME_INSTANCE_ENDPOINT": str(sock)}
        proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            assert _invoke_status(sock, LIMIT)[0] != "RESOURCE_EXHAUSTED"
            assert _invoke_status(sock, LIMIT + 1) == (
                "RESOURCE_EXHAUSTED",
                "SERVER: Received message larger than max (4194305 vs. 4194304)",
            )
        finally:
            proc.kill()
            proc.wait()
