"""The fake object cache's state model (no Flight): keys, versions, patches, eviction, disk."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pytest

from flamepy_fake._cache import _store as cs
from flamepy_fake._cache._store import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    NativeTable,
    ObjectStore,
    PayloadBuilder,
    StoreError,
    parse_full_key,
    parse_path,
    parse_ticket,
)


def buf(data: bytes) -> pa.Buffer:
    return pa.py_buffer(data)


def native(version_meta: bytes = b"0", logical: bytes = b"pyarrow.table") -> NativeTable:
    table = pa.table({"x": [1, 2, 3]}).replace_schema_metadata(
        {
            b"flame.cache.format": b"arrow-table-v1",
            b"flame.cache.version": version_meta,
            b"flame.cache.logical_type": logical,
            b"user": b"kept",
        }
    )
    return NativeTable(schema=table.schema, batches=tuple(table.to_batches()))


def rows(result: cs.GetResult) -> list[tuple[int, str, bytes]]:
    return [(r.version, r.kind, r.data.to_pybytes()) for r in result.rows]


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a/s", cs.ObjectPath("a", "s")),
        ("a/s/id", cs.ObjectPath("a", "s", "id")),
        ("a/*", cs.ObjectPath("a", "*")),
        ("my app/s:1/x.tar.gz", cs.ObjectPath("my app", "s:1", "x.tar.gz")),
        ("a/./b", cs.ObjectPath("a", ".", "b")),
    ],
)
def test_parse_path_accepts(text: str, expected: cs.ObjectPath) -> None:
    assert parse_path(text) == expected


PATH_SHAPE = "expected '<app>/<ssn>' or '<app>/<ssn>/<uuid>'"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # v0.6.0's path parser texts (v0.6.0.md section 7).
        ("a", f"Invalid path 'a': {PATH_SHAPE}"),
        ("a/b/c/d", f"Invalid path 'a/b/c/d': {PATH_SHAPE}"),
        ("a//c", "Invalid key component: ''"),
        ("/s", "Invalid key component: ''"),
        ("a/s/", "Invalid key component: ''"),
        ("a/s/my..pkg.tar.gz", "Invalid key component: 'my..pkg.tar.gz'"),
        ("a/../x", "Invalid key component: '..'"),
        ("a/s\\x/y", "Invalid key component: 's\\x'"),
        ("*/s", "Wildcard '*' only allowed for session_id"),
        ("a/*/x", "Wildcard session '*' cannot have object_id"),
        # v0.6.0 checks the parts in turn before the three-part shape (measured on real):
        ("a/s/*", "Wildcard '*' only allowed for session_id"),
        ("a/*/*", "Wildcard '*' only allowed for session_id"),
        ("*/..", "Wildcard '*' only allowed for session_id"),  # the first part decides
        ("a/..x/*", "Invalid key component: '..x'"),
    ],
)
def test_parse_path_rejects_with_upstreams_text(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_path(text)
    assert str(info.value) == reason


def test_full_key_parser_needs_three_components_but_tolerates_star() -> None:
    assert parse_full_key("a/*/x").session == "*"
    for bad, message in (
        ("a/s", "Invalid key 'a/s': expected '<app>/<ssn>/<uuid>'"),
        ("a/s/x/y", "Invalid key 'a/s/x/y': expected '<app>/<ssn>/<uuid>'"),
        ("a//x", "Invalid key component: ''"),
        ("a/s/..x", "Invalid key component: '..x'"),
    ):
        with pytest.raises(StoreError) as info:
            parse_full_key(bad)
        assert (info.value.code, info.value.message) == (INVALID_ARGUMENT, message)


def test_parse_ticket_splits_at_first_colon() -> None:
    assert parse_ticket(b"a/s/x") == ("a/s/x", 0)
    assert parse_ticket(b"a/s/x:7") == ("a/s/x", 7)
    assert parse_ticket(b"a/s/x:+7") == ("a/s/x", 7)  # Rust's u64 parser takes a plus sign
    assert parse_ticket(b"a/s/x:18446744073709551615") == ("a/s/x", 2**64 - 1)
    # A key with ':' cannot be read back: the rest becomes the version, which is invalid.
    with pytest.raises(StoreError) as info:
        parse_ticket(b"a/s/x:y:3")
    assert info.value.message == "Invalid version: invalid digit found in string"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"a/s/x:abc", "Invalid version: invalid digit found in string"),
        (b"a/s/x:-1", "Invalid version: invalid digit found in string"),
        (b"a/s/x: 1", "Invalid version: invalid digit found in string"),
        (b"a/s/x:1.0", "Invalid version: invalid digit found in string"),
        (b"a/s/x:+", "Invalid version: invalid digit found in string"),
        (b"a/s/x:", "Invalid version: cannot parse integer from empty string"),
        (b"a/s/x:18446744073709551616", "Invalid version: number too large to fit in target type"),
    ],
)
def test_parse_ticket_rejects_non_integer_versions(raw: bytes, message: str) -> None:
    with pytest.raises(StoreError) as info:
        parse_ticket(raw)
    assert (info.value.code, info.value.message) == (INVALID_ARGUMENT, message)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff:1", "Invalid ticket: invalid utf-8 sequence of 1 bytes from index 0"),
        (b"a/s/\xff\xfe:1", "Invalid ticket: invalid utf-8 sequence of 1 bytes from index 4"),
        (b"ab\xe2\x82", "Invalid ticket: incomplete utf-8 byte sequence from index 2"),
    ],
)
def test_parse_ticket_rejects_non_utf8_with_rusts_text(raw: bytes, message: str) -> None:
    with pytest.raises(StoreError) as info:
        parse_ticket(raw)
    assert (info.value.code, info.value.message) == (INVALID_ARGUMENT, message)


def test_covers_follows_delete_forms() -> None:
    assert parse_path("a/*").covers("a/s/x")
    assert not parse_path("a/*").covers("ab/s/x")
    assert parse_path("a/s").covers("a/s/x")
    assert not parse_path("a/s").covers("a/s2/x")
    assert parse_path("a/s/x").covers("a/s/x")
    assert not parse_path("a/s/x").covers("a/s/xy")


# --------------------------------------------------------------------------- versions


def test_prefix_put_generates_uuid4_and_full_key_put_keeps_id() -> None:
    store = ObjectStore()
    key, version = store.put("a/s", buf(b"x"))
    app, session, oid = key.split("/")
    assert (app, session, version) == ("a", "s", 1)
    assert len(oid) == 36 and oid[14] == "4" and oid == oid.lower()
    assert store.put("app/pkg/app.tar.gz", buf(b"y")) == ("app/pkg/app.tar.gz", 1)


def test_versions_follow_the_reference_example() -> None:
    # put v1 -> patch v2 -> patch v3 -> update v4; a ticket at version 1 then gets the full object at v4.
    store = ObjectStore()
    key, v1 = store.put("a/s/x", buf(b"base"))
    _, v2 = store.patch(key, buf(b"p1"))
    _, v3 = store.patch(key, buf(b"p2"))
    _, v4 = store.put(key, buf(b"new"))
    assert (v1, v2, v3, v4) == (1, 2, 3, 4)
    assert rows(store.get(key, 1)) == [(4, "base", b"new")]


def test_delete_resets_versions() -> None:
    store = ObjectStore()
    store.put("a/s/x", buf(b"1"))
    store.put("a/s/x", buf(b"2"))
    assert store.delete("a/s/x") == ["a/s/x"]
    assert store.put("a/s/x", buf(b"3")) == ("a/s/x", 1)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a/*", f"Invalid path 'a': {PATH_SHAPE}"),  # a wildcard collapses to the app alone
        ("a", f"Invalid path 'a': {PATH_SHAPE}"),
        ("a/b/c/d", f"Invalid path 'a/b/c/d': {PATH_SHAPE}"),
        ("a/../b", "Invalid key component: '..'"),
        ("a/s\\/x", "Invalid key component: 's\\'"),
        ("a//x", "Invalid key component: ''"),
        ("a/s/*", "Wildcard '*' only allowed for session_id"),
    ],
)
def test_put_rejects_wildcard_and_bad_paths(path: str, message: str) -> None:
    store = ObjectStore()
    with pytest.raises(StoreError) as info:
        store.put(path, buf(b"x"))
    assert (info.value.code, info.value.message) == (INVALID_ARGUMENT, message)
    assert store.list_keys() == []


def test_patch_errors() -> None:
    store = ObjectStore()
    with pytest.raises(StoreError) as info:
        store.patch("a/s/missing", buf(b"x"))
    assert (info.value.code, info.value.message) == (NOT_FOUND, "object <a/s/missing> not found for patch")
    with pytest.raises(StoreError) as info:
        store.patch("a/s", buf(b"x"))
    assert (info.value.code, info.value.message) == (
        INVALID_ARGUMENT,
        "Invalid key 'a/s': expected '<app>/<ssn>/<uuid>'",
    )
    with pytest.raises(StoreError) as info:
        store.patch("a/s/../x", buf(b"x"))
    assert (info.value.code, info.value.message) == (
        INVALID_ARGUMENT,
        "Invalid key 'a/s/../x': expected '<app>/<ssn>/<uuid>'",
    )
    with pytest.raises(StoreError) as info:
        store.patch("a/s/..x", buf(b"x"))
    assert (info.value.code, info.value.message) == (INVALID_ARGUMENT, "Invalid key component: '..x'")


@pytest.fixture(name="patched")
def _patched() -> tuple[ObjectStore, str]:
    store = ObjectStore()
    key, _ = store.put("a/s/x", buf(b"base"))
    store.patch(key, buf(b"p2"))
    store.patch(key, buf(b"p3"))
    return store, key


def test_get_full_not_modified_and_patches_only(patched: tuple[ObjectStore, str]) -> None:
    store, key = patched
    full = [(1, "base", b"base"), (2, "patch", b"p2"), (3, "patch", b"p3")]
    assert rows(store.get(key, 0)) == full
    assert store.get(key, 3).not_modified
    assert rows(store.get(key, 1)) == [(2, "patch", b"p2"), (3, "patch", b"p3")]
    assert rows(store.get(key, 2)) == [(3, "patch", b"p3")]
    # A client ahead of the server gets everything again.
    assert rows(store.get(key, 9)) == full


def test_get_full_when_client_is_older_than_the_base() -> None:
    store = ObjectStore()
    key, _ = store.put("a/s/x", buf(b"v1"))
    store.put(key, buf(b"v2"))
    store.patch(key, buf(b"p3"))
    assert rows(store.get(key, 1)) == [(2, "base", b"v2"), (3, "patch", b"p3")]


def test_get_errors() -> None:
    store = ObjectStore()
    with pytest.raises(StoreError) as info:
        store.get("a/s/nope", 0)
    assert (info.value.code, info.value.message) == (NOT_FOUND, "object <a/s/nope> not found")
    with pytest.raises(StoreError) as info:
        store.get("a/s", 0)
    assert info.value.code == INVALID_ARGUMENT


def test_native_table_is_stamped_and_never_sends_patches() -> None:
    store = ObjectStore()
    key, v1 = store.put("a/s", native())
    result = store.get(key, 0)
    assert result.native is not None and v1 == 1
    meta = result.native.schema.metadata
    assert meta[b"flame.cache.version"] == b"1"
    assert meta[b"flame.cache.logical_type"] == b"pyarrow.table"
    assert meta[b"user"] == b"kept"
    assert result.native.table().column("x").to_pylist() == [1, 2, 3]
    assert store.get(key, 1).not_modified
    _, v2 = store.patch(key, buf(b"ignored"))
    after = store.get(key, 1)
    # Version stays at the base (B=1) while S=2: the client never sees not-modified (the quirk).
    assert v2 == 2 and after.native is not None
    assert after.native.schema.metadata[b"flame.cache.version"] == b"1"
    assert store.get(key, 2).not_modified
    assert store.native_schema(key) is not None
    assert store.native_schema("a/s/unknown") is None


def test_delete_forms_and_listing() -> None:
    store = ObjectStore()
    keep = store.put("b/s/k", buf(b"k"))[0]
    for key in ("a/s1/x", "a/s1/y", "a/s2/z"):
        store.put(key, buf(b"1234"))
    assert store.delete("a/s1/x") == ["a/s1/x"]
    assert store.delete("a/none") == []
    assert sorted(store.delete("a/s1")) == ["a/s1/y"]
    assert store.delete("a/*") == ["a/s2/z"]
    assert store.listing() == [(keep, 1)]
    with pytest.raises(StoreError) as info:
        store.delete("a/s/x/y")
    assert info.value.code == INVALID_ARGUMENT


# --------------------------------------------------------------------------- payload builder


def test_payload_builder_keeps_a_single_cell_without_copy() -> None:
    cell = pa.py_buffer(b"x" * 100)
    builder = PayloadBuilder()
    builder.add(cell)
    builder.add(pa.py_buffer(b""))
    out = builder.finish()
    assert out.address == cell.address and builder.rows == 2


def test_payload_builder_concatenates_in_order() -> None:
    builder = PayloadBuilder()
    for part in (b"ab", b"", b"cd", b"ef"):
        builder.add(pa.py_buffer(part))
    assert builder.finish().to_pybytes() == b"abcdef"
    assert PayloadBuilder().finish().to_pybytes() == b""


# --------------------------------------------------------------------------- eviction


def test_lru_evicts_least_recently_read_but_keeps_metadata() -> None:
    store = ObjectStore(max_memory=25)
    a = store.put("a/s/a", buf(b"a" * 10))[0]
    b = store.put("a/s/b", buf(b"b" * 10))[0]
    store.get(a, 0)  # a is now more recent than b
    c = store.put("a/s/c", buf(b"c" * 10))[0]
    assert (store.is_resident(a), store.is_resident(b), store.is_resident(c)) == (True, False, True)
    assert store.resident_bytes == 20
    # Metadata survives: listed, and versions keep counting.
    assert b in store.list_keys()
    with pytest.raises(StoreError) as info:
        store.get(b, 0)
    assert info.value.code == NOT_FOUND
    with pytest.raises(StoreError) as info:
        store.patch(b, buf(b"x"))
    assert info.value.code == NOT_FOUND
    assert store.put(b, buf(b"b"))[1] == 2


def test_object_just_written_is_never_evicted_even_when_too_big() -> None:
    store = ObjectStore(max_memory=5)
    small = store.put("a/s/small", buf(b"1234"))[0]
    big, _ = store.put("a/s/big", buf(b"x" * 100))
    assert store.is_resident(big) and not store.is_resident(small)
    assert rows(store.get(big, 0)) == [(1, "base", b"x" * 100)]
    # A patch on the big object keeps it too.
    store.patch(big, buf(b"y" * 10))
    assert store.is_resident(big)


def test_max_objects_limit() -> None:
    store = ObjectStore(max_objects=2)
    keys = [store.put(f"a/s/{i}", buf(b"x"))[0] for i in range(3)]
    assert [store.is_resident(k) for k in keys] == [False, True, True]


# --------------------------------------------------------------------------- disk


def test_disk_layout_and_restart(tmp_path: Path) -> None:
    store = ObjectStore(storage_dir=tmp_path)
    key, _ = store.put("app/ssn/obj", buf(b"base"))
    store.patch(key, buf(b"p2"))
    store.patch(key, buf(b"p3"))
    tkey, _ = store.put("app/ssn/tbl", native())
    base_file = tmp_path / "app" / "ssn" / "obj.arrow"
    assert base_file.is_file()
    assert sorted(p.name for p in (tmp_path / "app" / "ssn" / "obj.deltas").iterdir()) == [
        "0.arrow",
        "1.arrow",
    ]
    stored = pyarrow.ipc.open_file(pa.memory_map(str(base_file))).read_all()
    assert stored.column("data").to_pylist() == [b"base"] and stored.column("version").to_pylist() == [1]

    again = ObjectStore(storage_dir=tmp_path)
    assert rows(again.get(key, 0)) == [(1, "base", b"base"), (2, "patch", b"p2"), (3, "patch", b"p3")]
    assert again.patch(key, buf(b"p4"))[1] == 4
    restored = again.get(tkey, 0).native
    assert restored is not None and restored.schema.metadata[b"flame.cache.version"] == b"1"
    # A put rewrites the base and drops the deltas.
    assert again.put(key, buf(b"new"))[1] == 5
    assert not (tmp_path / "app" / "ssn" / "obj.deltas").exists()


def test_disk_delete_removes_files(tmp_path: Path) -> None:
    store = ObjectStore(storage_dir=tmp_path)
    store.put("a/s1/x", buf(b"1"))
    store.patch("a/s1/x", buf(b"2"))
    store.put("a/s2/y", buf(b"1"))
    store.put("b/s/z", buf(b"1"))
    store.delete("a/s1/x")
    assert not (tmp_path / "a" / "s1" / "x.arrow").exists()
    assert not (tmp_path / "a" / "s1" / "x.deltas").exists()
    store.delete("a/*")
    assert not (tmp_path / "a").exists()
    assert (tmp_path / "b" / "s" / "z.arrow").exists()
    assert ObjectStore(storage_dir=tmp_path).list_keys() == ["b/s/z"]


def test_disk_reloads_evicted_objects(tmp_path: Path) -> None:
    store = ObjectStore(storage_dir=tmp_path, max_memory=15)
    a = store.put("a/s/a", buf(b"a" * 10))[0]
    store.patch(a, buf(b"p"))
    store.put("a/s/b", buf(b"b" * 10))
    assert not store.is_resident(a)
    assert rows(store.get(a, 0)) == [(1, "base", b"a" * 10), (2, "patch", b"p")]
    assert store.is_resident(a)
    assert store.patch(a, buf(b"q"))[1] == 3


def test_disk_reads_files_written_by_other_clients(tmp_path: Path) -> None:
    # flamepy's client-local storage mode writes the base itself at version 0, after start-up.
    store = ObjectStore(storage_dir=tmp_path)
    target = tmp_path / "a" / "s" / "ext.arrow"
    target.parent.mkdir(parents=True)
    schema = pa.schema([("version", pa.uint64()), ("data", pa.binary())])
    with pyarrow.ipc.new_file(str(target), schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([0], pa.uint64()), pa.array([b"ext"])], schema=schema))
    assert rows(store.get("a/s/ext", 0)) == [(0, "base", b"ext")]
    assert store.put("a/s/ext", buf(b"v"))[1] == 1


def test_disk_skips_unreadable_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a" / "s").mkdir(parents=True)
    (tmp_path / "a" / "s" / "junk.arrow").write_bytes(b"not arrow")
    store = ObjectStore(storage_dir=tmp_path)
    assert store.list_keys() == []
    assert "junk.arrow" in caplog.text


def test_disk_refuses_dot_components(tmp_path: Path) -> None:
    store = ObjectStore(storage_dir=tmp_path)
    with pytest.raises(StoreError) as info:
        store.put("./s/x", buf(b"x"))
    assert info.value.code == INVALID_ARGUMENT
    store.put("keep/s/x", buf(b"x"))
    # Deleting "./*" must not wipe the storage root.
    store.delete("./*")
    assert (tmp_path / "keep" / "s" / "x.arrow").exists()


def test_disk_patch_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cs, "MAX_PATCHES_ON_DISK", 2)
    store = ObjectStore(storage_dir=tmp_path)
    store.put("a/s/x", buf(b"x"))
    store.patch("a/s/x", buf(b"1"))
    store.patch("a/s/x", buf(b"2"))
    with pytest.raises(StoreError) as info:
        store.patch("a/s/x", buf(b"3"))
    assert (info.value.code, info.value.message) == (
        INVALID_ARGUMENT,
        "object <a/s/x> has reached maximum delta count (2)",
    )
    # Memory-only stores have no cap.
    mem = ObjectStore()
    mem.put("a/s/x", buf(b"x"))
    for i in range(3):
        mem.patch("a/s/x", buf(b"%d" % i))


# --------------------------------------------------------------------------- concurrency


def test_concurrent_patches_are_all_kept_with_unique_versions() -> None:
    store = ObjectStore()
    key, _ = store.put("a/s/x", buf(b"base"))
    versions: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(50):
            _, v = store.patch(key, buf(f"{n}-{i}".encode()))
            with lock:
                versions.append(v)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(2, 202))
    patches = store.get(key, 0).rows[1:]
    assert sorted(r.data.to_pybytes() for r in patches) == sorted(
        f"{n}-{i}".encode() for n in range(4) for i in range(50)
    )


@pytest.mark.parametrize(
    ("hint", "parts"),
    [
        (6, [b"ab", b"cd", b"ef"]),  # exact
        (10, [b"ab", b"cd", b"ef"]),  # more announced than sent
        (3, [b"ab", b"cd", b"ef"]),  # less announced than sent
        (2**62, [b"ab", b"cd"]),  # absurd: ignored
        (0, [b"ab", b"cd"]),
    ],
)
def test_payload_builder_size_hints_never_change_the_result(hint: int, parts: list[bytes]) -> None:
    builder = PayloadBuilder()
    builder.reserve(hint)
    for part in parts:
        builder.add(pa.py_buffer(part))
    assert builder.finish().to_pybytes() == b"".join(parts)


def test_payload_builder_with_exact_hint_fills_one_buffer() -> None:
    builder = PayloadBuilder()
    builder.reserve(4)
    builder.add(pa.py_buffer(b"ab"))
    builder.add(pa.py_buffer(b"cd"))
    out = builder.finish()
    assert out.size == 4 and out.to_pybytes() == b"abcd"
    late = PayloadBuilder()
    late.add(pa.py_buffer(b"x"))
    late.reserve(100)  # too late to matter
    late.add(pa.py_buffer(b"y"))
    assert late.finish().to_pybytes() == b"xy"
