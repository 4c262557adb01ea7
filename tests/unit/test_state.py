"""Unit tests of the fake session manager's state model (``flamepy_fake._control._state``).

Every row of the behaviour matrix in ``shared/reference/session-manager.md`` that the state owns
is checked here without any transport; the gRPC adapter is covered by the compat tests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest

from flamepy_fake._control import _state as st
from flamepy_fake._control._state import AppSpec, ClusterState, ResultError, SessionSpec, StateError

GIB = 1073741824
ENOENT = "No such file or directory (os error 2)"


@pytest.fixture
def state() -> Iterator[ClusterState]:
    s = ClusterState()
    yield s
    s.stop()


def _check(exc: pytest.ExceptionInfo[StateError], code: str, message: str) -> None:
    assert (exc.value.code, exc.value.message) == (code, message)


def _open(state: ClusterState, sid: str = "s1", **kw: object) -> st.SessionRecord:
    return state.create_session(sid, SessionSpec(application="flmping", **kw))  # type: ignore[arg-type]


def _bound_executor(state: ClusterState, sid: str = "s1") -> str:
    ex = state.create_executor(sid, executors="test")
    state.bind_completed(ex.id, 0, None)
    return ex.id


def _collect(it: Iterator[st.TaskRecord], out: list[st.TaskRecord]) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.extend(it), daemon=True)
    thread.start()
    return thread


# -- applications --------------------------------------------------------------------------------


def test_default_applications_are_upstreams_three(state: ClusterState) -> None:
    apps = {a.name: a for a in state.list_applications()}
    assert sorted(apps) == ["flmexec", "flmping", "flmrun"]
    flmexec, flmping, flmrun = apps["flmexec"], apps["flmping"], apps["flmrun"]
    assert flmexec.command == "${FLAME_HOME}/bin/flmexec-service"
    assert flmexec.description == "The Flame Executor application, which is used to run scripts."
    assert flmexec.schema_input is not None and flmexec.schema_output is not None
    schema_in = json.loads(flmexec.schema_input)
    assert list(schema_in) == ["$schema", "type", "properties", "required"]  # insertion order kept
    assert schema_in["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema_in["required"] == ["language", "code"]
    assert schema_in["properties"] == {
        "language": {"type": "string", "description": "The language of the script, e.g. python"},
        "code": {
            "type": "string",
            "description": "The code of the script to run, e.g. print('Hello, world!')",
        },
        # the third description sits on the items, not on the array
        "input": {
            "type": "array",
            "items": {"type": "integer", "description": "The input to the script in bytes, e.g. [0x1, 0x2]"},
        },
    }
    assert flmexec.schema_input == json.dumps(schema_in, separators=(",", ":"))  # compact JSON
    assert flmexec.schema_output == (
        '{"$schema":"http://json-schema.org/draft-07/schema#","type":"string",'
        '"description":"The output of the script in UTF-8."}'
    )
    assert flmping.url == "file://${FLAME_HOME}/bin/flmping-service"
    assert flmping.has_schema and flmping.schema_input is None  # present but empty schema message
    assert flmrun.command == "${FLAME_HOME}/bin/uv"
    assert flmrun.arguments == [
        "run",
        "--python",
        "python${FLAME_PYTHON_VERSION}",
        "python",
        "-m",
        "flamepy.runner.runpy",
    ]
    assert flmrun.installer == "python"
    for app in apps.values():
        assert (app.max_instances, app.delay_release, app.shim, app.state) == (1000000, 60, 0, 0)
        assert app.working_directory is None and app.image is None and not app.labels


def test_register_echoes_defaults_and_fields(state: ClusterState) -> None:
    state.register_application(
        "my-app_1.x",
        AppSpec(command="/bin/true", labels=["a"], environments={"K": "V"}, working_directory=""),
    )
    app = state.get_application("my-app_1.x")
    assert (app.max_instances, app.delay_release) == (1000000, 60)
    assert app.working_directory is None  # "" becomes unset
    assert (app.command, app.labels, app.environments) == ("/bin/true", ["a"], {"K": "V"})
    assert not app.has_schema and app.creation_time > 0


def test_register_missing_spec_is_a_status(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.register_application("x", None)
    assert not isinstance(exc.value, ResultError)
    _check(exc, "INVALID_ARGUMENT", "applilcation spec is missed")


@pytest.mark.parametrize(
    ("index", "kind"), [(0, "input"), (1, "output"), (2, "common data")], ids=["input", "output", "common"]
)
@pytest.mark.parametrize("text", ["{not json", '{"type": 5}', '{"$schema": "http://example.com/nope"}'])
def test_register_bad_schema(state: ClusterState, index: int, kind: str, text: str) -> None:
    schema: list[str | None] = [None, None, None]
    schema[index] = text
    with pytest.raises(StateError) as exc:
        state.register_application("x", AppSpec(schema=(schema[0], schema[1], schema[2])))
    assert not isinstance(exc.value, ResultError)
    assert exc.value.code == "INVALID_ARGUMENT"
    assert exc.value.message.startswith(f"invalid {kind} schema: ")


def test_register_valid_schema_is_stored(state: ClusterState) -> None:
    schema = '{"type": "object", "properties": {"a": {"type": "integer"}}}'
    state.register_application("x", AppSpec(schema=(schema, None, "true")))
    app = state.get_application("x")
    assert (app.schema_input, app.schema_output, app.schema_common_data) == (schema, None, "true")
    assert app.has_schema


def test_register_relative_working_directory(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.register_application("x", AppSpec(working_directory="rel/dir"))
    _check(exc, "INVALID_ARGUMENT", "working_directory must be an absolute path, got: rel/dir")


def test_prechecks_run_before_name_validation(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.register_application("", AppSpec(working_directory="rel"))
    assert not isinstance(exc.value, ResultError)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "application name cannot be empty"),
        ("a" * 254, "application name exceeds maximum length of 253 characters"),
        ("é" * 127, "application name exceeds maximum length of 253 characters"),  # bytes, not chars
        ("a..b", "application name contains invalid characters (path traversal): a..b"),
        ("a/b", "application name contains invalid characters (path traversal): a/b"),
        ("a\\b", "application name contains invalid characters (path traversal): a\\b"),
        (".a", "application name cannot start with '.' or '-': .a"),
        ("-a", "application name cannot start with '.' or '-': -a"),
        (
            "a b",
            "application name contains invalid characters (only alphanumeric, '-', '_', '.' allowed): a b",
        ),
        ("é", "application name contains invalid characters (only alphanumeric, '-', '_', '.' allowed): é"),
        # order: traversal is checked before the leading dot
        ("../x", "application name contains invalid characters (path traversal): ../x"),
    ],
)
def test_name_validation_is_result_wrapped(state: ClusterState, name: str, message: str) -> None:
    with pytest.raises(ResultError) as exc:
        state.register_application(name, AppSpec())
    assert exc.value.message == message
    with pytest.raises(ResultError) as exc:
        state.update_application(name, AppSpec())
    assert exc.value.message == message


def test_name_of_253_bytes_is_fine(state: ClusterState) -> None:
    state.register_application("a" * 253, AppSpec())
    assert state.get_application("a" * 253).name == "a" * 253


def test_register_duplicate(state: ClusterState) -> None:
    with pytest.raises(ResultError) as exc:
        state.register_application("flmrun", AppSpec())
    assert exc.value.message == "Application 'flmrun' already exists"


def test_get_unknown_application(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.get_application("nope")
    _check(exc, "NOT_FOUND", f"Application nope not found: {ENOENT}")


def test_update_keeps_shim_and_creation_time(state: ClusterState) -> None:
    state.register_application("x", AppSpec(shim=1, command="old", max_instances=3))
    before = state.get_application("x")
    state.update_application("x", AppSpec(shim=0, command="new", description="d"))
    after = state.get_application("x")
    assert (after.shim, after.creation_time) == (1, before.creation_time)
    assert (after.command, after.description, after.max_instances) == ("new", "d", 1000000)
    assert after.version == before.version + 1


def test_update_unknown_and_open_sessions(state: ClusterState) -> None:
    with pytest.raises(ResultError) as exc:
        state.update_application("nope", AppSpec())
    assert exc.value.message == f"Application nope not found: {ENOENT}"
    _open(state)
    with pytest.raises(ResultError) as exc:
        state.update_application("flmping", AppSpec())
    assert exc.value.message == "Cannot update application 'flmping': has open sessions"


def test_unregister_rules(state: ClusterState) -> None:
    with pytest.raises(ResultError) as exc:
        state.unregister_application("nope")
    assert exc.value.message == f"Failed to delete application 'nope': {ENOENT}"
    state.register_application("x", AppSpec())
    state.create_session("a", SessionSpec(application="x"))
    with pytest.raises(ResultError) as exc:
        state.unregister_application("x")
    assert exc.value.message == "Cannot unregister application 'x': has open sessions"
    state.close_session("a")
    state.unregister_application("x")
    with pytest.raises(StateError) as exc:  # its closed sessions are gone too
        state.get_session("a")
    _check(exc, "NOT_FOUND", "a")
    assert "x" not in {a.name for a in state.list_applications()}


def test_unregister_has_no_name_validation(state: ClusterState) -> None:
    with pytest.raises(ResultError) as exc:
        state.unregister_application("../bad")
    assert exc.value.message == f"Failed to delete application '../bad': {ENOENT}"


def test_records_are_snapshots(state: ClusterState) -> None:
    app = state.get_application("flmrun")
    app.arguments.append("mutated")
    assert "mutated" not in state.get_application("flmrun").arguments
    ssn = _open(state)
    ssn.pending = 99
    assert state.get_session("s1").pending == 0


# -- sessions ------------------------------------------------------------------------------------


def test_create_session_defaults(state: ClusterState) -> None:
    ssn = state.create_session("s1", SessionSpec(application="flmping", batch_size=7, common_data=b"cd"))
    assert ssn.resreq == (1, GIB, 0)
    assert ssn.batch_size == 7  # v0.6.0 stores and echoes it
    assert (ssn.state, ssn.completion_time, ssn.events, ssn.common_data) == (0, None, [], b"cd")
    assert (ssn.pending, ssn.running, ssn.succeed, ssn.failed, ssn.cancelled) == (0, 0, 0, 0, 0)
    assert ssn.creation_time > 0


@pytest.mark.parametrize(
    ("spec", "stored"),
    [
        ({"batch_size": 0}, 1),  # stored as max(B, 1)
        ({"batch_size": 1, "min_instances": 3, "max_instances": 5}, 1),  # B = 1: nothing checked
        ({"batch_size": 2, "min_instances": 2, "max_instances": 4}, 2),
        ({"batch_size": 2, "max_instances": 0}, 2),  # Some(0) passes
        ({"batch_size": 3, "min_instances": 6}, 3),
    ],
)
def test_batch_size_is_stored_and_echoed(state: ClusterState, spec: dict[str, int], stored: int) -> None:
    assert _open(state, **spec).batch_size == stored
    assert state.get_session("s1").batch_size == stored
    assert [s.batch_size for s in state.list_sessions()] == [stored]
    assert state.open_session("s1", None).batch_size == stored
    assert state.close_session("s1").batch_size == stored
    assert state.delete_session("s1").batch_size == stored


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"batch_size": 2, "min_instances": 1},
            "min_instances (1) must be 0 or a multiple of batch_size (2)",
        ),
        (
            {"batch_size": 2, "min_instances": 3},
            "min_instances (3) must be 0 or a multiple of batch_size (2)",
        ),
        ({"batch_size": 2, "max_instances": 3}, "max_instances (3) must be a multiple of batch_size (2)"),
        ({"batch_size": 2, "max_instances": 1}, "max_instances (1) must be a multiple of batch_size (2)"),
        (  # min_instances is checked first
            {"batch_size": 4, "min_instances": 2, "max_instances": 2},
            "min_instances (2) must be 0 or a multiple of batch_size (4)",
        ),
    ],
)
def test_batch_size_alignment_is_checked_first(
    state: ClusterState, spec: dict[str, int], message: str
) -> None:
    with pytest.raises(StateError) as exc:
        _open(state, **spec)
    _check(exc, "INVALID_ARGUMENT", message)
    # Before the application lookup, and before every session lookup in OpenSession.
    with pytest.raises(StateError) as exc:
        state.create_session("s1", SessionSpec(application="nope", **spec))  # type: ignore[arg-type]
    _check(exc, "INVALID_ARGUMENT", message)
    with pytest.raises(StateError) as exc:
        state.open_session("unknown", SessionSpec(application="nope", **spec))  # type: ignore[arg-type]
    _check(exc, "INVALID_ARGUMENT", message)
    _open(state, sid="open")
    with pytest.raises(StateError) as exc:
        state.open_session("open", SessionSpec(application="flmping", **spec))  # type: ignore[arg-type]
    _check(exc, "INVALID_ARGUMENT", message)
    state.close_session("open")
    with pytest.raises(StateError) as exc:
        state.open_session("open", SessionSpec(application="flmping", **spec))  # type: ignore[arg-type]
    _check(exc, "INVALID_ARGUMENT", message)
    assert [s.id for s in state.list_sessions()] == ["open"]


def test_open_session_compares_normalised_batch_size(state: ClusterState) -> None:
    _open(state)  # batch_size 1
    assert state.open_session("s1", SessionSpec(application="flmping", batch_size=0)).batch_size == 1
    _open(state, sid="b2", batch_size=2)
    with pytest.raises(StateError) as exc:
        state.open_session("b2", SessionSpec(application="flmping"))
    _check(exc, "INVALID_ARGUMENT", "session <b2> spec mismatch: batch_size differs (expected 2, got 1)")
    with pytest.raises(StateError) as exc:  # batch_size is compared before priority
        state.open_session("b2", SessionSpec(application="flmping", batch_size=4, priority=3))
    _check(exc, "INVALID_ARGUMENT", "session <b2> spec mismatch: batch_size differs (expected 2, got 4)")
    with pytest.raises(StateError) as exc:  # and after max_instances
        state.open_session("b2", SessionSpec(application="flmping", batch_size=4, max_instances=4))
    _check(
        exc,
        "INVALID_ARGUMENT",
        "session <b2> spec mismatch: max_instances differs (expected None, got Some(4))",
    )
    assert state.open_session("b2", SessionSpec(application="flmping", batch_size=2)).id == "b2"


def test_resreq_resolution() -> None:
    with_default = ClusterState(default_resreq=(2, 2 * GIB, 0))
    try:
        assert with_default.create_session("a", SessionSpec(application="flmping")).resreq == (2, 2 * GIB, 0)
        explicit = SessionSpec(application="flmping", resreq=(0, 0, 0))
        assert with_default.create_session("b", explicit).resreq == (0, 0, 0)  # verbatim, even zeros
    finally:
        with_default.stop()


def test_create_session_errors(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.create_session("s1", None)
    _check(exc, "INVALID_ARGUMENT", "session spec")
    _open(state)
    with pytest.raises(StateError) as exc:  # unknown app is checked before the duplicate id
        state.create_session("s1", SessionSpec(application="nope"))
    _check(exc, "NOT_FOUND", f"Application nope not found: {ENOENT}")
    with pytest.raises(StateError) as exc:
        _open(state)
    _check(exc, "ALREADY_EXISTS", "Session 's1' already exists")
    state.close_session("s1")
    with pytest.raises(StateError) as exc:
        _open(state)
    _check(exc, "ALREADY_EXISTS", "Session 's1' already exists")


def test_open_session_get_or_create(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.open_session("s1", None)
    _check(exc, "NOT_FOUND", "Session s1 not found")
    created = state.open_session("s1", SessionSpec(application="flmping", max_instances=4))
    assert created.max_instances == 4
    state.create_task("s1", b"x")
    again = state.open_session("s1", None)
    assert (again.id, again.pending, again.events) == ("s1", 1, [])
    # common_data is not compared
    same = state.open_session("s1", SessionSpec(application="flmping", max_instances=4, common_data=b"z"))
    assert same.common_data is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            SessionSpec(application="flmrun", max_instances=4),
            "session <s1> spec mismatch: application differs (expected 'flmping', got 'flmrun')",
        ),
        (
            SessionSpec(application="flmping", max_instances=4, resreq=(2, 5, 1)),
            "session <s1> spec mismatch: resreq differs (expected "
            "Some(ResourceRequirement { cpu: 1, memory: 1073741824, gpu: 0 }), got "
            "Some(ResourceRequirement { cpu: 2, memory: 5, gpu: 1 }))",
        ),
        (
            SessionSpec(application="flmping", max_instances=4, min_instances=2),
            "session <s1> spec mismatch: min_instances differs (expected 0, got 2)",
        ),
        (
            SessionSpec(application="flmping"),
            "session <s1> spec mismatch: max_instances differs (expected Some(4), got None)",
        ),
        (
            SessionSpec(application="flmping", max_instances=5),
            "session <s1> spec mismatch: max_instances differs (expected Some(4), got Some(5))",
        ),
        (
            SessionSpec(application="flmping", max_instances=4, priority=3),
            "session <s1> spec mismatch: priority differs (expected 0, got 3)",
        ),
        (  # the first mismatching field wins
            SessionSpec(application="flmrun", priority=3),
            "session <s1> spec mismatch: application differs (expected 'flmping', got 'flmrun')",
        ),
    ],
)
def test_open_session_mismatch(state: ClusterState, spec: SessionSpec, message: str) -> None:
    _open(state, max_instances=4)
    with pytest.raises(StateError) as exc:
        state.open_session("s1", spec)
    _check(exc, "INVALID_ARGUMENT", message)


def test_open_session_resreq_compares_the_resolved_default() -> None:
    s = ClusterState(default_resreq=(2, GIB, 0))
    try:
        s.create_session("s1", SessionSpec(application="flmping", resreq=(1, GIB, 0)))
        with pytest.raises(StateError) as exc:
            s.open_session("s1", SessionSpec(application="flmping"))
        assert "resreq differs" in exc.value.message
        assert "got Some(ResourceRequirement { cpu: 2, memory: 1073741824, gpu: 0 })" in exc.value.message
    finally:
        s.stop()


def test_open_closed_session(state: ClusterState) -> None:
    _open(state)
    state.close_session("s1")
    for spec in (None, SessionSpec(application="flmping")):
        with pytest.raises(StateError) as exc:
            state.open_session("s1", spec)
        _check(exc, "INVALID_ARGUMENT", "Session s1 is not open")


def test_close_session(state: ClusterState) -> None:
    _open(state)
    for _ in range(3):
        state.create_task("s1", b"x")
    eid = _bound_executor(state)
    assert state.launch_task(eid, 0) is not None
    with pytest.raises(StateError) as exc:
        state.close_session("s1")
    _check(exc, "INTERNAL", "Cannot close session with running tasks")
    assert state.get_session("s1").state == 0  # nothing changed
    state.complete_task(eid, 0, b"out", None)
    closed = state.close_session("s1")
    assert (closed.state, closed.succeed, closed.cancelled, closed.pending, closed.events) == (1, 1, 2, 0, [])
    assert closed.completion_time is not None
    cancelled = state.get_task("s1", "2")
    assert cancelled.state == 4 and cancelled.completion_time is not None
    assert [e.code for e in cancelled.events] == [0]  # no event for the cancellation
    assert state.launch_task(eid, 5) is None  # a closed session hands out nothing, at once
    again = state.close_session("s1")  # idempotent, completion_time refreshed
    assert again.completion_time is not None and again.completion_time >= closed.completion_time
    with pytest.raises(StateError) as exc:
        state.close_session("nope")
    _check(exc, "NOT_FOUND", "session <nope>")


def test_delete_session(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.delete_session("nope")
    _check(exc, "NOT_FOUND", "session <nope>")
    _open(state)
    state.create_task("s1", b"x")
    with pytest.raises(StateError) as exc:
        state.delete_session("s1")
    _check(exc, "INTERNAL", "Cannot delete open session")
    state.close_session("s1")
    gone = state.delete_session("s1")
    assert (gone.id, gone.cancelled, gone.events) == ("s1", 1, [])
    with pytest.raises(StateError):
        state.get_session("s1")
    assert _open(state).id == "s1"  # the id can be reused


def test_get_and_list_sessions(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.get_session("nope")
    _check(exc, "NOT_FOUND", "nope")
    _open(state, "a")
    _open(state, "b")
    state.close_session("a")
    listed = {s.id: s.state for s in state.list_sessions()}
    assert listed == {"a": 1, "b": 0}  # closed sessions stay listed


# -- tasks ---------------------------------------------------------------------------------------


def test_create_task(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.create_task("nope", b"x")
    _check(exc, "NOT_FOUND", f"Session nope not found: {ENOENT}")
    _open(state)
    _open(state, "other")
    first = state.create_task("s1", b"in")
    assert (first.id, first.state, first.input, first.output, first.events) == (1, 0, b"in", None, [])
    assert state.create_task("s1", None).id == 2
    assert state.create_task("other", b"").id == 1  # ids are per session
    got = state.get_task("s1", "1")
    assert [(e.code, e.message) for e in got.events] == [(0, "Task was created with state <Pending>")]
    state.close_session("s1")
    with pytest.raises(StateError) as exc:
        state.create_task("s1", b"x")
    _check(exc, "INVALID_ARGUMENT", "Cannot create task in closed session")


@pytest.mark.parametrize("bad", ["", "x", "1.0", " 1", "1 ", "0x1", "1_0", "9223372036854775808", "\u0661"])
def test_task_id_must_be_i64(state: ClusterState, bad: str) -> None:
    _open(state)
    with pytest.raises(StateError) as exc:
        state.get_task("s1", bad)
    _check(exc, "INVALID_ARGUMENT", "invalid task id")
    with pytest.raises(StateError) as exc:
        state.watch_task("s1", bad)
    _check(exc, "INVALID_ARGUMENT", "invalid task id")


def test_get_task_not_found(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.get_task("nope", "1")
    _check(exc, "NOT_FOUND", "nope")
    _open(state)
    with pytest.raises(StateError) as exc:
        state.get_task("s1", "+07")
    _check(exc, "NOT_FOUND", "7")  # the parsed number, as upstream prints it
    state.create_task("s1", b"x")
    assert state.get_task("s1", "+1").id == 1


def test_task_lifecycle_events_and_counters(state: ClusterState) -> None:
    _open(state)
    for _ in range(3):
        state.create_task("s1", b"x")
    eid = _bound_executor(state)
    first = state.launch_task(eid, 0)
    assert first is not None and first.id == 1 and first.state == 1  # FIFO by id
    assert state.launch_task(eid, 0) == first  # re-launch returns the held task
    state.complete_task(eid, 0, b"ok", None)
    second = state.launch_task(eid, 0)
    assert second is not None and second.id == 2
    state.complete_task(eid, 7, b"partial", "ValueError: boom")
    third = state.launch_task(eid, 0)
    assert third is not None and third.id == 3
    state.complete_task(eid, -1, None, None)
    t1, t2, t3 = (state.get_task("s1", str(i)) for i in (1, 2, 3))
    assert [(e.code, e.message) for e in t1.events] == [
        (0, "Task was created with state <Pending>"),
        (1, "Task state was updated to <Running>"),
        (2, "Task was completed with state <Succeed>"),
    ]
    assert (t1.state, t1.output) == (2, b"ok") and t1.completion_time is not None
    assert (t2.state, t2.output, t2.events[-1].code, t2.events[-1].message) == (
        3,
        b"partial",
        3,
        "ValueError: boom",
    )
    assert (t3.state, t3.output, t3.events[-1].message) == (3, None, "Task failed with state <Failed>")
    ssn = state.get_session("s1")
    assert (ssn.pending, ssn.running, ssn.succeed, ssn.failed, ssn.cancelled) == (0, 0, 1, 2, 0)
    assert [t.id for t in state.list_tasks("s1")] == [1, 2, 3]
    assert all(t.events == [] for t in state.list_tasks("s1"))
    with pytest.raises(StateError) as exc:
        state.list_tasks("nope")
    _check(exc, "NOT_FOUND", "nope")


def test_counters_always_sum_to_task_count(state: ClusterState) -> None:
    _open(state)
    eid = _bound_executor(state)
    for i in range(6):
        state.create_task("s1", b"x")
        if i % 2 == 0:
            state.launch_task(eid, 0)
            state.complete_task(eid, i % 4, None, None)
    state.close_session("s1")
    s = state.get_session("s1")
    assert (s.succeed, s.failed, s.cancelled) == (2, 1, 3)
    assert s.pending + s.running + s.succeed + s.failed + s.cancelled == 6


# -- WatchTask -----------------------------------------------------------------------------------


def test_watch_streams_changes_and_ends_after_terminal(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    eid = _bound_executor(state)
    seen: list[st.TaskRecord] = []
    # Whether the watcher starts before or after the changes, it must end with the terminal task.
    thread = _collect(state.watch_task("s1", "1"), seen)
    launched = state.launch_task(eid, 0)
    assert launched is not None
    state.complete_task(eid, 3, b"o", "boom")
    thread.join(10)
    assert not thread.is_alive()
    assert seen[-1].state == 3 and seen[-1].output == b"o"
    assert [e.code for e in seen[-1].events] == [0, 1, 3]  # events attached (helpful superset)
    assert all(t.state != 0 for t in seen)  # Pending is never sent
    assert [t.state for t in seen] in ([1, 3], [3])


def test_watch_terminal_task_sends_once(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    state.close_session("s1")
    assert [t.state for t in state.watch_task("s1", "1")] == [4]


def test_watch_unknown_is_an_empty_stream(state: ClusterState) -> None:
    assert list(state.watch_task("nope", "1")) == []
    _open(state)
    assert list(state.watch_task("s1", "1")) == []


def test_watch_sees_cancellation(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    seen: list[st.TaskRecord] = []
    thread = _collect(state.watch_task("s1", "1"), seen)  # before or after the close: same stream
    state.close_session("s1")
    thread.join(10)
    assert not thread.is_alive()
    assert [t.state for t in seen] == [4]


def test_watch_ends_on_stop_and_inactive_client(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    seen: list[st.TaskRecord] = []
    thread = _collect(state.watch_task("s1", "1", poll=60), seen)
    active = {"on": True}
    other = _collect(state.watch_task("s1", "1", active=lambda: active["on"], poll=60), seen)
    active["on"] = False
    state.wake("s1")
    other.join(10)
    assert not other.is_alive()
    state.stop()
    thread.join(10)
    assert not thread.is_alive() and seen == []


def test_a_change_to_one_task_wakes_only_its_own_watchers(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"a")
    state.create_task("s1", b"b")
    eid = _bound_executor(state)
    checks = {"1": 0, "2": 0}
    started = {"1": threading.Event(), "2": threading.Event()}

    def counting(tid: str) -> Callable[[], bool]:
        def active() -> bool:
            checks[tid] += 1
            started[tid].set()
            return True

        return active

    seen: list[st.TaskRecord] = []
    watch_2 = _collect(state.watch_task("s1", "2", active=counting("2"), poll=60), seen)
    watch_1 = _collect(state.watch_task("s1", "1", active=counting("1"), poll=60), seen)
    assert started["1"].wait(10) and started["2"].wait(10)
    before = checks["2"]
    assert state.launch_task(eid, 0) is not None  # task 1 runs ...
    state.complete_task(eid, 0, b"o", None)  # ... and succeeds
    watch_1.join(10)
    assert not watch_1.is_alive() and [t.id for t in seen] in ([1, 1], [1])
    assert checks["2"] == before  # task 2's watcher slept through task 1's changes
    state.stop()
    watch_2.join(10)
    assert not watch_2.is_alive()


def test_watch_ends_when_session_deleted(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    eid = _bound_executor(state)
    state.launch_task(eid, 0)
    state.complete_task(eid, 0, None, None)
    state.create_task("s1", b"y")
    seen: list[st.TaskRecord] = []
    # task 2 is Pending; a cancel then delete must end the stream (cancel is its one message)
    thread = _collect(state.watch_task("s1", "2", poll=60), seen)
    state.close_session("s1")
    state.delete_session("s1")
    thread.join(10)
    assert not thread.is_alive()
    assert [t.state for t in seen] in ([], [4])


# -- executor-facing -----------------------------------------------------------------------------


def test_demand_order_and_counts(state: ClusterState) -> None:
    state.create_session("low", SessionSpec(application="flmping", priority=1))
    state.create_session("high", SessionSpec(application="flmrun", priority=5, max_instances=2))
    state.create_session("low2", SessionSpec(application="flmping", priority=1))
    state.create_session("closed", SessionSpec(application="flmping", priority=9))
    state.close_session("closed")
    state.create_task("high", b"x")
    state.create_task("high", b"y")
    ex = state.create_executor("high", executors="thread")
    demand = state.demand()
    assert [d.session_id for d in demand] == ["high", "low", "low2"]
    high = demand[0]
    assert (high.application, high.app.name, high.pending, high.running) == ("flmrun", "flmrun", 2, 0)
    assert (high.min_instances, high.max_instances, high.executors) == (0, 2, 1)
    state.bind_completed(ex.id, 0, None)
    state.unbind_executor(ex.id)
    assert state.demand()[0].executors == 1  # Unbinding before completion still holds the session
    state.unbind_executor(ex.id)
    assert state.demand()[0].executors == 0


def test_create_executor(state: ClusterState) -> None:
    with pytest.raises(StateError) as exc:
        state.create_executor("nope", executors="thread")
    assert exc.value.code == "NOT_FOUND"
    _open(state, resreq=(2, 3, 0))
    ex = state.create_executor("s1", executors="process")
    assert (ex.state, ex.session_id, ex.application, ex.executors, ex.resreq) == (
        3,
        "s1",
        "flmping",
        "process",
        (2, 3, 0),
    )
    assert ex.node == state.node_name and ex.task_id is None
    state.set_executor_pid(ex.id, 1234)
    assert [(e.id, e.pid) for e in state.executors()] == [(ex.id, 1234)]
    app, ssn = state.binding(ex.id)
    assert (app.name, ssn.id) == ("flmping", "s1")
    state.close_session("s1")
    with pytest.raises(StateError) as exc:
        state.create_executor("s1", executors="thread")
    _check(exc, "INVALID_ARGUMENT", "Session s1 is not open")
    with pytest.raises(StateError) as exc:
        state.binding(ex.id)
    assert exc.value.code == "NOT_FOUND"
    with pytest.raises(StateError) as exc:
        state.binding("nope")
    _check(exc, "NOT_FOUND", "nope")


def test_binding_carries_common_data(state: ClusterState) -> None:
    _open(state, common_data=b"shared")
    ex = state.create_executor("s1", executors="thread")
    _, ssn = state.binding(ex.id)
    assert ssn.common_data == b"shared"


def test_bind_failures_and_retry_limit() -> None:
    state = ClusterState(retry_limit=2, node_name="n0")
    try:
        _open(state)
        state.create_task("s1", b"x")
        ids = []
        for rc in (10, 12, 19):
            ex = state.create_executor("s1", executors="thread")
            state.bind_completed(ex.id, rc, "install failed" if rc == 10 else None)
            ids.append(ex.id)
            record = next(e for e in state.executors() if e.id == ex.id)
            assert (record.state, record.session_id) == (5, None)
        ssn = state.get_session("s1")
        assert ssn.state == 0 and ssn.pending == 1 and ssn.retry_count == 3
        assert [e.code for e in ssn.events] == [1001, 1001, 1002, 1001]  # 1002 once, at the limit
        assert ssn.events[0].message == (
            f"Executor <{ids[0]}> on node <n0> failed to bind session with return_code <10>: install failed"
        )
        assert ssn.events[1].message.endswith("with return_code <12>: ")
        assert ssn.events[2].message == (
            "Session retry limit reached after 2/2 failed attempts; new executor assignment is "
            "paused for this session; existing executors are unchanged."
        )
        assert state.demand() == []  # past the limit: no new executors
        assert state.get_task("s1", "1").state == 0  # tasks are not failed by bind failures
        assert [s.events for s in state.list_sessions()] == [ssn.events]
        assert state.open_session("s1", None).events == []  # session events only on Get/List
    finally:
        state.stop()


def test_executor_state_errors(state: ClusterState) -> None:
    _open(state)
    with pytest.raises(StateError) as exc:
        state.bind_completed("nope", 0, None)
    _check(exc, "NOT_FOUND", "nope")
    eid = _bound_executor(state)
    with pytest.raises(StateError) as exc:
        state.bind_completed(eid, 0, None)
    _check(exc, "INVALID_ARGUMENT", "Executor is bound")
    with pytest.raises(StateError) as exc:
        state.complete_task(eid, 0, None, None)
    _check(exc, "INVALID_ARGUMENT", "no task in executor")
    state.unbind_executor(eid)
    state.unbind_executor(eid)
    with pytest.raises(StateError) as exc:
        state.complete_task(eid, 0, None, None)
    _check(exc, "INVALID_ARGUMENT", "no session in executor")
    assert state.launch_task(eid, 5) is None  # Unbinding: nothing, at once
    state.release_executor(eid)
    state.release_executor(eid)  # idempotent
    assert state.executors() == []
    assert state.launch_task(eid, 5) is None
    with pytest.raises(StateError) as exc:
        state.unbind_executor(eid)
    _check(exc, "NOT_FOUND", eid)


def test_complete_task_while_unbinding(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"x")
    eid = _bound_executor(state)
    state.launch_task(eid, 0)
    state.unbind_executor(eid)
    state.complete_task(eid, 0, b"late", None)
    assert state.get_task("s1", "1").output == b"late"


def test_release_with_held_task_requeues_it(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"a")
    state.create_task("s1", b"b")
    eid = _bound_executor(state)
    assert state.launch_task(eid, 0) is not None
    state.release_executor(eid)
    task = state.get_task("s1", "1")
    assert task.state == 0 and [e.code for e in task.events] == [0, 1]
    other = _bound_executor(state)
    again = state.launch_task(other, 0)
    assert again is not None and again.id == 1  # back at the front of the queue


def test_launch_task_long_poll_is_woken(state: ClusterState) -> None:
    _open(state)
    eid = _bound_executor(state)
    got: list[st.TaskRecord | None] = []
    thread = threading.Thread(target=lambda: got.append(state.launch_task(eid, 60)), daemon=True)
    thread.start()
    state.create_task("s1", b"x")
    thread.join(10)
    assert not thread.is_alive() and got[0] is not None and got[0].id == 1
    state.complete_task(eid, 0, None, None)
    _open(state, "s2")
    other = _bound_executor(state, "s2")
    for executor, wake in ((eid, lambda: state.close_session("s1")), (other, state.stop)):
        got.clear()
        thread = threading.Thread(target=lambda e=executor: got.append(state.launch_task(e, 60)), daemon=True)
        thread.start()
        wake()
        thread.join(10)
        assert not thread.is_alive() and got == [None]


def test_launch_task_times_out(state: ClusterState) -> None:
    _open(state)
    eid = _bound_executor(state)
    assert state.launch_task(eid, 0.05) is None


def test_wait_for_change(state: ClusterState) -> None:
    gen = state.generation
    assert state.wait_for_change(gen, 0.01) == gen  # timeout: unchanged
    _open(state)
    assert state.wait_for_change(gen, 10) > gen
    gen = state.generation
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(state.wait_for_change(gen, 60)), daemon=True)
    thread.start()
    state.create_task("s1", b"x")
    thread.join(10)
    assert result and result[0] > gen
    gen = state.generation
    thread = threading.Thread(target=lambda: result.append(state.wait_for_change(gen, 60)), daemon=True)
    thread.start()
    state.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert state.wait_for_change(state.generation, 60) == state.generation  # stopped: returns at once


# -- nodes ---------------------------------------------------------------------------------------


def test_nodes(state: ClusterState) -> None:
    (node,) = state.nodes()
    assert node.name == "fake-node-0" and node.state == 1
    assert node.capacity[0] >= 1 and node.capacity[1] > 0
    assert state.get_node("fake-node-0") == node
    with pytest.raises(StateError) as exc:
        state.get_node("other")
    _check(exc, "NOT_FOUND", "node <other> not found")


def test_two_states_are_independent() -> None:
    a, b = ClusterState(node_name="a"), ClusterState(node_name="b")
    try:
        a.register_application("only-a", AppSpec())
        assert "only-a" not in {x.name for x in b.list_applications()}
        assert b.nodes()[0].name == "b"
    finally:
        a.stop()
        b.stop()


def test_unbind_ends_a_launch_long_poll(state: ClusterState) -> None:
    _open(state)
    eid = _bound_executor(state)
    got: list[st.TaskRecord | None] = []
    thread = threading.Thread(target=lambda: got.append(state.launch_task(eid, 60)), daemon=True)
    thread.start()
    state.unbind_executor(eid)
    thread.join(10)
    assert not thread.is_alive() and got == [None]


def test_wake_ends_wait_for_change(state: ClusterState) -> None:
    gen = state.generation
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(state.wait_for_change(gen, 60)), daemon=True)
    thread.start()
    state.wake()
    thread.join(10)
    assert not thread.is_alive() and result[0] != gen


def test_concurrent_clients_and_executors_never_see_half_applied_changes(state: ClusterState) -> None:
    """Creators, executors and an observer race; every snapshot and the end state stay coherent."""
    _open(state)
    per_creator, creators, workers = 60, 2, 3
    total = per_creator * creators
    errors: list[str] = []
    done = threading.Event()

    def create() -> None:
        for _ in range(per_creator):
            state.create_task("s1", b"x")

    def work() -> None:
        eid = _bound_executor(state)
        while not done.is_set():
            task = state.launch_task(eid, 0.05)
            if task is None:
                continue
            if task.state != 1:
                errors.append(f"launched task {task.id} in state {task.state}")
            state.complete_task(eid, task.id % 2, task.input, None)

    def observe() -> None:
        last = 0
        while not done.is_set():
            s = state.get_session("s1")
            seen = s.pending + s.running + s.succeed + s.failed + s.cancelled
            if seen < last or s.running > workers:
                errors.append(f"incoherent snapshot: {s}")
            last = seen

    threads = [
        threading.Thread(target=f, daemon=True) for f in [create] * creators + [work] * workers + [observe]
    ]
    for t in threads:
        t.start()
    for t in threads[:creators]:
        t.join(30)
    while state.get_session("s1").succeed + state.get_session("s1").failed < total and not errors:
        state.wait_for_change(state.generation, 1)
    done.set()
    for t in threads:
        t.join(30)
    assert errors == []
    tasks = state.list_tasks("s1")
    assert sorted(t.id for t in tasks) == list(range(1, total + 1))
    for t in tasks:
        events = [e.code for e in state.get_task("s1", str(t.id)).events]
        assert events == [0, 1, 2 if t.id % 2 == 0 else 3]  # each task ran exactly once
    s = state.get_session("s1")
    assert (s.pending, s.running, s.succeed, s.failed) == (0, 0, total // 2, total // 2)


def test_release_after_double_unbind_still_requeues_the_held_task(state: ClusterState) -> None:
    _open(state)
    state.create_task("s1", b"a")
    eid = _bound_executor(state)
    assert state.launch_task(eid, 0) is not None
    state.unbind_executor(eid)
    state.unbind_executor(eid)  # clears the executor's session while it holds task 1
    state.release_executor(eid)
    assert state.get_task("s1", "1").state == 0  # not stuck Running: the session can close
    assert state.close_session("s1").cancelled == 1


def test_a_gang_of_executors_is_created_in_one_change(state: ClusterState) -> None:
    _open(state, batch_size=3)
    before = state.generation
    gang = state.create_executors("s1", 3, executors="thread")
    assert state.generation == before + 1  # one change: no observer sees part of the gang
    assert [(e.state, e.session_id) for e in gang] == [(3, "s1")] * 3
    assert len({e.id for e in gang}) == 3
    assert [e.id for e in state.executors()] == [e.id for e in gang]
    state.close_session("s1")
    with pytest.raises(StateError) as exc:
        state.create_executors("s1", 3, executors="thread")
    _check(exc, "INVALID_ARGUMENT", "Session s1 is not open")
    assert len(state.executors()) == 3
