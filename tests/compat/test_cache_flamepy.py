"""flamepy 0.6.0's cache client against the fake cache, and flamepy <-> flamepy_runner interchange."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flamepy_fake._cache import _store as _cache_store
from flamepy_fake._cache._server import FakeObjectCache
from flamepy_runner import FlameConfig
from flamepy_runner import _serialization as ser
from flamepy_runner._cache import CacheClient, ObjectRef

pytestmark = pytest.mark.fake


def _point_flamepy_at(fc: ModuleType, endpoint: str, monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Give flamepy a fresh view of the world: env config only, and none of its module-level caches."""
    monkeypatch.setenv("HOME", str(home))  # so no ~/.flame/flame.yaml is read
    monkeypatch.setenv("FLAME_CACHE_ENDPOINT", endpoint)
    for name in ("FLAME_CACHE_STORAGE", "FLAME_CA_FILE", "FLAME_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(fc, "_context_cache", None)  # FlameContext is read once per process
    monkeypatch.setattr(fc, "_client_pool", {})  # FlightClients keyed by location
    monkeypatch.setattr(fc, "_object_cache", OrderedDict())  # its versioned object LRU


@pytest.fixture(name="cache")
def _cache() -> Iterator[FakeObjectCache]:
    with FakeObjectCache() as cache:
        yield cache


@pytest.fixture(name="fc")
def _flamepy(cache: FakeObjectCache, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    from flamepy.core import cache as fc

    _point_flamepy_at(fc, cache.endpoint, monkeypatch, tmp_path / "home")
    yield fc
    for client in fc._client_pool.values():
        client.close()


@pytest.fixture(name="ours")
def _ours(cache: FakeObjectCache) -> Iterator[CacheClient]:
    with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=20)) as client:
        yield client


@pytest.fixture(name="tickets")
def _tickets(cache: FakeObjectCache, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    seen: list[int] = []
    original = cache.store.get

    def spy(key: str, version: int) -> _cache_store.GetResult:
        seen.append(version)
        return original(key, version)

    monkeypatch.setattr(cache.store, "get", spy)
    return seen


def fold(base: Any, patches: list[Any]) -> Any:
    return [base, *patches]


VALUES: list[Any] = [
    {"nested": [1, "two", 3.0]},
    np.arange(12, dtype=np.int64).reshape(3, 4),
    pa.table({"a": [1, 2], "b": ["x", "y"]}),
    pa.record_batch({"c": [0.5, 1.5]}),
    pa.array([1, None, 3]),
]
IDS = ["pickle", "numpy", "table", "batch", "array"]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, (pa.Table, pa.RecordBatch, pa.Array)):
        return bool(a.equals(b))
    return bool(a == b)


# --------------------------------------------------------------------------- flamepy vs the fake


def test_flamepy_put_get_update_delete(fc: ModuleType, cache: FakeObjectCache) -> None:
    ref = fc.put_object("app/ssn", {"x": 1})
    assert (ref.endpoint, ref.version) == (cache.endpoint, 1) and ref.key.startswith("app/ssn/")
    assert fc.get_object(ref) == {"x": 1}
    new = fc.update_object(ref, {"x": 2})
    assert new.version == 2 and new.key == ref.key
    assert fc.get_object(new) == {"x": 2}
    fc.delete_objects("app/ssn")
    with pytest.raises(pa.ArrowKeyError):
        fc.get_object(new)
    fc.delete_objects("app/*")  # nothing left: still one OK, no ValueError


def test_flamepy_patch_and_incremental_fetch(fc: ModuleType, tickets: list[int]) -> None:
    ref = fc.put_object("app/ssn", "base")
    assert fc.get_object(ref, fold) == ["base"]
    ref = fc.patch_object(ref, 1)
    ref = fc.patch_object(ref, 2)
    assert ref.version == 3
    assert fc.get_object(ref, fold) == ["base", 1, 2]
    assert fc.get_object(ref, fold) == ["base", 1, 2]
    # flamepy drops its copy on patch, so its own next get is full; a second reader's is not.
    assert tickets == [0, 0, 3]


def test_flamepy_reader_gets_only_new_patches(fc: ModuleType, ours: CacheClient, tickets: list[int]) -> None:
    ref = ours.put_object("app/ssn", "base")
    ref = ours.patch_object(ref, "p1")
    assert fc.get_object(ref, fold) == ["base", "p1"]
    ref = ours.patch_object(ref, "p2")
    assert fc.get_object(ref, fold) == ["base", "p1", "p2"]
    assert tickets[-2:] == [0, 2]
    ours.update_object(ref, "new")
    assert fc.get_object(ref, fold) == ["new"]


def test_flamepy_version_zero_forces_full_fetch(fc: ModuleType, tickets: list[int]) -> None:
    ref = fc.put_object("app/ssn", 5)
    fc.get_object(ref)
    ref.version = 0
    assert fc.get_object(ref) == 5
    assert tickets == [0, 0]


def test_flamepy_native_tables(fc: ModuleType, cache: FakeObjectCache) -> None:
    table = pa.table({"a": [1, 2, 3]})
    ref = fc.put_object("app/ssn", table)
    assert cache.store.native_schema(ref.key) is not None
    assert fc.get_object(ref).equals(table)
    batch = pa.record_batch({"b": [1]})
    got = fc.get_object(fc.put_object("app/ssn", batch))
    assert isinstance(got, pa.RecordBatch) and got.equals(batch)


def test_flamepy_upload_then_package_download(fc: ModuleType, ours: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "app.tar.gz"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 17))
    ref = fc.upload_object("app/pkg/app.tar.gz", str(source))
    assert (ref.key, ref.version) == ("app/pkg/app.tar.gz", 1)
    # What the executor manager does: DoGet "<key>:0" and concatenate the data cells.
    reader = flight.FlightClient(ref.endpoint).do_get(flight.Ticket(f"{ref.key}:0".encode()))
    table = reader.read_all()
    assert table.column("kind").to_pylist() == ["base"]
    assert b"".join(table.column("data").to_pylist()) == source.read_bytes()
    assert ours.download_object(
        ObjectRef(ref.endpoint, ref.key, ref.version), tmp_path / "d"
    ).read_bytes() == (source.read_bytes())


def test_flamepy_errors_match_the_real_cache(fc: ModuleType, cache: FakeObjectCache) -> None:
    with pytest.raises(pa.ArrowKeyError):
        fc.patch_object(fc.ObjectRef(cache.endpoint, "app/ssn/missing", 1), 1)
    with pytest.raises(pa.ArrowKeyError):
        fc.get_object(fc.ObjectRef(cache.endpoint, "app/ssn/missing", 0))
    with pytest.raises(ValueError):
        fc.put_object("app/*", 1)


def test_flamepy_client_local_storage_is_served_from_a_shared_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from flamepy.core import cache as fc

    shared = tmp_path / "shared"
    with FakeObjectCache(storage_dir=shared) as cache:
        _point_flamepy_at(fc, cache.endpoint, monkeypatch, tmp_path / "home")
        monkeypatch.setenv("FLAME_CACHE_STORAGE", str(shared))
        ref = fc.put_object("app/ssn", {"local": True})
        assert ref.endpoint == cache.endpoint and (shared / f"{ref.key}.arrow").is_file()
        with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=10)) as ours:
            assert ours.get_object(ref) == {"local": True}
        assert fc.get_object(ref) == {"local": True}
        for client in fc._client_pool.values():
            client.close()


# --------------------------------------------------------------------------- interchange


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_flamepy_writes_we_read(fc: ModuleType, ours: CacheClient, value: Any) -> None:
    ref = fc.put_object("app/ssn", value)
    assert same(value, ours.get_object(ObjectRef.decode(ref.encode())))


@pytest.mark.parametrize("value", VALUES, ids=IDS)
def test_we_write_flamepy_reads(fc: ModuleType, ours: CacheClient, value: Any) -> None:
    ref = ours.put_object("app/ssn", value)
    assert same(value, fc.get_object(fc.ObjectRef.decode(ref.encode())))


@pytest.mark.parametrize("delta", VALUES, ids=IDS)
def test_patches_cross_both_ways(fc: ModuleType, ours: CacheClient, delta: Any) -> None:
    ref = fc.put_object("app/ssn", "base")
    ref = fc.patch_object(ref, delta)
    mine = ObjectRef(ref.endpoint, ref.key, ref.version)
    mine = ours.patch_object(mine, delta)
    got = ours.get_object(mine, fold)
    assert got[0] == "base" and all(same(delta, d) for d in got[1:]) and len(got) == 3
    theirs = fc.get_object(fc.ObjectRef(mine.endpoint, mine.key, mine.version), fold)
    assert theirs[0] == "base" and all(same(delta, d) for d in theirs[1:]) and len(theirs) == 3


def test_upload_by_flamepy_download_by_us(fc: ModuleType, ours: CacheClient, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"0123456789" * 300_000)
    ref = fc.upload_object("app/pkg", str(source))
    assert ours.download_object(ref.key, tmp_path / "out").read_bytes() == source.read_bytes()


def test_object_refs_are_byte_identical(fc: ModuleType) -> None:
    theirs = fc.ObjectRef(endpoint="grpc://10.0.0.1:9090", key="a/s/x", version=7)
    mine = ObjectRef("grpc://10.0.0.1:9090", "a/s/x", 7)
    assert mine.encode() == theirs.encode()
    assert fc.ObjectRef.decode(mine.encode()) == theirs
    big = fc.ObjectRef(endpoint="e", key="a/s/x", version=2**40)
    assert ObjectRef.decode(big.encode()).version == 2**40
    assert ObjectRef("e", "a/s/x", 2**40).encode() == big.encode()


@pytest.mark.parametrize(
    "value",
    [*VALUES, np.asfortranarray(np.ones((2, 3))), np.float64(1.5), "s", None],
    ids=[*IDS, "fortran", "np-scalar", "str", "none"],
)
def test_payload_bytes_are_read_by_both_sides(fc: ModuleType, value: Any) -> None:
    assert same(value, ser.deserialize(fc._serialize_object_data(value)))
    assert same(value, fc._deserialize_object_data(ser.serialize(value)))
    assert ser.serialize(value)[:4] == fc._serialize_object_data(value)[:4]


def test_big_values_split_into_rows_are_read_whole_by_flamepy(fc: ModuleType, ours: CacheClient) -> None:
    blob = os.urandom(3 * 1024 * 1024 + 7)
    ref = ours.patch_object(ours.put_object("app/ssn", blob), blob[::-1])
    assert fc.get_object(fc.ObjectRef(ref.endpoint, ref.key, ref.version), fold) == [blob, blob[::-1]]
