"""Our flame.v1 bindings against the oracle (flamepy 0.6.0's compiled descriptors), staleness, import order.

1. ``types.proto``, ``frontend.proto`` and ``shim.proto`` match the descriptors compiled into the
   released flamepy wheel message by message and field by field (json_name and source info aside).
2. The committed ``_flame_v1.py`` is what ``scripts/gen_protos.py`` renders from ``protos/``.
3. Ours and flamepy's load in one interpreter in either import order, messages cross both ways,
   and ours never touch protobuf's default descriptor pool.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from flamepy_runner._proto import pb

ROOT = Path(__file__).resolve().parents[2]
ORACLE_FILES = ("types.proto", "frontend.proto", "shim.proto")
FDP = descriptor_pb2.FieldDescriptorProto


def _ours(name: str) -> descriptor_pb2.FileDescriptorProto:
    for data in pb.FILE_DESCRIPTORS:
        fdp = descriptor_pb2.FileDescriptorProto.FromString(data)
        if fdp.name == name:
            return fdp
    raise AssertionError(f"our bindings have no {name}")


def _theirs(name: str) -> descriptor_pb2.FileDescriptorProto:
    from flamepy.proto import frontend_pb2, shim_pb2, types_pb2

    module = {"types.proto": types_pb2, "frontend.proto": frontend_pb2, "shim.proto": shim_pb2}[name]
    fdp = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fdp)
    return fdp


# ---------------------------------------------------------------------------- descriptor summaries
# Each summary is a plain dict, so a mismatch prints as a readable diff in pytest.


def _field(field: descriptor_pb2.FieldDescriptorProto, oneofs: list[str]) -> dict[str, Any]:
    return {
        "number": field.number,
        "label": FDP.Label.Name(field.label),
        "type": FDP.Type.Name(field.type),
        "type_name": field.type_name,
        "proto3_optional": field.proto3_optional,
        "oneof": oneofs[field.oneof_index] if field.HasField("oneof_index") else None,
        "default": field.default_value,
        "packed": field.options.packed if field.options.HasField("packed") else None,
        "deprecated": field.options.deprecated,
    }


def _enum(enum: descriptor_pb2.EnumDescriptorProto) -> dict[str, Any]:
    return {
        "values": [(v.name, v.number) for v in enum.value],
        "reserved_ranges": [(r.start, r.end) for r in enum.reserved_range],
        "reserved_names": list(enum.reserved_name),
    }


def _messages(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, msgs: Any) -> None:
        for msg in msgs:
            found[prefix + msg.name] = msg
            walk(prefix + msg.name + ".", msg.nested_type)

    walk("", fdp.message_type)
    return found


def _message(msg: descriptor_pb2.DescriptorProto) -> dict[str, Any]:
    oneofs = [o.name for o in msg.oneof_decl]
    return {
        "fields": {f.name: _field(f, oneofs) for f in msg.field},
        "field_order": [f.name for f in msg.field],
        "oneofs": oneofs,
        "reserved_ranges": [(r.start, r.end) for r in msg.reserved_range],
        "reserved_names": list(msg.reserved_name),
        "nested_enums": {e.name: _enum(e) for e in msg.enum_type},
        "extension_ranges": [(r.start, r.end) for r in msg.extension_range],
        "map_entry": msg.options.map_entry,
    }


def _services(fdp: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    return {
        svc.name: {
            m.name: {
                "input": m.input_type,
                "output": m.output_type,
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
            }
            for m in svc.method
        }
        for svc in fdp.service
    }


def _message_cases() -> list[Any]:
    cases = []
    for name in ORACLE_FILES:
        ours, theirs = _messages(_ours(name)), _messages(_theirs(name))
        for msg in sorted(set(ours) | set(theirs)):
            cases.append(pytest.param(name, msg, id=f"{name}:{msg}"))
    return cases


# ---------------------------------------------------------------------------- 1. the oracle


@pytest.mark.parametrize("name", ORACLE_FILES)
def test_file_header_matches(name: str) -> None:
    ours, theirs = _ours(name), _theirs(name)
    assert (ours.package, ours.syntax, list(ours.dependency)) == (
        theirs.package,
        theirs.syntax,
        list(theirs.dependency),
    )
    assert ours.options.go_package == theirs.options.go_package


@pytest.mark.parametrize(("name", "message"), _message_cases())
def test_message_matches_flamepy(name: str, message: str) -> None:
    ours, theirs = _messages(_ours(name)), _messages(_theirs(name))
    assert message in ours, f"{message} is in flamepy's {name} but not ours"
    assert message in theirs, f"{message} is in our {name} but not flamepy's"
    assert _message(ours[message]) == _message(theirs[message])


@pytest.mark.parametrize("name", ORACLE_FILES)
def test_top_level_enums_match(name: str) -> None:
    ours = {e.name: _enum(e) for e in _ours(name).enum_type}
    theirs = {e.name: _enum(e) for e in _theirs(name).enum_type}
    assert ours == theirs


@pytest.mark.parametrize("name", ORACLE_FILES)
def test_services_and_methods_match(name: str) -> None:
    assert _services(_ours(name)) == _services(_theirs(name))


def test_the_comparison_sees_a_difference() -> None:
    # Guard against a summary that ignores what it should compare: change one field number.
    theirs = _messages(_theirs("types.proto"))["TaskSpec"]
    changed = descriptor_pb2.DescriptorProto()
    changed.CopyFrom(theirs)
    changed.field[0].number += 100
    assert _message(changed) != _message(theirs)
    changed.CopyFrom(theirs)
    changed.field[1].proto3_optional = not changed.field[1].proto3_optional
    assert _message(changed) != _message(theirs)
    changed.CopyFrom(theirs)
    del changed.reserved_range[:]
    changed.reserved_name.append("slots")
    assert _message(changed) != _message(theirs)


def test_backend_proto_is_present_with_its_service() -> None:
    backend = _ours("backend.proto")
    assert backend.package == "flame.v1"
    methods = {m.name for m in backend.service[0].method}
    assert {"RegisterNode", "BindExecutor", "LaunchTask", "CompleteTask", "WatchNode"} <= methods


# ---------------------------------------------------------------------------- 2. staleness


def _gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_bindings_are_current() -> None:
    gen = _gen_protos()
    committed = (ROOT / "src" / "flamepy_runner" / "_proto" / "_flame_v1.py").read_text()
    assert gen.render(gen.compile_descriptors()) == committed, "stale: run python scripts/gen_protos.py"
    assert gen.main(["--check"]) == 0


def test_check_fails_on_stale_bindings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _gen_protos()
    stale = tmp_path / "_flame_v1.py"
    stale.write_text(gen.OUTPUT.read_text().replace("Failed = 3", "Failed = 33"))
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "OUTPUT", stale)
    assert gen.main(["--check"]) == 1
    assert "_flame_v1.py is stale: run python scripts/gen_protos.py" in capsys.readouterr().err


def test_bindings_match_the_proto_sources() -> None:
    gen = _gen_protos()
    assert tuple(gen.compile_descriptors()) == pb.FILE_DESCRIPTORS


# ---------------------------------------------------------------------------- 3. import order

_CROSS_CHECK = """
from google.protobuf import descriptor_pool
from flamepy.proto import types_pb2, frontend_pb2
from flamepy_runner._proto import pb

# Ours -> flamepy.
ours = pb.Session(
    metadata=pb.Metadata(id="s1", name="s1"), spec=pb.SessionSpec(application="flmrun", max_instances=3)
)
ours.status.events.add(code=1001, message="boom", creation_time=5)
theirs = types_pb2.Session.FromString(ours.SerializeToString())
assert theirs.metadata.id == "s1" and theirs.spec.HasField("max_instances") and theirs.spec.max_instances == 3
assert theirs.status.events[0].message == "boom"

# flamepy -> ours, including a frontend request and an unset optional.
req = frontend_pb2.OpenSessionRequest(session_id="x")
back = pb.OpenSessionRequest.FromString(req.SerializeToString())
assert back.session_id == "x" and not back.HasField("session")
wire = types_pb2.Task(spec=types_pb2.TaskSpec(session_id="x", input=b"")).SerializeToString()
task = pb.Task.FromString(wire)
assert task.spec.HasField("input") and task.spec.input == b""

# The default pool holds flamepy's files only; ours live in a pool of their own.
default = descriptor_pool.Default()
assert default.FindFileByName("types.proto") is types_pb2.DESCRIPTOR
assert pb.Session.DESCRIPTOR.file.pool is not default
assert pb.Session is not types_pb2.Session
print("ok")
"""


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_flamepy_first_then_ours() -> None:
    assert _run("import flamepy\nimport flamepy_runner._proto\n" + _CROSS_CHECK) == "ok\n"


def test_ours_first_then_flamepy() -> None:
    code = """
    import flamepy_runner._proto
    import flamepy_fake
    from google.protobuf import descriptor_pool
    try:
        descriptor_pool.Default().FindFileByName("types.proto")
    except KeyError:
        pass
    else:
        raise AssertionError("our bindings registered types.proto in the default pool")
    import flamepy
    """
    assert _run(textwrap.dedent(code) + _CROSS_CHECK) == "ok\n"


def test_ours_next_to_a_different_types_proto_in_the_default_pool() -> None:
    # Another flamepy version ships a different types.proto; the default pool refuses a second
    # one, so the only way to coexist is not to use it. Register a conflicting file, then import.
    code = """
    from google.protobuf import descriptor_pb2, descriptor_pool
    other = descriptor_pb2.FileDescriptorProto(name="types.proto", package="flame.v1", syntax="proto3")
    other.message_type.add(name="Metadata").field.add(name="only", number=9, type=9, label=1)
    descriptor_pool.Default().Add(other)
    from flamepy_runner._proto import pb
    assert pb.Metadata(id="a").id == "a"
    print("ok")
    """
    assert _run(code) == "ok\n"
