"""Malformed, empty and random requests to every Frontend RPC of the fake session manager.

Each RPC must answer with one of the statuses upstream uses for it (or OK), never crash a
handler (UNKNOWN) or hang, and the server must keep serving afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from flamepy_fake._control._frontend import FrontendServicer
from flamepy_fake._control._state import ClusterState
from flamepy_runner._proto import pb, rpc
from flamepy_runner._proto._rpc import method_path

C = grpc.StatusCode
OK = C.OK
DEADLINE = 5.0
ENOENT = "No such file or directory (os error 2)"

# What upstream may answer per RPC (OK included). WatchTask on a live task legitimately blocks,
# so the fuzzer's deadline may expire there and only there.
ALLOWED: dict[str, set[grpc.StatusCode]] = {
    "RegisterApplication": {OK, C.INVALID_ARGUMENT},
    "UnregisterApplication": {OK},
    "UpdateApplication": {OK, C.INVALID_ARGUMENT},
    "GetApplication": {OK, C.NOT_FOUND},
    "ListApplication": {OK},
    "ListExecutor": {OK},
    "ListNodes": {OK},
    "GetNode": {OK, C.NOT_FOUND},
    "CreateSession": {OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS},
    "DeleteSession": {OK, C.NOT_FOUND, C.INTERNAL},
    "OpenSession": {OK, C.INVALID_ARGUMENT, C.NOT_FOUND, C.ALREADY_EXISTS},
    "CloseSession": {OK, C.NOT_FOUND, C.INTERNAL},
    "GetSession": {OK, C.NOT_FOUND},
    "ListSession": {OK},
    "CreateTask": {OK, C.INVALID_ARGUMENT, C.NOT_FOUND},
    "GetTask": {OK, C.INVALID_ARGUMENT, C.NOT_FOUND},
    "WatchTask": {OK, C.INVALID_ARGUMENT, C.DEADLINE_EXCEEDED},
    "ListTask": {OK, C.NOT_FOUND},
}

# The exact answer to an empty request, per RPC: (status, details or Result message).
EMPTY: dict[str, tuple[grpc.StatusCode, str | None]] = {
    "RegisterApplication": (C.INVALID_ARGUMENT, "applilcation spec is missed"),
    "UnregisterApplication": (OK, f"Failed to delete application '': {ENOENT}"),
    "UpdateApplication": (C.INVALID_ARGUMENT, "applilcation spec is missed"),
    "GetApplication": (C.NOT_FOUND, f"Application  not found: {ENOENT}"),
    "ListApplication": (OK, None),
    "ListExecutor": (OK, None),
    "ListNodes": (OK, None),
    "GetNode": (C.NOT_FOUND, "node <> not found"),
    "CreateSession": (C.INVALID_ARGUMENT, "session spec"),
    "DeleteSession": (C.NOT_FOUND, "session <>"),
    "OpenSession": (C.NOT_FOUND, "Session  not found"),
    "CloseSession": (C.NOT_FOUND, "session <>"),
    "GetSession": (C.NOT_FOUND, ""),
    "ListSession": (OK, None),
    "CreateTask": (C.INVALID_ARGUMENT, "session spec"),
    "GetTask": (C.INVALID_ARGUMENT, "invalid task id"),
    "WatchTask": (C.INVALID_ARGUMENT, "invalid task id"),
    "ListTask": (C.NOT_FOUND, ""),
}

METHODS = {m.name: m for m in pb.FRONTEND_SERVICE.methods}
NODE = "fuzz-node"


def test_tables_cover_every_rpc() -> None:
    assert set(ALLOWED) == set(METHODS) == set(EMPTY)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[ClusterState, grpc.Channel]]:
    state = ClusterState(node_name=NODE)
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sm-fuzz")
    srv = grpc.server(pool)
    srv.add_generic_rpc_handlers((rpc.generic_handler(pb.FRONTEND_SERVICE, FrontendServicer(state)),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield state, channel
    finally:
        channel.close()
        state.stop()
        srv.stop(grace=None).wait()
        pool.shutdown(wait=True)


def _call_raw(
    channel: grpc.Channel, name: str, payload: bytes, timeout: float = DEADLINE
) -> tuple[Any, list[bytes]]:
    """Send ``payload`` as the serialized request; return (status code, raw responses)."""
    method = METHODS[name]
    path = method_path(pb.FRONTEND_SERVICE, name)
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, timeout=timeout)
            return OK, list(stream)
        return OK, [channel.unary_unary(path)(payload, timeout=timeout)]
    except grpc.RpcError as exc:
        return exc.code(), [exc.details().encode()]


def _assert_still_serving(channel: grpc.Channel) -> None:
    # GetNode of the fake's own node: nothing a fuzzed request can do removes it (unlike the
    # default applications, which a random UnregisterApplication may legitimately delete).
    reply = rpc.Stub(channel, pb.FRONTEND_SERVICE).GetNode(pb.GetNodeRequest(name=NODE), timeout=DEADLINE)
    assert reply.node.metadata.name == NODE


@pytest.mark.parametrize("name", sorted(METHODS))
def test_empty_request(server: tuple[ClusterState, grpc.Channel], name: str) -> None:
    _, channel = server
    code, replies = _call_raw(channel, name, b"")
    expected_code, expected_text = EMPTY[name]
    assert code == expected_code
    if expected_code != OK:
        assert replies == [expected_text.encode()]  # type: ignore[union-attr]
    elif expected_text is not None:
        result = pb.Result.FromString(replies[0])
        assert (result.return_code, result.message) == (-1, expected_text)
    _assert_still_serving(channel)


# -- random but well-formed messages -------------------------------------------------------------

_NAMES = st.sampled_from(["", "flmrun", "flmping", "s", "1", "-1", "x/y", "..", "a" * 300])
_STRINGS = st.one_of(_NAMES, st.text(max_size=12))
_JSON = st.sampled_from(['{"type": "string"}', "{", "true", '{"type": 5}', "[]", '{"$schema": "nope"}'])
_INTS: dict[int, st.SearchStrategy[int]] = {
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: st.integers(-3, 9),  # open enums: unknown values too
}


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.name in ("input", "output", "common_data"):  # the schema texts
            return st.one_of(_JSON, _STRINGS)
        return _STRINGS
    if field.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=32)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    return _INTS[field.type]


def _repeated(field: FieldDescriptor) -> bool:
    # protobuf 6 replaced ``label`` with ``is_repeated``; support both.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


@st.composite
def _message(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Any:
    message = getattr(pb, descriptor.name)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            count = draw(st.integers(0, 2)) if _repeated(field) else 1
            for _ in range(count):
                child = draw(_message(field.message_type, depth + 1))
                if _repeated(field):
                    getattr(message, field.name).add().CopyFrom(child)
                else:
                    getattr(message, field.name).CopyFrom(child)
        elif _repeated(field):
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


_FUZZ = settings(max_examples=50, deadline=None)


@_FUZZ
@given(data=st.data())
def test_random_requests(server: tuple[ClusterState, grpc.Channel], data: st.DataObject) -> None:
    _, channel = server
    for name in sorted(METHODS):
        request = data.draw(_message(METHODS[name].input_type), label=name)
        code, _ = _call_raw(
            channel, name, request.SerializeToString(), timeout=1.0 if name == "WatchTask" else DEADLINE
        )
        assert code in ALLOWED[name], (name, code, request)
    _assert_still_serving(channel)


@_FUZZ
@given(name=st.sampled_from(sorted(METHODS)), payload=st.binary(min_size=1, max_size=64))
def test_random_bytes(server: tuple[ClusterState, grpc.Channel], name: str, payload: bytes) -> None:
    _, channel = server
    code, _ = _call_raw(channel, name, payload, timeout=1.0 if name == "WatchTask" else DEADLINE)
    # Bytes that are not a valid message fail to decode: INTERNAL, as upstream's decoder answers.
    assert code in ALLOWED[name] | {C.INTERNAL}, (name, code, payload)
    _assert_still_serving(channel)
