"""CacheClient: references, error mapping, local versioned cache, files, deadlines."""

from __future__ import annotations

import inspect
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from bson.int64 import Int64

from flamepy_fake._cache import _store as _cache_store
from flamepy_fake._cache._server import FakeObjectCache
from flamepy_runner import (
    ClusterError,
    DeadlineExceededError,
    FlameConfig,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UsageError,
    _cache_wire,
)
from flamepy_runner._cache import CacheClient, ObjectRef


@pytest.fixture(name="cache")
def _cache_fixture() -> Iterator[FakeObjectCache]:
    with FakeObjectCache() as cache:
        yield cache


@pytest.fixture(name="client")
def _client(cache: FakeObjectCache) -> Iterator[CacheClient]:
    with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=20)) as client:
        yield client


@pytest.fixture(name="tickets")
def _tickets(cache: FakeObjectCache, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (key, client version) the server was asked for."""
    seen: list[tuple[str, int]] = []
    store = cache.store
    original = store.get

    def spy(key: str, version: int) -> _cache_store.GetResult:
        seen.append((key, version))
        return original(key, version)

    monkeypatch.setattr(store, "get", spy)
    return seen


# --------------------------------------------------------------------------- ObjectRef


def test_object_ref_encodes_to_plain_bson() -> None:
    ref = ObjectRef("grpc://h:9090", "a/s/x", 3)
    assert ref.encode() == bson.encode({"endpoint": "grpc://h:9090", "key": "a/s/x", "version": 3})
    assert ObjectRef.decode(ref.encode()) == ref


def test_object_ref_decodes_int64_versions() -> None:
    raw = bson.encode({"endpoint": "e", "key": "a/s/x", "version": Int64(2**40)})
    decoded = ObjectRef.decode(raw)
    assert decoded.version == 2**40 and type(decoded.version) is int


@pytest.mark.parametrize("raw", [b"", b"garbage", bson.encode({"endpoint": "e"}), bson.encode({"key": 1})])
def test_object_ref_decode_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(UsageError, match="ObjectRef"):
        ObjectRef.decode(raw)


def test_object_ref_with_version() -> None:
    ref = ObjectRef("e", "a/s/x", 5)
    assert ref.with_version(0) == ObjectRef("e", "a/s/x", 0) and ref.version == 5


# --------------------------------------------------------------------------- error boundary


def _all_arrow_error_classes() -> list[type[BaseException]]:
    classes = {
        obj
        for module in (flight, pa)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and (issubclass(obj, pa.ArrowException) or "Flight" in obj.__name__)
    }
    return sorted(classes, key=lambda c: c.__qualname__)


@pytest.mark.parametrize("exc_class", _all_arrow_error_classes(), ids=lambda c: c.__name__)
def test_every_flight_and_arrow_error_is_mapped(exc_class: type[BaseException]) -> None:
    exc: BaseException | None = None
    for args in (("boom",), ("boom", b""), ("boom", 1, 2)):
        try:
            exc = exc_class(*args)
            break
        except TypeError:
            continue
    assert exc is not None, f"cannot build {exc_class}"
    with pytest.raises(ClusterError) as info, _cache_wire.flight_errors("grpc://h:1", "a/s/x"):
        raise exc
    assert info.value.__cause__ is exc
    assert info.value.endpoint == "grpc://h:1" and info.value.key == "a/s/x"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (pa.ArrowKeyError("k"), NotFoundError),
        (pa.ArrowInvalid("v"), InvalidArgumentError),
        (flight.FlightTimedOutError("t"), DeadlineExceededError),
        (flight.FlightUnavailableError("u"), UnavailableError),
        (flight.FlightInternalError("i"), InternalError),
        (flight.FlightCancelledError("c"), InternalError),
        (flight.FlightServerError("s"), InternalError),
        (pa.ArrowNotImplementedError("n"), InternalError),
        (flight.FlightWriteSizeExceededError("w", 1, 2), InvalidArgumentError),
    ],
)
def test_error_classes_map_to_the_specific_flame_error(
    exc: BaseException, expected: type[ClusterError]
) -> None:
    with pytest.raises(ClusterError) as info, _cache_wire.flight_errors("grpc://h:1"):
        raise exc
    assert type(info.value) is expected


def test_server_message_is_extracted() -> None:
    raw = (
        "Flight returned invalid argument error, with message: 'object a/s/x not found'. Detail: Python "
        "exception: Traceback... gRPC client debug context: UNKNOWN"
    )
    assert _cache_wire.server_message(pa.ArrowInvalid(raw)) == "object a/s/x not found"


def test_unreachable_cache_is_unavailable() -> None:
    with (
        socket_port() as port,
        CacheClient(FlameConfig(cache_endpoint=f"grpc://127.0.0.1:{port}", timeout=5)) as c,
        pytest.raises(UnavailableError) as info,
    ):
        c.put_object("a/s", 1)
    assert info.value.endpoint == f"grpc://127.0.0.1:{port}"


class socket_port:
    """A port with nothing listening on it."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        self._sock.close()
        return port

    def __exit__(self, *exc: object) -> None:
        pass


class _StallingServer(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("grpc://127.0.0.1:0")
        self.release = threading.Event()

    def do_get(self, context: Any, ticket: Any) -> Any:
        self.release.wait(30)
        raise KeyError("released")


def test_calls_have_deadlines() -> None:
    server = _StallingServer()
    try:
        config = FlameConfig(cache_endpoint=f"grpc://127.0.0.1:{server.port}", timeout=0.3)
        with CacheClient(config) as client, pytest.raises(DeadlineExceededError):
            client.get_object(ObjectRef(config.cache_endpoint, "a/s/x", 0))
    finally:
        server.release.set()
        server.shutdown()


# --------------------------------------------------------------------------- misuse


@pytest.mark.parametrize("prefix", ["a", "a/s/x", "a/*", "*/s", "a/../s", "a//", "a/s\\x"])
def test_put_object_checks_the_prefix_locally(prefix: str) -> None:
    # Nothing listens at this endpoint: a UsageError proves no call was made.
    with (
        CacheClient(FlameConfig(cache_endpoint="grpc://127.0.0.1:1", timeout=1)) as client,
        pytest.raises(UsageError, match="invalid key prefix"),
    ):
        client.put_object(prefix, 1)


@pytest.mark.parametrize("key", ["a/s", "a/s/x/y", "a/s/..", "a/*/x", "*/s/x", "a/s/*"])
def test_ref_keys_are_checked_locally(key: str) -> None:
    with CacheClient(FlameConfig(cache_endpoint="grpc://127.0.0.1:1", timeout=1)) as client:
        ref = ObjectRef("grpc://127.0.0.1:1", key, 1)
        for call in (
            lambda: client.get_object(ref),
            lambda: client.update_object(ref, 1),
            lambda: client.patch_object(ref, 1),
        ):
            with pytest.raises(UsageError, match="invalid object key"):
                call()


@pytest.mark.parametrize("pattern", ["a", "a/s/x/y", "*/s", "a/*/x", "a/s/*", ""])
def test_delete_patterns_are_checked_locally(pattern: str) -> None:
    with (
        CacheClient(FlameConfig(cache_endpoint="grpc://127.0.0.1:1", timeout=1)) as client,
        pytest.raises(UsageError),
    ):
        client.delete_objects(pattern)


def test_closed_client_refuses_calls(cache: FakeObjectCache) -> None:
    client = CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=5))
    client.put_object("a/s", 1)
    client.close()
    client.close()
    with pytest.raises(UsageError, match="closed"):
        client.put_object("a/s", 1)


def test_server_refusals_become_flame_errors(client: CacheClient) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        client.get_object(ObjectRef(client.endpoint, "a/s/nothing", 0))
    with pytest.raises(NotFoundError, match="not found for patch"):
        client.patch_object(ObjectRef(client.endpoint, "a/s/nothing", 1), 1)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "value",
    [
        {"nested": [1, 2.5, "x", None]},
        b"\x00" * 10,
        np.arange(12, dtype=np.int32).reshape(3, 4),
        pa.array([1, None, 3]),
    ],
    ids=["dict", "bytes", "numpy", "arrow-array"],
)
def test_put_get_round_trip(client: CacheClient, value: Any) -> None:
    ref = client.put_object("app/ssn", value)
    assert ref.version == 1 and ref.key.startswith("app/ssn/")
    got = client.get_object(ref)
    if isinstance(value, np.ndarray):
        np.testing.assert_array_equal(got, value)
    elif isinstance(value, pa.Array):
        assert got.equals(value)
    else:
        assert got == value


def test_tables_are_stored_natively(client: CacheClient, cache: FakeObjectCache) -> None:
    table = pa.table({"a": [1, 2]}).replace_schema_metadata({b"mine": b"yes"})
    ref = client.put_object("app/ssn", table)
    assert cache.store.native_schema(ref.key) is not None
    got = client.get_object(ref)
    assert got.equals(table) and got.schema.metadata == {b"mine": b"yes"}
    batch = pa.record_batch({"b": [1.5]})
    assert client.get_object(client.put_object("app/ssn", batch)).equals(batch)


# --------------------------------------------------------------------------- local cache


def test_second_get_is_not_modified_and_returns_the_cached_object(
    client: CacheClient, tickets: list[tuple[str, int]]
) -> None:
    ref = client.put_object("a/s", {"big": "value"})
    first = client.get_object(ref)
    second = client.get_object(ref)
    assert second is first
    assert tickets == [(ref.key, 0), (ref.key, 1)]


def test_patches_are_fetched_incrementally(client: CacheClient, tickets: list[tuple[str, int]]) -> None:
    ref = client.put_object("a/s", [0])

    def fold(base: list[int], patches: list[int]) -> list[int]:
        return base + patches

    assert client.get_object(ref, fold) == [0]
    ref = client.patch_object(ref, 1)
    ref = client.patch_object(ref, 2)
    assert client.get_object(ref, fold) == [0, 1, 2]
    ref = client.patch_object(ref, 3)
    assert client.get_object(ref, fold) == [0, 1, 2, 3]
    # Without a deserializer only the base is returned.
    assert client.get_object(ref) == [0]
    assert tickets == [(ref.key, 0), (ref.key, 1), (ref.key, 3), (ref.key, 4)]


def test_version_zero_forces_a_full_fetch(client: CacheClient, tickets: list[tuple[str, int]]) -> None:
    ref = client.put_object("a/s", "v")
    client.get_object(ref)
    assert client.get_object(ref.with_version(0)) == "v"
    assert tickets == [(ref.key, 0), (ref.key, 0)]


def test_updates_by_another_writer_are_seen(cache: FakeObjectCache, client: CacheClient) -> None:
    ref = client.put_object("a/s", "one")
    assert client.get_object(ref) == "one"
    with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=10)) as other:
        other.update_object(ref, "two")
        other.patch_object(ref, "p")
    assert client.get_object(ref, lambda b, p: (b, p)) == ("two", ["p"])


def test_folded_views_are_memoized_per_deserializer(client: CacheClient) -> None:
    calls: list[int] = []

    def fold(base: int, patches: list[int]) -> int:
        calls.append(1)
        return base + sum(patches)

    ref = client.patch_object(client.put_object("a/s", 1), 2)
    assert client.get_object(ref, fold) == 3
    assert client.get_object(ref, fold) == 3
    assert client.get_object(ref, lambda b, p: -b) == -1
    assert len(calls) == 1


def test_local_cache_is_bounded(cache: FakeObjectCache, tickets: list[tuple[str, int]]) -> None:
    with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=10), max_cached_objects=1) as client:
        a = client.put_object("a/s", "a")
        b = client.put_object("a/s", "b")
        client.get_object(a)
        client.get_object(b)  # pushes a out
        client.get_object(a)
    assert [v for _, v in tickets] == [0, 0, 0]


def test_delete_drops_local_copies(client: CacheClient) -> None:
    ref = client.put_object("a/s1", "x")
    client.get_object(ref)
    client.delete_objects("a/*")
    with pytest.raises(NotFoundError):
        client.get_object(ref)
    assert client.put_object("a/s1", "y").version == 1


# --------------------------------------------------------------------------- files


def test_upload_streams_one_mebibyte_rows_and_download_restores_the_file(
    client: CacheClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    original = _cache_store.PayloadBuilder.add

    def spy(self: _cache_store.PayloadBuilder, cell: pa.Buffer) -> None:
        sizes.append(cell.size)
        original(self, cell)

    monkeypatch.setattr(_cache_store.PayloadBuilder, "add", spy)
    source = tmp_path / "pkg.tar.gz"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 123))
    ref = client.upload_object("app/pkg/pkg.tar.gz", source)
    assert ref.key == "app/pkg/pkg.tar.gz" and ref.version == 1
    assert sizes == [1024 * 1024] * 3 + [123]
    out = client.download_object(ref, tmp_path / "deep" / "dir" / "copy.tar.gz")
    assert out == tmp_path / "deep" / "dir" / "copy.tar.gz"
    assert out.read_bytes() == source.read_bytes()
    by_key = client.download_object("app/pkg/pkg.tar.gz", tmp_path / "by-key")
    assert by_key.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "deep" / "dir").iterdir()) == ["copy.tar.gz"]


def test_upload_to_a_prefix_generates_an_id(client: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"abc")
    ref = client.upload_object("app/pkg", source)
    assert ref.key.startswith("app/pkg/") and len(ref.key.split("/")[2]) == 36


def test_empty_file_round_trip(client: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")
    ref = client.upload_object("app/pkg/empty", source)
    assert client.download_object(ref, tmp_path / "out").read_bytes() == b""


def test_upload_errors(client: CacheClient, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot upload"):
        client.upload_object("app/pkg/x", tmp_path / "missing")
    with pytest.raises(UsageError):
        client.upload_object("app/*", tmp_path / "missing")


def test_download_refuses_tables_and_patched_objects_leaving_no_file(
    client: CacheClient, tmp_path: Path
) -> None:
    table_ref = client.put_object("a/s", pa.table({"a": [1]}))
    with pytest.raises(UsageError, match="Arrow table"):
        client.download_object(table_ref, tmp_path / "t")
    patched = client.patch_object(client.put_object("a/s", b"x"), b"y")
    with pytest.raises(UsageError, match="patches"):
        client.download_object(patched, tmp_path / "p")
    with pytest.raises(NotFoundError):
        client.download_object("a/s/none", tmp_path / "n")
    assert list(tmp_path.iterdir()) == []


def test_big_values_go_out_in_rows_of_at_most_one_mebibyte(
    client: CacheClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    original = _cache_store.PayloadBuilder.add

    def spy(self: _cache_store.PayloadBuilder, cell: pa.Buffer) -> None:
        sizes.append(cell.size)
        original(self, cell)

    monkeypatch.setattr(_cache_store.PayloadBuilder, "add", spy)
    blob = os.urandom(2 * 1024 * 1024 + 5)
    ref = client.put_object("a/s", blob)
    assert len(sizes) > 2 and max(sizes) <= 1024 * 1024
    assert client.get_object(ref) == blob
    sizes.clear()
    ref = client.patch_object(ref, blob)
    assert len(sizes) > 2 and client.get_object(ref, lambda b, p: p) == [blob]


def test_folded_views_per_object_are_bounded(client: CacheClient) -> None:
    ref = client.put_object("a/s", 1)
    for i in range(20):
        assert client.get_object(ref, lambda b, p, i=i: b + i) == 1 + i
    entry = client._cached((ref.endpoint, ref.key))
    assert entry is not None and 0 < len(entry.views) <= 4


def test_warm_up_opens_the_connection_with_one_list_actions() -> None:
    from flamepy_fake import FakeCluster

    with FakeCluster() as cluster, CacheClient(cluster.config) as client:
        cluster.calls.clear()
        client.warm_up()
        flight_calls = cluster.calls(service="arrow.flight.protocol.FlightService")
        assert [(c.method, c.status) for c in flight_calls] == [("ListActions", "OK")]


def test_warm_up_of_an_unreachable_cache_raises_nothing_and_keeps_its_deadline() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = FlameConfig(endpoint="http://127.0.0.1:1", cache_endpoint=f"grpc://127.0.0.1:{port}")
    with CacheClient(config) as client:
        start = time.monotonic()
        client.warm_up(timeout=0.5)
        assert time.monotonic() - start < 5.0
        with pytest.raises(UnavailableError):  # the next real call reports the failure
            client.get_object(ObjectRef(config.cache_endpoint, "a/b/c", 0))
