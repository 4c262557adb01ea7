"""SessionContext and ResourceRequirement: validation and parsing, with their exact messages."""

from __future__ import annotations

import pytest

from flamepy_runner import ResourceRequirement, SessionContext


def test_session_context_bounds() -> None:
    assert SessionContext(session_id="x" * 128).session_id == "x" * 128
    assert SessionContext().session_id is None
    with pytest.raises(ValueError) as long:
        SessionContext(session_id="x" * 129)
    assert str(long.value) == "session_id is too long (129 characters, at most 128)"
    with pytest.raises(ValueError) as empty:
        SessionContext(session_id="")
    assert str(empty.value) == "session_id cannot be an empty string"
    with pytest.raises(ValueError) as kind:
        SessionContext(session_id=7)  # type: ignore[arg-type]
    assert str(kind.value) == "session_id must be a string, got int"
    with pytest.raises(ValueError) as app:
        SessionContext(application_name=1)  # type: ignore[arg-type]
    assert str(app.value) == "application_name must be a string, got int"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu=1,mem=1g", (1, 1 << 30, 0)),
        ("cpu=2, memory=512Mi, gpu=1", (2, 512 << 20, 1)),
        ("mem=1024", (0, 1024, 0)),
        ("mem=3kb", (0, 3072, 0)),
        ("MEM=2T", (0, 2 << 40, 0)),
        ("gpu=0", (0, 0, 0)),
    ],
)
def test_resource_requirement_parses(text: str, expected: tuple[int, int, int]) -> None:
    req = ResourceRequirement.from_string(text)
    assert (req.cpu, req.memory, req.gpu) == expected
    pb = req.to_pb()
    assert (pb.cpu, pb.memory, pb.gpu) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "resource requirement cannot be empty"),
        ("  ", "resource requirement cannot be empty"),
        ("cpu", "invalid resource requirement entry 'cpu' in 'cpu', expected key=value"),
        ("cpu=1,", "invalid resource requirement entry '' in 'cpu=1,', expected key=value"),
        ("cpu=", "invalid resource requirement entry 'cpu=' in 'cpu=', expected key=value"),
        ("cpu=-1", "invalid cpu count '-1' in 'cpu=-1', expected a whole number"),
        ("gpu=1.5", "invalid gpu count '1.5' in 'gpu=1.5', expected a whole number"),
        ("mem=1x", "invalid memory size '1x' in 'mem=1x', expected e.g. 512m or 2g"),
        ("mem=g", "invalid memory size 'g' in 'mem=g', expected e.g. 512m or 2g"),
        ("disk=1", "unknown resource requirement key 'disk' in 'disk=1' (known: cpu, mem, gpu)"),
    ],
)
def test_resource_requirement_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        ResourceRequirement.from_string(text)
    assert str(err.value) == message


def test_resource_requirement_fields_and_coercion() -> None:
    with pytest.raises(ValueError) as err:
        ResourceRequirement(cpu=-1)
    assert str(err.value) == "ResourceRequirement.cpu must be a non-negative integer, got -1"
    with pytest.raises(ValueError) as err2:
        ResourceRequirement(gpu=True)
    assert str(err2.value) == "ResourceRequirement.gpu must be a non-negative integer, got True"
    import flamepy

    theirs = flamepy.ResourceRequirement.from_string("cpu=3,mem=2g,gpu=1")
    assert ResourceRequirement.coerce(theirs) == ResourceRequirement(3, 2 << 30, 1)
    assert ResourceRequirement.coerce("cpu=1") == ResourceRequirement(cpu=1)
    ours = ResourceRequirement(cpu=1)
    assert ResourceRequirement.coerce(ours) is ours
    with pytest.raises(TypeError) as err3:
        ResourceRequirement.coerce(1.5)
    assert str(err3.value) == (
        "resreq must be a ResourceRequirement (ours or flamepy's) or a 'cpu=N,mem=SIZE' string, got float"
    )
