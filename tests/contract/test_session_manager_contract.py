"""The session manager's client-visible contract, end to end through the wire, on every backend.

Each test runs against the fake cluster and a real Flame v0.6.0 (``flame_backend``; the real one
skips with the reason when unavailable). Tests talk through flamepy 0.6.0 (``flamepy_client``)
where it shows what a user sees, and through raw ``flame.v1`` gRPC (``frontend``) where the
status code, the ``Result`` wrapping or a field flamepy hides is the contract. Expected texts
are written out here from ``shared/reference/session-manager.md`` (never imported from the fake),
so a drift on either side fails.

The clusters are shared by all tests, so every test uses its own names (``names``), asserts
``subset`` rather than equality on listings, and gets its sessions closed and applications
unregistered afterwards. Tasks that must stay Pending belong to a ``Wasm`` application, which
neither Flame's scheduler nor the fake's ever gives an executor.

Two tests run scripts on the default ``flmexec`` application and so assume what the fake's
flmexec documents of the real one: it runs ``python`` code, and a task whose input is not JSON
fails with the service's message.

Detailed state-model behaviour lives in ``tests/unit/test_state.py`` and the flamepy mapping of
every error in ``tests/compat/test_frontend_flamepy.py``; this file is the focused subset that
must hold on a real cluster too.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from _backends import FlameBackend, Names
from support import eventually

from flamepy_runner._proto import pb

ENOENT = "No such file or directory (os error 2)"
GIB = 1 << 30
CALL = 10.0  # deadline of every unary call
RUN = 90.0  # how long a task may take to run on an executor (a real one may start a process)
TERMINAL = (pb.Succeed, pb.Failed, pb.Cancelled)
# Wide enough for a second-precision server and any clock skew, narrow enough to tell ms from s.
TEN_MINUTES_MS = 10 * 60 * 1000

T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def status(call: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
    """The status a unary (or streaming, drained) call fails with."""
    with pytest.raises(grpc.RpcError) as exc:
        reply = call(request, timeout=CALL)
        if not hasattr(reply, "ListFields"):  # a stream: the error comes while reading
            list(reply)
    return exc.value.code(), exc.value.details()


def result(call: Callable[..., Any], request: Any) -> tuple[int, str | None]:
    """A Result-wrapped reply as ``(return_code, message or None)``; the call itself is OK."""
    reply = call(request, timeout=CALL)
    return reply.return_code, (reply.message if reply.HasField("message") else None)


def register(frontend: Any, name: str, **spec: Any) -> None:
    assert result(
        frontend.RegisterApplication,
        pb.RegisterApplicationRequest(name=name, application=pb.ApplicationSpec(**spec)),
    ) == (0, None)


def parked_app(frontend: Any, names: Names) -> str:
    """A Wasm application: its sessions' tasks stay Pending on every backend."""
    name = names.app("parked")
    register(frontend, name, shim=pb.Wasm, command="/bin/true")
    return name


def create_session(frontend: Any, session_id: str, application: str, **spec: Any) -> Any:
    return frontend.CreateSession(
        pb.CreateSessionRequest(
            session_id=session_id, session=pb.SessionSpec(application=application, **spec)
        ),
        timeout=CALL,
    )


def create_task(frontend: Any, session_id: str, data: bytes | None) -> Any:
    return frontend.CreateTask(
        pb.CreateTaskRequest(task=pb.TaskSpec(session_id=session_id, input=data)), timeout=CALL
    )


def get_task(frontend: Any, session_id: str, task_id: str) -> Any:
    return frontend.GetTask(pb.GetTaskRequest(session_id=session_id, task_id=task_id), timeout=CALL)


def watch(frontend: Any, session_id: str, task_id: str, timeout: float = RUN) -> list[Any]:
    stream = frontend.WatchTask(pb.WatchTaskRequest(session_id=session_id, task_id=task_id), timeout=timeout)
    return list(stream)


def events(message: Any) -> list[tuple[int, str]]:
    return [(e.code, e.message) for e in message.status.events]


def resreq(message: Any) -> tuple[int, int, int]:
    return (message.cpu, message.memory, message.gpu)


def assert_epoch_ms(value: int) -> None:
    now_ms = int(time.time() * 1000)
    assert abs(value - now_ms) < TEN_MINUTES_MS, f"{value} is not an epoch time in milliseconds"


# --------------------------------------------------------------------------- applications

FLMRUN_ARGUMENTS = [
    "run",
    "--python",
    "python${FLAME_PYTHON_VERSION}",
    "python",
    "-m",
    "flamepy.runner.runpy",
]
FLMEXEC_INPUT_SCHEMA = (
    '{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":'
    '{"language":{"type":"string","description":"The language of the script, e.g. python"},'
    '"code":{"type":"string","description":"The code of the script to run, e.g. print(\'Hello, world!\')"},'
    '"input":{"type":"array","items":{"type":"integer",'
    '"description":"The input to the script in bytes, e.g. [0x1, 0x2]"}}},"required":["language","code"]}'
)
FLMEXEC_OUTPUT_SCHEMA = (
    '{"$schema":"http://json-schema.org/draft-07/schema#","type":"string",'
    '"description":"The output of the script in UTF-8."}'
)


def test_default_applications_have_upstreams_specs(flamepy_client: Any, frontend: Any) -> None:
    listed = {a.name for a in flamepy_client.list_applications()}
    assert {"flmexec", "flmping", "flmrun"} <= listed  # other tests' apps may be there too
    defaults = ("flmexec", "flmping", "flmrun")
    apps = {n: frontend.GetApplication(pb.GetApplicationRequest(name=n), timeout=CALL) for n in defaults}

    flmrun = apps["flmrun"].spec
    assert (flmrun.command, list(flmrun.arguments), flmrun.installer) == (
        "${FLAME_HOME}/bin/uv",
        FLMRUN_ARGUMENTS,
        "python",
    )
    assert flmrun.description == "The Flame Runner application for executing customized Python applications."
    assert not flmrun.HasField("url") and not flmrun.HasField("working_directory")

    flmping = apps["flmping"].spec
    assert flmping.command == "${FLAME_HOME}/bin/flmping-service"
    assert flmping.url == "file://${FLAME_HOME}/bin/flmping-service"
    assert not flmping.HasField("installer") and not flmping.HasField("description")

    flmexec = apps["flmexec"].spec
    assert flmexec.command == "${FLAME_HOME}/bin/flmexec-service"
    assert flmexec.description == "The Flame Executor application, which is used to run scripts."
    # Byte-exact (v0.6.0.md section 6): compact JSON, keys in upstream's order, with descriptions.
    assert flmexec.schema.input == FLMEXEC_INPUT_SCHEMA
    assert flmexec.schema.output == FLMEXEC_OUTPUT_SCHEMA
    assert not flmexec.schema.HasField("common_data")

    for name in defaults:
        app = apps[name]
        assert app.metadata.id == app.metadata.name == name
        assert (app.spec.shim, app.spec.max_instances, app.spec.delay_release) == (pb.Host, 1000000, 60)
        assert app.status.state == pb.Enabled
        assert app.spec.HasField("schema")  # present even where empty
        assert list(app.spec.labels) == [] and list(app.spec.environments) == []
    assert not apps["flmrun"].spec.schema.HasField("input")


def test_application_round_trip_echoes_defaults(flamepy_client: Any, names: Names) -> None:
    from flamepy import ApplicationAttributes

    name = names.app()
    flamepy_client.register_application(
        name,
        ApplicationAttributes(command="/bin/true", arguments=["-x"], environments={"K": "v"}, labels=["l"]),
    )
    app = flamepy_client.get_application(name)
    assert app is not None
    assert (app.name, app.command, app.arguments, app.environments, app.labels) == (
        name,
        "/bin/true",
        ["-x"],
        {"K": "v"},
        ["l"],
    )
    assert (app.max_instances, app.delay_release) == (1000000, 60)  # defaults echoed back
    assert (app.url, app.installer, app.working_directory) == (None, None, None)
    assert_epoch_ms(int(app.creation_time.timestamp() * 1000))
    assert name in {a.name for a in flamepy_client.list_applications()}

    flamepy_client.unregister_application(name)
    assert flamepy_client.get_application(name) is None  # NOT_FOUND becomes None
    assert name not in {a.name for a in flamepy_client.list_applications()}


def test_application_errors_are_result_wrapped(frontend: Any, names: Names) -> None:
    name = names.app()
    register(frontend, name, command="/bin/true")
    assert result(
        frontend.RegisterApplication,
        pb.RegisterApplicationRequest(name=name, application=pb.ApplicationSpec(command="/bin/false")),
    ) == (-1, f"Application '{name}' already exists")
    ssn = names.session()
    create_session(frontend, ssn, name)
    unregister = pb.UnregisterApplicationRequest(name=name)
    assert result(frontend.UnregisterApplication, unregister) == (
        -1,
        f"Cannot unregister application '{name}': has open sessions",
    )
    frontend.CloseSession(pb.CloseSessionRequest(session_id=ssn), timeout=CALL)
    assert result(frontend.UnregisterApplication, unregister) == (0, None)
    # Unregistering drops the application's sessions, closed ones included.
    assert status(frontend.GetSession, pb.GetSessionRequest(session_id=ssn)) == (
        grpc.StatusCode.NOT_FOUND,
        ssn,
    )
    assert result(frontend.UnregisterApplication, unregister) == (
        -1,
        f"Failed to delete application '{name}': {ENOENT}",
    )
    assert status(frontend.GetApplication, pb.GetApplicationRequest(name=name)) == (
        grpc.StatusCode.NOT_FOUND,
        f"Application {name} not found: {ENOENT}",
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "application name cannot be empty"),
        ("a" * 254, "application name exceeds maximum length of 253 characters"),
        ("ct..x", "application name contains invalid characters (path traversal): ct..x"),
        ("ct/x", "application name contains invalid characters (path traversal): ct/x"),
        (".ct", "application name cannot start with '.' or '-': .ct"),
        ("-ct", "application name cannot start with '.' or '-': -ct"),
        (
            "ct x",
            "application name contains invalid characters (only alphanumeric, '-', '_', '.' allowed): ct x",
        ),
    ],
    ids=["empty", "too-long", "dots", "slash", "leading-dot", "leading-dash", "space"],
)
def test_application_name_validation(frontend: Any, name: str, message: str) -> None:
    request = pb.RegisterApplicationRequest(name=name, application=pb.ApplicationSpec(command="/bin/true"))
    assert result(frontend.RegisterApplication, request) == (-1, message)
    if name:
        assert (
            status(frontend.GetApplication, pb.GetApplicationRequest(name=name))[0]
            == grpc.StatusCode.NOT_FOUND
        )


def test_application_prechecks_are_invalid_argument(frontend: Any, names: Names) -> None:
    name = names.app()
    assert status(frontend.RegisterApplication, pb.RegisterApplicationRequest(name=name)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "applilcation spec is missed",  # upstream's typo
    )
    code, details = status(
        frontend.RegisterApplication,
        pb.RegisterApplicationRequest(
            name=name, application=pb.ApplicationSpec(schema=pb.ApplicationSchema(input="{not json"))
        ),
    )
    # Prefix only: the reference gives no text for the parser's error that follows it.
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("invalid input schema: ")
    assert status(
        frontend.RegisterApplication,
        pb.RegisterApplicationRequest(name=name, application=pb.ApplicationSpec(working_directory="rel/dir")),
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "working_directory must be an absolute path, got: rel/dir")
    assert (
        status(frontend.GetApplication, pb.GetApplicationRequest(name=name))[0] == grpc.StatusCode.NOT_FOUND
    )


# --------------------------------------------------------------------------- sessions


def test_create_session_resolves_resreq_and_echoes_batch_size(
    flame_backend: FlameBackend, frontend: Any, names: Names
) -> None:
    app = parked_app(frontend, names)
    ssn = create_session(
        frontend,
        names.session("a"),
        app,
        common_data=b"cd",
        min_instances=1,
        max_instances=3,
        batch_size=1,
        priority=7,
    )
    assert ssn.metadata.id == ssn.metadata.name == names.session("a")
    assert (ssn.spec.application, ssn.spec.common_data, ssn.spec.min_instances, ssn.spec.max_instances) == (
        app,
        b"cd",
        1,
        3,
    )
    assert (ssn.spec.batch_size, ssn.spec.priority) == (1, 7)
    assert ssn.spec.HasField("resreq")  # resolved, always present
    if flame_backend.default_resreq is not None:
        assert resreq(ssn.spec.resreq) == flame_backend.default_resreq
    status_ = ssn.status
    assert status_.state == pb.Open and not status_.HasField("completion_time")
    assert (status_.pending, status_.running, status_.succeed, status_.failed, status_.cancelled) == (0,) * 5
    assert list(status_.events) == []
    assert_epoch_ms(status_.creation_time)

    explicit = create_session(
        frontend, names.session("b"), app, resreq=pb.ResourceRequirement(cpu=0, memory=0, gpu=0)
    )
    assert explicit.spec.HasField("resreq") and resreq(explicit.spec.resreq) == (0, 0, 0)  # verbatim
    assert not explicit.spec.HasField("max_instances") and explicit.spec.batch_size == 1


@pytest.mark.parametrize(
    ("spec", "stored"),
    [
        ({}, 1),  # unset (0) is stored as 1
        ({"batch_size": 2, "min_instances": 2, "max_instances": 4}, 2),
        ({"batch_size": 2, "max_instances": 0}, 2),  # Some(0) is a multiple
    ],
    ids=["unset", "aligned", "max-zero"],
)
def test_batch_size_is_stored_and_echoed(
    frontend: Any, names: Names, spec: dict[str, int], stored: int
) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    assert create_session(frontend, sid, app, **spec).spec.batch_size == stored
    assert frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL).spec.batch_size == stored
    listed = frontend.ListSession(pb.ListSessionRequest(), timeout=CALL).sessions
    assert [s.spec.batch_size for s in listed if s.metadata.id == sid] == [stored]
    opened = frontend.OpenSession(pb.OpenSessionRequest(session_id=sid), timeout=CALL)
    assert opened.spec.batch_size == stored
    closed = frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    assert closed.spec.batch_size == stored
    deleted = frontend.DeleteSession(pb.DeleteSessionRequest(session_id=sid), timeout=CALL)
    assert deleted.spec.batch_size == stored


BATCH_MIN_TEXT = "min_instances (1) must be 0 or a multiple of batch_size (2)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"batch_size": 2, "min_instances": 1}, BATCH_MIN_TEXT),
        ({"batch_size": 2, "min_instances": 3, "max_instances": 4}, BATCH_MIN_TEXT.replace("(1)", "(3)")),
        ({"batch_size": 2, "max_instances": 3}, "max_instances (3) must be a multiple of batch_size (2)"),
        (  # min_instances first
            {"batch_size": 3, "min_instances": 2, "max_instances": 2},
            "min_instances (2) must be 0 or a multiple of batch_size (3)",
        ),
    ],
    ids=["min-below", "min-above", "max", "min-first"],
)
def test_batch_size_alignment_is_checked_before_anything_else(
    frontend: Any, names: Names, spec: dict[str, int], message: str
) -> None:
    app = parked_app(frontend, names)
    invalid = (grpc.StatusCode.INVALID_ARGUMENT, message)
    sid = names.session()
    assert (
        status(
            frontend.CreateSession,
            pb.CreateSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec)),
        )
        == invalid
    )
    missing = names.app("missing")  # before the application lookup
    assert (
        status(
            frontend.CreateSession,
            pb.CreateSessionRequest(session_id=sid, session=pb.SessionSpec(application=missing, **spec)),
        )
        == invalid
    )
    # OpenSession: before every session lookup (unknown, open with another spec, closed).
    assert (
        status(
            frontend.OpenSession,
            pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec)),
        )
        == invalid
    )
    create_session(frontend, sid, app)
    assert (
        status(
            frontend.OpenSession,
            pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec)),
        )
        == invalid
    )
    frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    assert (
        status(
            frontend.OpenSession,
            pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec)),
        )
        == invalid
    )


def test_batch_size_alignment_through_flamepy(flamepy_client: Any, frontend: Any, names: Names) -> None:
    from flamepy import FlameError, FlameErrorCode

    app = parked_app(frontend, names)
    with pytest.raises(FlameError) as exc:
        flamepy_client.create_session(app, session_id=names.session(), min_instances=1, batch_size=2)
    assert (exc.value.code, exc.value.message) == (
        FlameErrorCode.INTERNAL,
        f"failed to create session: {BATCH_MIN_TEXT}",
    )


def test_open_session_compares_batch_size(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    one, two = names.session("one"), names.session("two")
    create_session(frontend, one, app)
    create_session(frontend, two, app, batch_size=2)

    def open_(sid: str, **spec: Any) -> Any:
        request = pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec))
        return frontend.OpenSession(request, timeout=CALL)

    assert open_(one, batch_size=0).spec.batch_size == 1  # both sides normalised by max(B, 1)
    assert open_(one, batch_size=1).spec.batch_size == 1
    assert open_(two, batch_size=2).spec.batch_size == 2
    for sid, spec, expected, got in (
        (two, {}, 2, 1),
        (two, {"batch_size": 4, "priority": 1}, 2, 4),
        (one, {"batch_size": 2}, 1, 2),
    ):
        request = pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app, **spec))
        assert status(frontend.OpenSession, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"session <{sid}> spec mismatch: batch_size differs (expected {expected}, got {got})",
        )


def test_create_session_errors(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    assert status(
        frontend.CreateSession,
        pb.CreateSessionRequest(session_id=sid, session=pb.SessionSpec(application=app)),
    ) == (
        grpc.StatusCode.ALREADY_EXISTS,
        f"Session '{sid}' already exists",
    )
    missing = names.app("missing")
    # The application is checked before the duplicate id.
    assert status(
        frontend.CreateSession,
        pb.CreateSessionRequest(session_id=sid, session=pb.SessionSpec(application=missing)),
    ) == (grpc.StatusCode.NOT_FOUND, f"Application {missing} not found: {ENOENT}")
    assert status(frontend.CreateSession, pb.CreateSessionRequest(session_id=names.session("x"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "session spec",
    )


def test_create_session_through_flamepy(flamepy_client: Any, frontend: Any, names: Names) -> None:
    from flamepy import FlameError, FlameErrorCode, ResourceRequirement, SessionState

    app = parked_app(frontend, names)
    session = flamepy_client.create_session(
        app, common_data=b"shared", session_id=names.session(), resreq=ResourceRequirement(cpu=2, memory=GIB)
    )
    assert (session.id, session.application, session.state) == (names.session(), app, SessionState.OPEN)
    assert session.common_data() == b"shared" and session.completion_time is None
    got = frontend.GetSession(pb.GetSessionRequest(session_id=names.session()), timeout=CALL)
    assert resreq(got.spec.resreq) == (2, GIB, 0)
    with pytest.raises(FlameError) as exc:
        flamepy_client.create_session(app, session_id=names.session())
    # flamepy reports every create_session failure as INTERNAL; only the text survives.
    assert (exc.value.code, exc.value.message) == (
        FlameErrorCode.INTERNAL,
        f"failed to create session: Session '{names.session()}' already exists",
    )


def test_open_session_gets_or_creates(flamepy_client: Any, frontend: Any, names: Names) -> None:
    from flamepy import FlameError, FlameErrorCode, SessionAttributes, SessionState

    app = parked_app(frontend, names)
    sid = names.session()
    with pytest.raises(FlameError) as exc:
        flamepy_client.open_session(sid)
    assert (exc.value.code, exc.value.message) == (
        FlameErrorCode.NOT_FOUND,
        f"failed to open session: Session {sid} not found",
    )
    created = flamepy_client.open_session(
        sid, SessionAttributes(application=app, max_instances=2, common_data=b"a")
    )
    assert (created.id, created.state) == (sid, SessionState.OPEN)
    frontend.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id=sid, input=b"x")), timeout=CALL)
    again = flamepy_client.open_session(sid)
    assert (again.id, again.pending, again.events) == (sid, 1, [])  # live counters
    # common_data is not compared, so a different one still opens the same session.
    same = flamepy_client.open_session(
        sid, SessionAttributes(application=app, max_instances=2, common_data=b"b")
    )
    assert same.id == sid and same.common_data() == b"a"
    missing = names.app("missing")
    with pytest.raises(FlameError) as exc:
        flamepy_client.open_session(names.session("other"), SessionAttributes(application=missing))
    assert (exc.value.code, exc.value.message) == (
        FlameErrorCode.NOT_FOUND,
        f"failed to open session: Application {missing} not found: {ENOENT}",
    )


RESREQ_2 = "Some(ResourceRequirement { cpu: 2, memory: 2147483648, gpu: 0 })"


@pytest.mark.parametrize(
    ("change", "field", "expected", "got"),
    [
        ({"application": "{other}"}, "application", "'{app}'", "'{other}'"),
        (
            {"resreq": pb.ResourceRequirement(cpu=4)},
            "resreq",
            RESREQ_2,
            "Some(ResourceRequirement { cpu: 4, memory: 0, gpu: 0 })",
        ),
        ({"min_instances": 2}, "min_instances", "1", "2"),
        ({"max_instances": None}, "max_instances", "Some(3)", "None"),
        ({"max_instances": 4}, "max_instances", "Some(3)", "Some(4)"),
        ({"priority": 9}, "priority", "5", "9"),
    ],
    ids=["application", "resreq", "min_instances", "max_instances-unset", "max_instances", "priority"],
)
def test_open_session_spec_mismatch_names_the_field(
    frontend: Any, names: Names, change: dict[str, Any], field: str, expected: str, got: str
) -> None:
    app = parked_app(frontend, names)
    other = names.app("other")
    register(frontend, other, shim=pb.Wasm, command="/bin/true")
    sid = names.session()
    base: dict[str, Any] = {
        "application": app,
        "resreq": pb.ResourceRequirement(cpu=2, memory=2 * GIB),
        "min_instances": 1,
        "max_instances": 3,
        "priority": 5,
    }
    frontend.OpenSession(pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(**base)), timeout=CALL)
    spec = {**base, **change}
    if spec["application"] == "{other}":
        spec["application"] = other
    spec = {k: v for k, v in spec.items() if v is not None}
    expected, got = (s.replace("{app}", app).replace("{other}", other) for s in (expected, got))
    assert status(
        frontend.OpenSession, pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(**spec))
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"session <{sid}> spec mismatch: {field} differs (expected {expected}, got {got})",
    )


def test_open_closed_session_is_not_open(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    for request in (
        pb.OpenSessionRequest(session_id=sid),
        pb.OpenSessionRequest(session_id=sid, session=pb.SessionSpec(application=app)),
    ):
        assert status(frontend.OpenSession, request) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Session {sid} is not open",
        )
    # Not re-created: still the closed session.
    assert frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL).status.state == pb.Closed


def test_close_session_cancels_pending_tasks_and_is_idempotent(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    for i in range(3):
        create_task(frontend, sid, f"in{i}".encode())
    closed = frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    counters = (closed.status.pending, closed.status.running, closed.status.succeed, closed.status.failed)
    assert closed.status.state == pb.Closed and counters == (0, 0, 0, 0) and closed.status.cancelled == 3
    assert closed.status.HasField("completion_time") and list(closed.status.events) == []
    assert_epoch_ms(closed.status.completion_time)
    tasks = list(frontend.ListTask(pb.ListTaskRequest(session_id=sid), timeout=CALL))
    assert sorted(t.metadata.id for t in tasks) == ["1", "2", "3"]
    assert {t.status.state for t in tasks} == {pb.Cancelled}
    cancelled = get_task(frontend, sid, "2")
    assert cancelled.status.HasField("completion_time")
    assert events(cancelled) == [(0, "Task was created with state <Pending>")]  # no event for cancelling

    again = frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    assert again.status.state == pb.Closed and again.status.cancelled == 3
    assert again.status.completion_time >= closed.status.completion_time
    assert status(
        frontend.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(session_id=sid, input=b"late"))
    ) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Cannot create task in closed session",
    )
    unknown = names.session("unknown")
    assert status(frontend.CloseSession, pb.CloseSessionRequest(session_id=unknown)) == (
        grpc.StatusCode.NOT_FOUND,
        f"session <{unknown}>",
    )


def test_get_and_list_sessions_keep_closed_sessions(flamepy_client: Any, frontend: Any, names: Names) -> None:
    from flamepy import FlameError, FlameErrorCode, SessionState

    app = parked_app(frontend, names)
    open_id, closed_id = names.session("open"), names.session("closed")
    create_session(frontend, open_id, app)
    create_session(frontend, closed_id, app)
    frontend.CloseSession(pb.CloseSessionRequest(session_id=closed_id), timeout=CALL)
    listed = {
        s.metadata.id: s.status.state
        for s in frontend.ListSession(pb.ListSessionRequest(), timeout=CALL).sessions
        if names.owns(s.metadata.id)
    }
    assert listed == {open_id: pb.Open, closed_id: pb.Closed}
    assert flamepy_client.get_session(closed_id).state == SessionState.CLOSED
    assert {s.id for s in flamepy_client.list_sessions()} >= {open_id, closed_id}
    unknown = names.session("unknown")
    assert status(frontend.GetSession, pb.GetSessionRequest(session_id=unknown)) == (
        grpc.StatusCode.NOT_FOUND,
        unknown,  # the bare id
    )
    with pytest.raises(FlameError) as exc:
        flamepy_client.get_session(unknown)
    assert (exc.value.code, exc.value.message) == (
        FlameErrorCode.INTERNAL,
        f"failed to get session: {unknown}",
    )


def test_delete_session_guards(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    create_task(frontend, sid, b"x")
    delete = pb.DeleteSessionRequest(session_id=sid)
    assert status(frontend.DeleteSession, delete) == (grpc.StatusCode.INTERNAL, "Cannot delete open session")
    frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    deleted = frontend.DeleteSession(delete, timeout=CALL)
    assert (deleted.metadata.id, deleted.status.state, deleted.status.cancelled) == (sid, pb.Closed, 1)
    assert status(frontend.GetSession, pb.GetSessionRequest(session_id=sid)) == (
        grpc.StatusCode.NOT_FOUND,
        sid,
    )
    assert status(frontend.DeleteSession, delete) == (grpc.StatusCode.NOT_FOUND, f"session <{sid}>")
    create_session(frontend, sid, app)  # the id can be reused


# --------------------------------------------------------------------------- tasks


def test_task_ids_count_from_one_per_session(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    first, second = names.session("one"), names.session("two")
    for sid in (first, second):
        create_session(frontend, sid, app)
    made = [
        create_task(frontend, first, b"a"),
        create_task(frontend, first, b"b"),
        create_task(frontend, second, b"c"),
    ]
    assert [(t.metadata.id, t.metadata.name, t.spec.session_id) for t in made] == [
        ("1", "1", first),
        ("2", "2", first),
        ("1", "1", second),
    ]
    for task in made:
        assert task.status.state == pb.Pending and list(task.status.events) == []  # CreateTask echoes none
        assert_epoch_ms(task.status.creation_time)
    got = get_task(frontend, first, "2")
    assert (got.spec.input, got.status.state, got.spec.HasField("output")) == (b"b", pb.Pending, False)
    assert events(got) == [(0, "Task was created with state <Pending>")]
    session = frontend.GetSession(pb.GetSessionRequest(session_id=first), timeout=CALL)
    assert (session.status.pending, session.status.running) == (2, 0)
    listed = list(frontend.ListTask(pb.ListTaskRequest(session_id=first), timeout=CALL))
    assert sorted(t.metadata.id for t in listed) == ["1", "2"]


def test_task_lookup_errors(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    unknown = names.session("unknown")
    assert status(frontend.GetTask, pb.GetTaskRequest(session_id=sid, task_id="abc")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid task id",
    )
    assert status(frontend.GetTask, pb.GetTaskRequest(session_id=sid, task_id="7")) == (
        grpc.StatusCode.NOT_FOUND,
        "7",
    )
    assert status(frontend.GetTask, pb.GetTaskRequest(session_id=unknown, task_id="1")) == (
        grpc.StatusCode.NOT_FOUND,
        unknown,
    )
    assert status(
        frontend.CreateTask, pb.CreateTaskRequest(task=pb.TaskSpec(session_id=unknown, input=b"x"))
    ) == (
        grpc.StatusCode.NOT_FOUND,
        f"Session {unknown} not found: {ENOENT}",
    )
    assert status(frontend.CreateTask, pb.CreateTaskRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "session spec",
    )
    assert status(frontend.ListTask, pb.ListTaskRequest(session_id=unknown)) == (
        grpc.StatusCode.NOT_FOUND,
        unknown,
    )


def test_task_runs_to_succeed_with_events(flamepy_client: Any, frontend: Any, names: Names) -> None:
    sid = names.session()
    session = flamepy_client.create_session("flmping", session_id=sid)
    task = session.create_task(b"{}")
    assert task.id == "1"
    seen = watch(frontend, sid, "1")
    # Pending is never sent; Running may be missed if the task finished first.
    assert [t.status.state for t in seen] in ([pb.Running, pb.Succeed], [pb.Succeed])
    final = get_task(frontend, sid, "1")
    assert final.status.state == pb.Succeed and final.status.HasField("completion_time")
    assert seen[-1].spec.output == final.spec.output  # the terminal message carries the output
    assert PING_REPLY.fullmatch(final.spec.output), final.spec.output
    assert events(final) == [
        (0, "Task was created with state <Pending>"),
        (1, "Task state was updated to <Running>"),
        (2, "Task was completed with state <Succeed>"),
    ]
    assert final.status.completion_time >= final.status.creation_time
    counters = frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL).status
    assert (counters.pending, counters.running, counters.succeed, counters.failed) == (0, 0, 1, 0)
    # flamepy's view of the same task.
    mirrored = session.get_task("1")
    assert [e.code for e in mirrored.events] == [0, 1, 2] and mirrored.output == final.spec.output
    assert flamepy_client.close_session(sid).succeed == 1


# flmping-service's reply (v0.6.0.md section 5): compact JSON, literal angle brackets.
PING_REPLY = re.compile(rb'\{"message":"Completed on <[^<>"]+> in <\d+> milliseconds with <0> memory"\}')


def test_flmping_replies_with_the_node_the_time_and_the_memory(frontend: Any, names: Names) -> None:
    sid = names.session()
    create_session(frontend, sid, "flmping")
    for data in (
        None,
        b"",
        b'{"duration":null}',
        b'{"foo":1}',
        b"[1,0]",
        b'{"memory":1048576,"duration":20}',
    ):
        task = create_task(frontend, sid, data)
        assert watch(frontend, sid, task.metadata.id)[-1].status.state == pb.Succeed
    listed = frontend.ListTask(pb.ListTaskRequest(session_id=sid), timeout=CALL)
    outputs = [
        t.spec.output for t in sorted(listed, key=lambda t: int(t.metadata.id))
    ]  # ListTask is unordered
    assert len(outputs) == 6
    for output in outputs[:5]:
        assert PING_REPLY.fullmatch(output), output
    last = re.fullmatch(
        rb'\{"message":"Completed on <[^<>"]+> in <(\d+)> milliseconds with <1048576> memory"\}', outputs[5]
    )
    assert last is not None and int(last.group(1)) >= 20, outputs[5]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ping", "expected value at line 1 column 1"),
        (b'{"duration":-1}', "invalid value: integer `-1`, expected u64 at line 1 column 14"),
        (b"[5]", "invalid length 1, expected struct PingRequest with 2 elements at line 1 column 3"),
    ],
    ids=["not-json", "negative", "short-array"],
)
def test_failed_task_keeps_the_executors_message(
    frontend: Any, names: Names, data: bytes, message: str
) -> None:
    sid = names.session()
    create_session(frontend, sid, "flmping")
    create_task(frontend, sid, data)
    assert watch(frontend, sid, "1")[-1].status.state == pb.Failed
    failed = get_task(frontend, sid, "1")
    assert events(failed) == [
        (0, "Task was created with state <Pending>"),
        (1, "Task state was updated to <Running>"),
        (3, message),  # serde_json's text, verbatim from the executor
    ]
    assert not failed.spec.HasField("output")
    assert failed.status.HasField("completion_time")
    counters = frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL).status
    assert (counters.succeed, counters.failed) == (0, 1)


@pytest.mark.parametrize(
    ("data", "state", "output", "message"),
    [
        (b'{"language":"shell","code":"echo hi"}', pb.Succeed, b'{"data":[104,105,10]}', None),
        (b'{"language":"SHELL","code":"exit 3"}', pb.Succeed, b'{"data":[]}', None),  # exit status ignored
        (
            b'{"language":"python","code":"import sys; print(sys.stdin.read()[::-1])","input":[97,98]}',
            pb.Succeed,
            b'{"data":[98,97,10]}',
            None,
        ),
        (None, pb.Failed, None, "missing task input"),
        (b'{"language":"ruby","code":"puts 1"}', pb.Failed, None, "Unsupported language: ruby"),
        (b'{"code":"x"}', pb.Failed, None, "missing field `language` at line 1 column 12"),
    ],
    ids=["shell", "exit-status", "python-stdin", "no-input", "ruby", "no-language"],
)
def test_flmexec_runs_scripts_like_the_real_service(
    frontend: Any, names: Names, data: bytes | None, state: int, output: bytes | None, message: str | None
) -> None:
    sid = names.session()
    create_session(frontend, sid, "flmexec")
    create_task(frontend, sid, data)
    assert watch(frontend, sid, "1")[-1].status.state == state
    task = get_task(frontend, sid, "1")
    assert (task.spec.output if task.spec.HasField("output") else None) == output
    final = (2, "Task was completed with state <Succeed>") if message is None else (3, message)
    assert events(task) == [
        (0, "Task was created with state <Pending>"),
        (1, "Task state was updated to <Running>"),
        final,
    ]


def test_close_session_is_refused_while_a_task_runs(frontend: Any, names: Names, tmp_path: Path) -> None:
    release = tmp_path / "release"
    # Runs until the file appears (the fake's executors share this file system) or ~20 s pass
    # (a real executor never sees the file), so the test holds on both without a timed race.
    script = (
        "import os, time\n"
        "deadline = time.time() + 20\n"
        f"while not os.path.exists({str(release)!r}) and time.time() < deadline:\n"
        "    time.sleep(0.05)\n"
    )
    sid = names.session()
    create_session(frontend, sid, "flmexec")
    create_task(frontend, sid, json.dumps({"language": "python", "code": script}).encode())
    eventually(
        lambda: get_task(frontend, sid, "1").status.state == pb.Running, "the task to run", timeout=RUN
    )
    assert status(frontend.CloseSession, pb.CloseSessionRequest(session_id=sid)) == (
        grpc.StatusCode.INTERNAL,
        "Cannot close session with running tasks",
    )
    assert frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL).status.state == pb.Open
    release.touch()
    assert watch(frontend, sid, "1")[-1].status.state == pb.Succeed
    closed = frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    assert (closed.status.state, closed.status.succeed) == (pb.Closed, 1)


def test_watch_on_a_terminal_task_sends_it_once_and_ends(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    create_task(frontend, sid, b"x")
    frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
    (only,) = watch(frontend, sid, "1", timeout=CALL)  # ends by itself, well before the deadline
    assert (only.metadata.id, only.spec.session_id, only.status.state) == ("1", sid, pb.Cancelled)


def test_watch_sees_a_cancellation_and_ends(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    create_task(frontend, sid, b"x")
    stream = frontend.WatchTask(pb.WatchTaskRequest(session_id=sid, task_id="1"), timeout=RUN)
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: seen.extend(stream), name="contract-watch", daemon=True)
    reader.start()
    try:
        frontend.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=CALL)
        reader.join(RUN)
    finally:
        stream.cancel()
    assert not reader.is_alive()
    assert [t.status.state for t in seen] == [pb.Cancelled]  # no initial Pending message


def test_watch_unknown_task_is_an_empty_ok_stream(frontend: Any, names: Names) -> None:
    app = parked_app(frontend, names)
    sid = names.session()
    create_session(frontend, sid, app)
    assert watch(frontend, sid, "42", timeout=CALL) == []
    assert watch(frontend, names.session("unknown"), "1", timeout=CALL) == []
    assert status(frontend.WatchTask, pb.WatchTaskRequest(session_id=sid, task_id="x")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid task id",
    )


@pytest.mark.fake_only(reason="upstream's WatchTask messages carry no events; the fake attaches them")
def test_watch_messages_carry_the_task_events(flamepy_client: Any, frontend: Any, names: Names) -> None:
    from flamepy import FlameError, FlameErrorCode

    sid = names.session()
    session = flamepy_client.create_session("flmexec", session_id=sid)
    with pytest.raises(FlameError) as exc:
        session.invoke(b"not JSON")
    message = events(get_task(frontend, sid, "1"))[-1][1]
    # With the superset, flamepy raises the executor's text, not "Task failed without error message".
    assert (exc.value.code, exc.value.message) == (FlameErrorCode.INTERNAL, message)
    assert [code for code, _ in events(watch(frontend, sid, "1", timeout=CALL)[-1])] == [0, 1, 3]


# --------------------------------------------------------------------------- bind failures


def test_bind_failures_are_session_events(frontend: Any, names: Names) -> None:
    app = names.app("broken")
    register(frontend, app, command="/nonexistent/ct-never-starts")
    sid = names.session()
    create_session(frontend, sid, app)
    create_task(frontend, sid, b"x")

    def bind_failed() -> Any:
        session = frontend.GetSession(pb.GetSessionRequest(session_id=sid), timeout=CALL)
        return session if any(e.code == 1001 for e in session.status.events) else None

    session = eventually(bind_failed, "a bind failure event", timeout=RUN)
    failure = next(e for e in session.status.events if e.code == 1001)
    # v0.6.0's text, ids in literal angle brackets; only the executor id and node name vary.
    match = re.fullmatch(
        r"Executor <([0-9a-f-]{36})> on node <([^<>]+)> failed to bind session with return_code <11>: "
        r"shim creation failed: failed to start service by command </nonexistent/ct-never-starts>: "
        r"No such file or directory \(os error 2\)",
        failure.message,
    )
    assert match is not None, failure.message
    nodes = {n.metadata.name for n in frontend.ListNodes(pb.ListNodesRequest(), timeout=CALL).nodes}
    assert match.group(2) in nodes
    assert_epoch_ms(failure.creation_time)
    # The session stays Open and its task Pending; the events show in ListSession too.
    assert session.status.state == pb.Open
    assert get_task(frontend, sid, "1").status.state == pb.Pending
    (listed,) = [
        s
        for s in frontend.ListSession(pb.ListSessionRequest(), timeout=CALL).sessions
        if s.metadata.id == sid
    ]
    assert 1001 in {e.code for e in listed.status.events}


# --------------------------------------------------------------------------- nodes


def test_nodes(flamepy_client: Any, frontend: Any) -> None:
    nodes = frontend.ListNodes(pb.ListNodesRequest(), timeout=CALL).nodes
    assert nodes, "a cluster has at least one node"
    assert {n.metadata.name for n in flamepy_client.list_nodes()} == {n.metadata.name for n in nodes}
    node = frontend.GetNode(pb.GetNodeRequest(name=nodes[0].metadata.name), timeout=CALL).node
    assert node.metadata.id == node.metadata.name == nodes[0].metadata.name
    assert list(node.status.addresses) == [] and node.status.last_heartbeat_time == 0
    assert node.status.capacity.cpu >= 1
    assert status(frontend.GetNode, pb.GetNodeRequest(name="ct-no-such-node")) == (
        grpc.StatusCode.NOT_FOUND,
        "node <ct-no-such-node> not found",
    )
