"""The fake Frontend driven through the real ``flamepy`` 0.6.0 client.

No executors run here: task state changes are driven through the state's executor-facing
methods, exactly as the fake's executors drive them. Each test asserts what flamepy hands its
caller, including the ``FlameError`` code and message it raises.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import flamepy
import grpc
import pytest
from _sm_helpers import flamepy_client, frontend_server, raw_stub
from flamepy import (
    ApplicationAttributes,
    ApplicationSchema,
    FlameError,
    FlameErrorCode,
    ResourceRequirement,
    SessionAttributes,
    SessionState,
    TaskState,
)

from flamepy_fake._control._state import ClusterState, SessionSpec
from flamepy_runner._proto import pb

ENOENT = "No such file or directory (os error 2)"
DEADLINE = 10.0


@pytest.fixture
def state() -> ClusterState:
    return ClusterState(node_name="compat-node")


@pytest.fixture
def address(state: ClusterState, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with frontend_server(state) as addr, flamepy_client(monkeypatch, addr):
        yield addr
        state.stop()  # ends open watch streams before the client joins its watcher threads


def _error(exc: pytest.ExceptionInfo[FlameError], code: FlameErrorCode, message: str) -> None:
    assert (exc.value.code, exc.value.message) == (code, message)


def _run_one(
    state: ClusterState, session_id: str, rc: int, output: bytes | None, message: str | None
) -> None:
    """Play one executor: bind, take the next task, complete it with ``rc``."""
    executor = state.create_executor(session_id, executors="test")
    state.bind_completed(executor.id, 0, None)
    task = state.launch_task(executor.id, DEADLINE)
    assert task is not None
    state.complete_task(executor.id, rc, output, message)
    state.release_executor(executor.id)


# -- applications --------------------------------------------------------------------------------


def test_default_applications(address: str) -> None:
    apps = {a.name: a for a in flamepy.list_applications()}
    assert sorted(apps) == ["flmexec", "flmping", "flmrun"]
    flmrun = apps["flmrun"]
    assert flmrun.arguments == [
        "run",
        "--python",
        "python${FLAME_PYTHON_VERSION}",
        "python",
        "-m",
        "flamepy.runner.runpy",
    ]
    assert (flmrun.installer, flmrun.max_instances, flmrun.delay_release) == ("python", 1000000, 60)
    assert flmrun.schema is not None and flmrun.schema.input is None  # present, empty
    flmexec = flamepy.get_application("flmexec")
    assert flmexec is not None and flmexec.schema is not None
    assert (
        flmexec.schema.output is not None
        and '"description":"The output of the script in UTF-8."' in flmexec.schema.output
    )
    assert flmexec.id == flmexec.name == "flmexec"
    assert flamepy.get_application("nope") is None  # NOT_FOUND becomes None


def test_register_application_round_trip(address: str) -> None:
    flamepy.register_application(
        "my-app",
        ApplicationAttributes(
            command="/usr/bin/python3",
            arguments=["-m", "svc"],
            environments={"A": "1"},
            working_directory="/tmp",
            description="demo",
            labels=["x"],
            schema=ApplicationSchema(input='{"type": "string"}'),
        ),
    )
    app = flamepy.get_application("my-app")
    assert app is not None
    assert (app.command, app.arguments, app.environments) == ("/usr/bin/python3", ["-m", "svc"], {"A": "1"})
    assert (app.working_directory, app.description, app.labels) == ("/tmp", "demo", ["x"])
    assert (app.max_instances, app.delay_release, app.url, app.installer) == (1000000, 60, None, None)
    assert app.schema is not None and app.schema.input == '{"type": "string"}' and app.schema.output is None
    assert "my-app" in {a.name for a in flamepy.list_applications()}


@pytest.mark.parametrize(
    ("name", "attrs", "message"),
    [
        ("flmrun", {}, "Application 'flmrun' already exists"),
        (
            "bad name",
            {},
            "application name contains invalid characters "
            "(only alphanumeric, '-', '_', '.' allowed): bad name",
        ),
        ("-x", {}, "application name cannot start with '.' or '-': -x"),
        ("a/b", {}, "application name contains invalid characters (path traversal): a/b"),
        (
            "ok",
            {"working_directory": "rel"},
            "failed to register application: working_directory must be an absolute path, got: rel",
        ),
    ],
)
def test_register_application_errors(address: str, name: str, attrs: dict[str, str], message: str) -> None:
    with pytest.raises(FlameError) as exc:
        flamepy.register_application(name, ApplicationAttributes(**attrs))  # type: ignore[arg-type]
    _error(exc, FlameErrorCode.INTERNAL, message)


def test_register_application_bad_schema(address: str) -> None:
    with pytest.raises(FlameError) as exc:
        flamepy.register_application("ok", ApplicationAttributes(schema=ApplicationSchema(output="{nope")))
    assert exc.value.code == FlameErrorCode.INTERNAL
    assert exc.value.message.startswith("failed to register application: invalid output schema: ")
    with pytest.raises(FlameError) as exc:
        flamepy.register_application(
            "ok", ApplicationAttributes(schema=ApplicationSchema(common_data='{"type": 1}'))
        )
    assert exc.value.message.startswith("failed to register application: invalid common data schema: ")
    assert flamepy.get_application("ok") is None


def test_unregister_application(address: str) -> None:
    flamepy.register_application("gone", ApplicationAttributes(command="/bin/true"))
    session = flamepy.create_session("gone", session_id="g1")
    with pytest.raises(FlameError) as exc:
        flamepy.unregister_application("gone")
    _error(exc, FlameErrorCode.INTERNAL, "Cannot unregister application 'gone': has open sessions")
    session.close()
    flamepy.unregister_application("gone")
    assert flamepy.get_application("gone") is None
    with pytest.raises(FlameError) as exc:
        flamepy.unregister_application("gone")
    _error(exc, FlameErrorCode.INTERNAL, f"Failed to delete application 'gone': {ENOENT}")


# -- sessions ------------------------------------------------------------------------------------


def test_create_session(address: str, state: ClusterState) -> None:
    session = flamepy.create_session(
        "flmping", common_data=b"cd", session_id="s1", max_instances=8, batch_size=4
    )
    assert (session.id, session.application, session.state) == ("s1", "flmping", SessionState.OPEN)
    assert session.common_data() == b"cd" and session.completion_time is None and session.events == []
    record = state.get_session("s1")
    assert (record.batch_size, record.resreq, record.max_instances) == (4, (1, 1073741824, 0), 8)
    generated = flamepy.create_session("flmping")
    assert generated.id.startswith("flmping-")  # flamepy names it; the server takes any id
    with pytest.raises(FlameError) as exc:
        flamepy.create_session("flmping", session_id="s1")
    _error(exc, FlameErrorCode.INTERNAL, "failed to create session: Session 's1' already exists")
    with pytest.raises(FlameError) as exc:
        flamepy.create_session("nope", session_id="s1")
    _error(exc, FlameErrorCode.INTERNAL, f"failed to create session: Application nope not found: {ENOENT}")
    with pytest.raises(FlameError) as exc:  # batch alignment comes before the application lookup
        flamepy.create_session("nope", session_id="s1", max_instances=3, batch_size=4)
    _error(
        exc,
        FlameErrorCode.INTERNAL,
        "failed to create session: max_instances (3) must be a multiple of batch_size (4)",
    )


def test_create_session_with_resreq(address: str, state: ClusterState) -> None:
    flamepy.create_session("flmping", session_id="r", resreq=ResourceRequirement(cpu=2, memory=5, gpu=0))
    assert state.get_session("r").resreq == (2, 5, 0)


def test_open_session_matrix(address: str) -> None:
    with pytest.raises(FlameError) as exc:
        flamepy.open_session("s1")
    _error(exc, FlameErrorCode.NOT_FOUND, "failed to open session: Session s1 not found")
    spec = SessionAttributes(application="flmping", max_instances=2)
    created = flamepy.open_session("s1", spec)
    assert created.id == "s1" and created.state == SessionState.OPEN
    assert flamepy.open_session("s1").id == "s1"
    assert (
        flamepy.open_session(
            "s1", SessionAttributes(application="flmping", max_instances=2, common_data=b"x")
        ).id
        == "s1"
    )
    with pytest.raises(FlameError) as exc:
        flamepy.open_session("s1", SessionAttributes(application="flmping"))
    _error(
        exc,
        FlameErrorCode.INVALID_ARGUMENT,
        "failed to open session: session <s1> spec mismatch: "
        "max_instances differs (expected Some(2), got None)",
    )
    with pytest.raises(FlameError) as exc:
        flamepy.open_session(
            "s1", SessionAttributes(application="flmping", max_instances=2, resreq=ResourceRequirement(cpu=4))
        )
    _error(
        exc,
        FlameErrorCode.INVALID_ARGUMENT,
        "failed to open session: session <s1> spec mismatch: resreq differs (expected "
        "Some(ResourceRequirement { cpu: 1, memory: 1073741824, gpu: 0 }), got "
        "Some(ResourceRequirement { cpu: 4, memory: 0, gpu: 0 }))",
    )
    with pytest.raises(FlameError) as exc:
        flamepy.open_session("s1", SessionAttributes(application="flmrun", max_instances=2))
    assert "application differs (expected 'flmping', got 'flmrun')" in exc.value.message
    flamepy.close_session("s1")
    with pytest.raises(FlameError) as exc:
        flamepy.open_session("s1", spec)
    _error(exc, FlameErrorCode.INVALID_ARGUMENT, "failed to open session: Session s1 is not open")
    with pytest.raises(FlameError) as exc:
        flamepy.open_session("other", SessionAttributes(application="nope"))
    _error(exc, FlameErrorCode.NOT_FOUND, f"failed to open session: Application nope not found: {ENOENT}")


def test_get_and_list_sessions(address: str, state: ClusterState) -> None:
    with pytest.raises(FlameError) as exc:
        flamepy.get_session("nope")
    _error(exc, FlameErrorCode.INTERNAL, "failed to get session: nope")
    flamepy.create_session("flmping", session_id="a")
    flamepy.create_session("flmping", session_id="b").close()
    listed = {s.id: s.state for s in flamepy.list_sessions()}
    assert listed == {"a": SessionState.OPEN, "b": SessionState.CLOSED}
    # A bind failure is visible as a session event through GetSession and ListSession only.
    executor = state.create_executor("a", executors="test")
    state.bind_completed(executor.id, 12, "OnSessionEnter raised RuntimeError: nope")
    events = flamepy.get_session("a").events
    assert [e.code for e in events] == [1001]
    assert (
        "failed to bind session with return_code <12>: OnSessionEnter raised RuntimeError: nope"
        in events[0].message
    )
    assert [e.code for s in flamepy.list_sessions() if s.id == "a" for e in s.events] == [1001]
    assert flamepy.open_session("a").events == []


def test_close_session(address: str, state: ClusterState) -> None:
    session = flamepy.create_session("flmping", session_id="c")
    for i in range(3):
        session.create_task(f"in{i}".encode())
    executor = state.create_executor("c", executors="test")
    state.bind_completed(executor.id, 0, None)
    assert state.launch_task(executor.id, DEADLINE) is not None
    with pytest.raises(FlameError) as exc:
        flamepy.close_session("c")
    _error(exc, FlameErrorCode.INTERNAL, "failed to close session: Cannot close session with running tasks")
    state.complete_task(executor.id, 0, b"out", None)
    closed = flamepy.close_session("c")
    assert (closed.state, closed.succeed, closed.pending) == (SessionState.CLOSED, 1, 0)
    assert closed.completion_time is not None
    # flamepy 0.6.0's TaskState has no CANCELLED, so it cannot even decode a cancelled task:
    # that is the real client's behaviour against upstream too. Check the states on the wire.
    with pytest.raises(FlameError) as exc:
        list(session.list_tasks())
    _error(exc, FlameErrorCode.INTERNAL, "failed to list tasks: 4 is not a valid TaskState")
    channel, stub = raw_stub(address)
    with channel:
        tasks = stub.ListTask(pb.ListTaskRequest(session_id="c"), timeout=DEADLINE)
        states = {t.metadata.id: t.status.state for t in tasks}
    assert states == {"1": pb.Succeed, "2": pb.Cancelled, "3": pb.Cancelled}
    assert flamepy.close_session("c").state == SessionState.CLOSED  # idempotent
    with pytest.raises(FlameError) as exc:
        session.create_task(b"late")
    _error(exc, FlameErrorCode.INTERNAL, "failed to create task: Cannot create task in closed session")
    with pytest.raises(FlameError) as exc:
        flamepy.close_session("nope")
    _error(exc, FlameErrorCode.INTERNAL, "failed to close session: session <nope>")


# -- tasks ---------------------------------------------------------------------------------------


def test_create_get_list_tasks(address: str) -> None:
    session = flamepy.create_session("flmping", session_id="t")
    first = session.create_task(b"one")
    second = session.create_task(b"two")
    assert (first.id, second.id) == ("1", "2")
    assert first.state == TaskState.PENDING and first.events == []
    got = session.get_task("1")
    assert (got.input, got.output, got.state) == (b"one", None, TaskState.PENDING)
    assert [(e.code, e.message) for e in got.events] == [(0, "Task was created with state <Pending>")]
    assert sorted(t.id for t in session.list_tasks()) == ["1", "2"]
    with pytest.raises(FlameError) as exc:
        session.get_task("9")
    _error(exc, FlameErrorCode.INTERNAL, "failed to get task: 9")
    with pytest.raises(FlameError) as exc:
        session.get_task("abc")
    _error(exc, FlameErrorCode.INTERNAL, "failed to get task: invalid task id")
    gone = flamepy.create_session("flmping", session_id="gone")
    gone.id = "never-created"
    with pytest.raises(FlameError) as exc:
        list(gone.list_tasks())
    _error(exc, FlameErrorCode.INTERNAL, "failed to list tasks: never-created")


def test_run_resolves_with_output(address: str, state: ClusterState) -> None:
    session = flamepy.create_session("flmping", session_id="ok")
    future = session.run(b"in")
    _run_one(state, "ok", 0, b"result", None)
    assert future.result(timeout=DEADLINE) == b"result"
    task = session.get_task("1")
    assert [e.code for e in task.events] == [0, 1, 2]
    assert task.completion_time is not None and task.output == b"result"


def test_run_failure_raises_the_executors_message(address: str, state: ClusterState) -> None:
    session = flamepy.create_session("flmping", session_id="bad")
    future = session.run(b"in")
    _run_one(state, "bad", 1, None, "ValueError: the service raised")
    with pytest.raises(FlameError) as exc:
        future.result(timeout=DEADLINE)
    # The WatchTask messages carry the task's events (a superset of upstream), so flamepy raises
    # the executor's text rather than "Task failed without error message".
    _error(exc, FlameErrorCode.INTERNAL, "ValueError: the service raised")
    events = session.get_task("1").events
    assert [(e.code, e.message) for e in events][-1] == (3, "ValueError: the service raised")


def test_watch_task_stream(address: str, state: ClusterState) -> None:
    session = flamepy.create_session("flmping", session_id="w")
    session.create_task(b"x")
    seen: list[flamepy.Task] = []
    watcher = session.watch_task("1")
    thread = threading.Thread(target=lambda: seen.extend(watcher), daemon=True)
    thread.start()
    _run_one(state, "w", 0, b"out", None)
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert [t.state for t in seen] in ([TaskState.RUNNING, TaskState.SUCCEED], [TaskState.SUCCEED])
    assert seen[-1].output == b"out" and seen[-1].id == "1"
    # A terminal task is sent once and the stream ends.
    assert [t.state for t in session.watch_task("1")] == [TaskState.SUCCEED]


def test_watch_unknown_task_is_empty_and_bad_id_fails(address: str) -> None:
    session = flamepy.create_session("flmping", session_id="u")
    assert list(session.watch_task("42")) == []
    with pytest.raises(FlameError) as exc:
        list(session.watch_task("x"))
    _error(exc, FlameErrorCode.INTERNAL, "failed to watch task: invalid task id")


def test_watch_task_sees_cancellation(address: str) -> None:
    session = flamepy.create_session("flmping", session_id="cx")
    session.create_task(b"x")
    channel, stub = raw_stub(address)
    with channel:
        stream = stub.WatchTask(pb.WatchTaskRequest(session_id="cx", task_id="1"), timeout=DEADLINE)
        session.close()
        assert [t.status.state for t in stream] == [pb.Cancelled]  # one message, then OK
    # flamepy 0.6.0 cannot decode Cancelled (no such TaskState): its watcher raises, as upstream.
    with pytest.raises(FlameError) as exc:
        list(session.watch_task("1"))
    _error(exc, FlameErrorCode.INTERNAL, "failed to watch task: 4 is not a valid TaskState")


# -- nodes and executors -------------------------------------------------------------------------


def test_nodes_and_executors(address: str, state: ClusterState) -> None:
    (node,) = flamepy.list_nodes()
    assert node.metadata.name == "compat-node" and node.status.state == 1  # Ready
    assert list(node.status.addresses) == [] and node.status.last_heartbeat_time == 0
    assert node.status.capacity.cpu >= 1
    assert flamepy.list_executors() == []
    flamepy.create_session("flmping", session_id="e")
    executor = state.create_executor("e", executors="test")
    (listed,) = flamepy.list_executors()
    assert (listed.metadata.id, listed.status.state, listed.status.session_id) == (executor.id, 3, "e")
    assert listed.spec.node == "compat-node" and listed.spec.resreq.memory == 1073741824


# -- raw wire details flamepy does not expose ----------------------------------------------------


def test_result_wrapped_and_status_errors_on_the_wire(address: str) -> None:
    channel, stub = raw_stub(address)
    with channel:
        result = stub.RegisterApplication(
            pb.RegisterApplicationRequest(name="", application=pb.ApplicationSpec()), timeout=DEADLINE
        )
        assert (result.return_code, result.message) == (-1, "application name cannot be empty")
        ok = stub.RegisterApplication(
            pb.RegisterApplicationRequest(name="n", application=pb.ApplicationSpec()), timeout=DEADLINE
        )
        assert ok.return_code == 0 and not ok.HasField("message")
        cases = [
            (
                stub.RegisterApplication,
                pb.RegisterApplicationRequest(name="x"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "applilcation spec is missed",
            ),
            (
                stub.UpdateApplication,
                pb.UpdateApplicationRequest(name="x"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "applilcation spec is missed",
            ),
            (
                stub.CreateSession,
                pb.CreateSessionRequest(session_id="x"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "session spec",
            ),
            (stub.CreateTask, pb.CreateTaskRequest(), grpc.StatusCode.INVALID_ARGUMENT, "session spec"),
            (
                stub.GetApplication,
                pb.GetApplicationRequest(name="x"),
                grpc.StatusCode.NOT_FOUND,
                f"Application x not found: {ENOENT}",
            ),
            (
                stub.DeleteSession,
                pb.DeleteSessionRequest(session_id="x"),
                grpc.StatusCode.NOT_FOUND,
                "session <x>",
            ),
            (stub.GetNode, pb.GetNodeRequest(name="x"), grpc.StatusCode.NOT_FOUND, "node <x> not found"),
        ]
        for method, request, code, details in cases:
            with pytest.raises(grpc.RpcError) as exc:
                method(request, timeout=DEADLINE)
            assert (exc.value.code(), exc.value.details()) == (code, details)
        session = stub.CreateSession(
            pb.CreateSessionRequest(session_id="d", session=pb.SessionSpec(application="flmping")),
            timeout=DEADLINE,
        )
        assert session.spec.batch_size == 1 and session.spec.HasField("resreq")
        stub.CloseSession(pb.CloseSessionRequest(session_id="d"), timeout=DEADLINE)
        deleted = stub.DeleteSession(pb.DeleteSessionRequest(session_id="d"), timeout=DEADLINE)
        assert deleted.metadata.id == "d" and deleted.status.state == pb.Closed
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.ListTask(pb.ListTaskRequest(session_id="d"), timeout=DEADLINE))
        assert (exc.value.code(), exc.value.details()) == (grpc.StatusCode.NOT_FOUND, "d")


def test_cancelled_watch_frees_its_server_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    state = ClusterState()
    # One worker thread: if the cancelled watch kept it, the next call could never be served.
    with frontend_server(state, workers=1) as addr:
        state.create_session("s", SessionSpec(application="flmping"))
        state.create_task("s", b"x")
        channel, stub = raw_stub(addr)
        with channel:
            stream = stub.WatchTask(pb.WatchTaskRequest(session_id="s", task_id="1"))
            stream.cancel()
            reply = stub.GetSession(pb.GetSessionRequest(session_id="s"), timeout=DEADLINE)
            assert reply.metadata.id == "s"


def test_teardown_leaves_nothing_behind(resources: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    state = ClusterState()
    with frontend_server(state) as addr, flamepy_client(monkeypatch, addr):
        session = flamepy.create_session("flmping", session_id="hang")
        future = session.run(b"never runs")  # its watch stream stays open until the state stops
        state.stop()
        # A watch cut by shutdown ends UNAVAILABLE, so the future fails rather than hanging.
        with pytest.raises(FlameError) as exc:
            future.result(timeout=DEADLINE)
        _error(
            exc, FlameErrorCode.INTERNAL, "failed to watch task: the fake session manager is shutting down"
        )
    resources.assert_clean()  # no thread, socket or file of the server or the client remains


def test_two_servers_are_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = ClusterState(), ClusterState()
    with frontend_server(first) as addr1, frontend_server(second) as addr2:
        with flamepy_client(monkeypatch, addr1):
            flamepy.register_application("only-first", ApplicationAttributes(command="/bin/true"))
        with flamepy_client(monkeypatch, addr2):
            assert flamepy.get_application("only-first") is None
            assert sorted(a.name for a in flamepy.list_applications()) == ["flmexec", "flmping", "flmrun"]
