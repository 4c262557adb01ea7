"""The object cache's wire behaviour, driven with a plain pyarrow Flight client (A3-A7).

These hold for the real Flame v0.6.0 object cache too: the ``real`` parameter runs against the
real cluster the rest of the contract suite uses (``FLAME_REAL_ENDPOINT`` and
``FLAME_REAL_CACHE_ENDPOINT``, or a fresh one in Docker). Errors are pinned by class *and* by
the server's exact text as v0.6.0 sends it (``shared/reference/v0.6.0.md`` section 7; see
``server_text`` for the one suffix the fake's pyarrow server adds). ``fake_only`` tests, each
with its reason, check where the fake deliberately differs (a clear error where the real cache
panics, decodable ListFlights/GetSchema answers where upstream's cannot be decoded by pyarrow)
or need its introspection.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import bson
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from bson.int64 import Int64
from support import eventually

from flamepy_fake._cache._server import FakeObjectCache

OPAQUE = pa.schema([("version", pa.uint64()), ("data", pa.binary())])
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
TIMEOUT = flight.FlightCallOptions(timeout=30)


@dataclass
class Cache:
    endpoint: str
    client: flight.FlightClient
    app: str
    fake: FakeObjectCache | None

    def put_rows(
        self, path_or_cmd: flight.FlightDescriptor, cells: list[bytes], schema: pa.Schema = OPAQUE
    ) -> dict:
        writer, reader = self.client.do_put(path_or_cmd, schema, TIMEOUT)
        try:
            for cell in cells:
                writer.write_batch(
                    pa.record_batch([pa.array([0], pa.uint64()), pa.array([cell])], schema=schema)
                )
            writer.done_writing()
            answer = reader.read()
            # Exactly one PutResult.
            assert reader.read() is None
        finally:
            writer.close()
        assert answer is not None
        return bson.decode(answer.to_pybytes())

    def put(self, path: str, *cells: bytes) -> dict:
        return self.put_rows(flight.FlightDescriptor.for_path(path), list(cells))

    def patch(self, key: str, cell: bytes) -> dict:
        return self.put_rows(flight.FlightDescriptor.for_command(f"PATCH:{key}".encode()), [cell])

    def get(self, ticket: str | bytes) -> pa.Table:
        raw = ticket.encode() if isinstance(ticket, str) else ticket
        return self.client.do_get(flight.Ticket(raw), TIMEOUT).read_all()

    def rows(self, ticket: str) -> list[tuple[int, str, bytes]]:
        table = self.get(ticket)
        assert table.schema.names == ["version", "kind", "data"]
        return list(
            zip(
                table.column("version").to_pylist(),
                table.column("kind").to_pylist(),
                table.column("data").to_pylist(),
                strict=True,
            )
        )

    def delete(self, body: bytes) -> list[bytes]:
        return [r.body.to_pybytes() for r in self.client.do_action(flight.Action("DELETE", body), TIMEOUT)]


@pytest.fixture(
    name="cache",
    params=[pytest.param("fake", marks=pytest.mark.fake), pytest.param("real", marks=pytest.mark.real)],
)
def _cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    app = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "real":
        # The same real cluster as every other contract test's (environment or Docker).
        endpoint = request.getfixturevalue("real_flame_backend").cache_endpoint
        client = flight.FlightClient(endpoint, generic_options=GRPC_OPTIONS)
        yield Cache(endpoint, client, app, None)
        list(client.do_action(flight.Action("DELETE", f"{app}/*".encode())))
        client.close()
        return
    with FakeObjectCache() as fake:
        client = flight.FlightClient(fake.endpoint, generic_options=GRPC_OPTIONS)
        yield Cache(fake.endpoint, client, app, fake)
        client.close()


@pytest.fixture(name="sentinel")
def _sentinel(cache: Cache) -> Iterator[str]:
    """An object stored before a bad request; it must survive it intact."""
    key = cache.put(f"{cache.app}/keep/sentinel", b"precious")["key"]
    cache.patch(key, b"delta")
    yield key
    assert cache.rows(f"{key}:0") == [(1, "base", b"precious"), (2, "patch", b"delta")]
    # And the server still takes new work.
    ref = cache.put(f"{cache.app}/after", b"still serving")
    assert cache.rows(f"{ref['key']}:0") == [(1, "base", b"still serving")]


def server_text(exc: BaseException) -> str:
    """The server's own message, without pyarrow's client framing.

    A real (Rust) cache's status arrives as ``Flight returned <kind> error, with message: <msg>``.
    The fake's pyarrow server appends ``. Detail: <server-side detail>`` to its message (for
    INVALID_ARGUMENT and NOT_FOUND, a Python traceback), which no pyarrow server can avoid; it is
    cut here, so the same assertion holds on both (README: differences from v0.6.0).
    """
    text = str(exc)
    prefix = re.match(r"Flight returned [a-z ]+ error, with message: ", text)
    if prefix is not None:
        text = text[prefix.end() :]
    text = text.split(". gRPC client debug context: ", 1)[0]
    return text.split(". Detail: ", 1)[0]


def fake_only(cache: Cache) -> FakeObjectCache:
    if cache.fake is None:
        pytest.skip("fake-only check")
    return cache.fake


# --------------------------------------------------------------------------- puts


def test_put_result_is_one_bson_document_with_int64_version(cache: Cache) -> None:
    writer, reader = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), OPAQUE, TIMEOUT)
    writer.write_batch(pa.record_batch([pa.array([0], pa.uint64()), pa.array([b"x"])], schema=OPAQUE))
    writer.done_writing()
    raw = reader.read().to_pybytes()
    writer.close()
    doc = bson.decode(raw, codec_options=bson.CodecOptions(document_class=dict))
    assert set(doc) == {"endpoint", "key", "version"}
    assert isinstance(doc["version"], Int64) and doc["version"] == 1
    assert doc["endpoint"] == cache.endpoint
    assert "0.0.0.0" not in doc["endpoint"]
    app, session, oid = doc["key"].split("/")
    assert (app, session) == (cache.app, "s")
    assert uuid.UUID(oid).version == 4 and str(uuid.UUID(oid)) == oid


def test_full_key_put_creates_then_overwrites_and_drops_patches(cache: Cache) -> None:
    key = f"{cache.app}/pkg/app.tar.gz"
    assert cache.put(key, b"one")["version"] == 1
    assert cache.patch(key, b"p")["version"] == 2
    assert cache.put(key, b"two") == {"endpoint": cache.endpoint, "key": key, "version": 3}
    assert cache.rows(f"{key}:0") == [(3, "base", b"two")]


def test_chunked_upload_concatenates_every_row_of_every_batch(cache: Cache) -> None:
    key = f"{cache.app}/pkg/file.bin"
    writer, reader = cache.client.do_put(flight.FlightDescriptor.for_path(key), OPAQUE, TIMEOUT)
    writer.write_batch(
        pa.record_batch([pa.array([0, 0], pa.uint64()), pa.array([b"ab", b"cd"])], schema=OPAQUE)
    )
    writer.write_batch(pa.record_batch([pa.array([7], pa.uint64()), pa.array([b"ef"])], schema=OPAQUE))
    writer.done_writing()
    reader.read()
    writer.close()
    assert cache.rows(f"{key}:0") == [(1, "base", b"abcdef")]


def test_large_single_message_is_accepted_both_ways(cache: Cache) -> None:
    # gRPC's default limit is 4 MiB; the cache must take and send far larger messages.
    blob = os.urandom(1024) * (20 * 1024)
    ref = cache.put(f"{cache.app}/big", blob)
    assert cache.get(f"{ref['key']}:0").column("data")[0].as_buffer() == pa.py_buffer(blob)


def test_delete_resets_versions(cache: Cache) -> None:
    key = f"{cache.app}/s/x"
    cache.put(key, b"1")
    cache.put(key, b"2")
    assert cache.delete(key.encode()) == [b"OK"]
    assert cache.put(key, b"3")["version"] == 1


# --------------------------------------------------------------------------- gets


def test_get_full_not_modified_and_patches_only(cache: Cache) -> None:
    key = cache.put(f"{cache.app}/s", b"base")["key"]
    cache.patch(key, b"p2")
    assert cache.patch(key, b"p3")["version"] == 3
    full = [(1, "base", b"base"), (2, "patch", b"p2"), (3, "patch", b"p3")]
    assert cache.rows(f"{key}:0") == full
    assert cache.rows(key) == full  # no ':' means version 0
    assert cache.rows(f"{key}:1") == [(2, "patch", b"p2"), (3, "patch", b"p3")]
    not_modified = cache.get(f"{key}:3")
    assert not_modified.num_rows == 0 and not_modified.schema.names == ["version", "kind", "data"]
    assert cache.rows(f"{key}:42") == full


def test_response_schema_types(cache: Cache) -> None:
    key = cache.put(f"{cache.app}/s", b"x")["key"]
    schema = cache.get(f"{key}:0").schema
    assert [f.type for f in schema] == [pa.uint64(), pa.utf8(), pa.binary()]


def test_native_table_round_trip(cache: Cache) -> None:
    table = pa.table({"a": [1, 2], "b": ["x", "y"]}).replace_schema_metadata(
        {
            b"flame.cache.format": b"arrow-table-v1",
            b"flame.cache.version": b"0",
            b"flame.cache.logical_type": b"pandas.dataframe",
            b"mine": b"1",
        }
    )
    writer, reader = cache.client.do_put(
        flight.FlightDescriptor.for_path(f"{cache.app}/s"), table.schema, TIMEOUT
    )
    writer.write_table(table)
    writer.done_writing()
    ref = bson.decode(reader.read().to_pybytes())
    writer.close()
    got = cache.get(f"{ref['key']}:0")
    meta = got.schema.metadata
    assert meta[b"flame.cache.version"] == b"1" and meta[b"flame.cache.logical_type"] == b"pandas.dataframe"
    assert meta[b"mine"] == b"1"
    assert got.select(["a", "b"]).to_pydict() == {"a": [1, 2], "b": ["x", "y"]}
    assert cache.get(f"{ref['key']}:1").num_rows == 0
    info = cache.client.get_flight_info(flight.FlightDescriptor.for_path(ref["key"]), TIMEOUT)
    # Fake only: real sends this schema as a bare IPC Message that pyarrow cannot decode (v0.6.0.md 7).
    if cache.fake is not None:
        assert info.schema.metadata[b"flame.cache.format"] == b"arrow-table-v1"


# --------------------------------------------------------------------------- other methods


def test_delete_forms_always_answer_one_ok(cache: Cache) -> None:
    a = cache.put(f"{cache.app}/s1/a", b"a")["key"]
    cache.put(f"{cache.app}/s1/b", b"b")
    c = cache.put(f"{cache.app}/s2/c", b"c")["key"]
    assert cache.delete(a.encode()) == [b"OK"]
    assert cache.delete(a.encode()) == [b"OK"]  # nothing matched: still OK
    assert cache.delete(f"{cache.app}/s1".encode()) == [b"OK"]
    assert cache.get(f"{c}:0").num_rows == 1
    assert cache.delete(f"{cache.app}/*".encode()) == [b"OK"]
    for key in (a, c, f"{cache.app}/s1/b"):
        with pytest.raises(pa.ArrowKeyError):
            cache.get(f"{key}:0")


def test_list_actions(cache: Cache) -> None:
    actions = list(cache.client.list_actions(TIMEOUT))
    assert [(a.type, a.description) for a in actions] == [("DELETE", "Delete objects by key prefix")]


def test_get_flight_info_needs_no_existing_object(cache: Cache) -> None:
    key = f"{cache.app}/s/absent"
    info = cache.client.get_flight_info(flight.FlightDescriptor.for_path(key), TIMEOUT)
    assert info.endpoints[0].ticket.ticket == key.encode()
    assert info.endpoints[0].locations[0].uri.decode() == cache.endpoint
    assert (info.total_records, info.total_bytes) == (-1, -1)
    with pytest.raises(pa.ArrowInvalid) as exc:
        cache.client.get_flight_info(flight.FlightDescriptor.for_command(b"x"), TIMEOUT)
    assert server_text(exc.value) == "Empty descriptor path"


@pytest.mark.fake_only(
    reason="v0.6.0 sends FlightInfos without a descriptor, which pyarrow cannot decode; the fake's decode"
)
def test_list_flights_includes_every_object(cache: Cache) -> None:
    key = cache.put(f"{cache.app}/s", b"12345")["key"]
    infos = {i.endpoints[0].ticket.ticket.decode(): i for i in cache.client.list_flights(b"", TIMEOUT)}
    assert infos[key].total_bytes == 5
    assert infos[key].endpoints[0].locations[0].uri.decode() == cache.endpoint


@pytest.mark.fake_only(
    reason="v0.6.0 sends a bare IPC Message pyarrow cannot decode (Invalid flatbuffers); the fake's decodes"
)
def test_get_schema_is_the_response_schema(cache: Cache) -> None:
    result = cache.client.get_schema(flight.FlightDescriptor.for_path(f"{cache.app}/s/x"), TIMEOUT)
    assert result.schema.names == ["version", "kind", "data"]


# --------------------------------------------------------------------------- bad input


PATH_SHAPE = "expected '<app>/<ssn>' or '<app>/<ssn>/<uuid>'"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a/../s", "Invalid key component: '..'"),
        ("a/s\\x", "Invalid key component: 's\\x'"),
        ("a//x", "Invalid key component: ''"),
        ("/s", "Invalid key component: ''"),
        ("a/s/", "Invalid key component: ''"),
        ("a/*", "Invalid path 'a': " + PATH_SHAPE),  # a wildcard collapses to the bare app
        ("a/s/x/y", "Invalid path 'a/s/x/y': " + PATH_SHAPE),
        ("a", "Invalid path 'a': " + PATH_SHAPE),
        ("a/s/my..pkg", "Invalid key component: 'my..pkg'"),
        ("a/s/*", "Wildcard '*' only allowed for session_id"),  # as real v0.6.0 answers (issue 15)
        ("a/*/x", "Wildcard session '*' cannot have object_id"),
    ],
)
def test_put_with_invalid_key_is_invalid_argument(
    cache: Cache, sentinel: str, path: str, message: str
) -> None:
    with pytest.raises(pa.ArrowInvalid) as exc:
        cache.put(path.replace("a", cache.app, 1), b"x")
    assert server_text(exc.value) == message.replace("'a", f"'{cache.app}", 1)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        # The path parser runs first, while the stream is read.
        ("a/../b", "Invalid PATCH key 'a/../b': Invalid key component: '..'"),
        ("a//x", "Invalid PATCH key 'a//x': Invalid key component: ''"),
        ("a/s/x/y", "Invalid PATCH key 'a/s/x/y': Invalid path 'a/s/x/y': " + PATH_SHAPE),
        # A prefix passes it, and fails the full-key check after the data checks.
        ("a/s", "Invalid key 'a/s': expected '<app>/<ssn>/<uuid>'"),
    ],
)
def test_patch_with_invalid_key_is_invalid_argument(
    cache: Cache, sentinel: str, key: str, message: str
) -> None:
    key = key.replace("a", cache.app, 1)
    with pytest.raises(pa.ArrowInvalid) as exc:
        cache.patch(key, b"x")
    assert server_text(exc.value) == message.replace("'a", f"'{cache.app}")


def test_patch_key_syntax_is_checked_before_the_data(cache: Cache, sentinel: str) -> None:
    key = f"{cache.app}/../b"
    writer, _ = cache.client.do_put(
        flight.FlightDescriptor.for_command(f"PATCH:{key}".encode()), OPAQUE, TIMEOUT
    )
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.done_writing()  # no batch at all: still the key error, not "No data received"
        writer.close()
    assert server_text(exc.value) == f"Invalid PATCH key '{key}': Invalid key component: '..'"


def test_patch_of_unknown_key_is_not_found(cache: Cache, sentinel: str) -> None:
    key = f"{cache.app}/s/nothing"
    with pytest.raises(pa.ArrowKeyError) as exc:
        cache.patch(key, b"x")
    assert server_text(exc.value) == f"object <{key}> not found for patch"


@pytest.mark.parametrize(
    ("ticket", "message"),
    [
        (b"a/s/x:abc", "Invalid version: invalid digit found in string"),
        (b"a/s/x:-1", "Invalid version: invalid digit found in string"),
        (b"a/s/x:1.5", "Invalid version: invalid digit found in string"),
        (b"a/s/x:", "Invalid version: cannot parse integer from empty string"),
        (b"a/s/x:18446744073709551616", "Invalid version: number too large to fit in target type"),
        (b"a/s/\xff:1", "Invalid ticket: invalid utf-8 sequence of 1 bytes from index {n}"),
        (b"a/s:0", "Invalid key 'a/s': expected '<app>/<ssn>/<uuid>'"),
        (b"a/s/x/y:0", "Invalid key 'a/s/x/y': expected '<app>/<ssn>/<uuid>'"),
        (b"a/../x:0", "Invalid key component: '..'"),
        (b"a/s/x/y:bad", "Invalid version: invalid digit found in string"),  # the version first
    ],
)
def test_bad_tickets_are_invalid_argument(cache: Cache, sentinel: str, ticket: bytes, message: str) -> None:
    raw = ticket.replace(b"a", cache.app.encode(), 1)
    with pytest.raises(pa.ArrowInvalid) as exc:
        cache.get(raw)
    expected = message.replace("'a", f"'{cache.app}").replace(
        "{n}", str(raw.index(b"\xff")) if b"\xff" in raw else ""
    )
    assert server_text(exc.value) == expected


def test_unknown_key_is_not_found(cache: Cache, sentinel: str) -> None:
    key = f"{cache.app}/s/unknown"
    with pytest.raises(pa.ArrowKeyError) as exc:
        cache.get(f"{key}:0")
    assert server_text(exc.value) == f"object <{key}> not found"


def test_unknown_action_is_invalid_argument(cache: Cache, sentinel: str) -> None:
    with pytest.raises(pa.ArrowInvalid) as exc:
        list(cache.client.do_action(flight.Action("PURGE", b"x"), TIMEOUT))
    assert server_text(exc.value) == "Unknown action type: PURGE. Only DELETE is supported."


@pytest.mark.parametrize("body", [b"\xff\xfe", b"a", b"a/s/x/y", b"a/../b", b"*/s"])
def test_bad_delete_bodies_are_invalid_argument(cache: Cache, sentinel: str, body: bytes) -> None:
    # The status only: the reference gives no text for DELETE's refusal (only "the path parser").
    with pytest.raises(pa.ArrowInvalid):
        cache.delete(body)


def test_zero_row_put_is_invalid_argument(cache: Cache, sentinel: str) -> None:
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), OPAQUE, TIMEOUT)
    # A zero-row batch still has a body (the binary column's offsets), so it is "data".
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.write_batch(
            pa.record_batch([pa.array([], pa.uint64()), pa.array([], pa.binary())], schema=OPAQUE)
        )
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "Expected at least one row"


def test_put_without_batches_is_invalid_argument(cache: Cache, sentinel: str) -> None:
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), OPAQUE, TIMEOUT)
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "No data received"


@pytest.mark.parametrize(
    "schema",
    [pa.schema([("data", pa.binary())]), pa.schema([("version", pa.int64()), ("data", pa.binary())])],
    ids=["one-column", "wrong-types"],
)
def test_no_data_is_reported_before_any_column_check(cache: Cache, sentinel: str, schema: pa.Schema) -> None:
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), schema, TIMEOUT)
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "No data received"


def test_missing_key_is_reported_after_no_data(cache: Cache, sentinel: str) -> None:
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_command(b"SOMETHING"), OPAQUE, TIMEOUT)
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "No data received"


def test_put_without_key_is_invalid_argument(cache: Cache, sentinel: str) -> None:
    with pytest.raises(pa.ArrowInvalid) as exc:
        cache.put_rows(flight.FlightDescriptor.for_command(b"SOMETHING"), [b"x"])
    assert server_text(exc.value) == "key must be provided in descriptor path or command"


@pytest.mark.fake_only(reason="v0.6.0's handler panics on a 1-column opaque upload; the fake answers clearly")
def test_one_column_schema_is_a_clear_error(cache: Cache, sentinel: str) -> None:
    schema = pa.schema([("data", pa.binary())])
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), schema, TIMEOUT)
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.write_batch(pa.record_batch([pa.array([b"x"])], schema=schema))
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "Expected at least 2 columns (version: uint64, data: binary), got 1"


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (pa.schema([("version", pa.int64()), ("data", pa.binary())]), "Invalid version column"),
        (pa.schema([("version", pa.uint64()), ("data", pa.utf8())]), "Invalid data column"),
    ],
)
def test_wrong_column_types_are_internal(
    cache: Cache, sentinel: str, schema: pa.Schema, message: str
) -> None:
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), schema, TIMEOUT)
    with pytest.raises(flight.FlightInternalError) as exc:
        writer.write_batch(
            pa.record_batch(
                [pa.array([0], schema.field(0).type), pa.array(["x"], schema.field(1).type)], schema=schema
            )
        )
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == message


def test_zero_rows_are_reported_before_wrong_column_types(cache: Cache, sentinel: str) -> None:
    schema = pa.schema([("version", pa.int64()), ("data", pa.utf8())])
    writer, _ = cache.client.do_put(flight.FlightDescriptor.for_path(f"{cache.app}/s"), schema, TIMEOUT)
    with pytest.raises(pa.ArrowInvalid) as exc:
        writer.write_batch(
            pa.record_batch([pa.array([], pa.int64()), pa.array([], pa.utf8())], schema=schema)
        )
        writer.done_writing()
        writer.close()
    assert server_text(exc.value) == "Expected at least one row"


_ABANDONING_CLIENT = textwrap.dedent(
    """
    import os, sys
    import pyarrow as pa, pyarrow.flight as flight
    endpoint, key = sys.argv[1], sys.argv[2]
    schema = pa.schema([("version", pa.uint64()), ("data", pa.binary())])
    client = flight.FlightClient(endpoint)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(key), schema)
    batch = pa.record_batch([pa.array([0], pa.uint64()), pa.array([b"partial" * 100000])], schema=schema)
    for _ in range(5):
        writer.write_batch(batch)
    sys.stdout.write("sent\\n")
    sys.stdout.flush()
    os._exit(0)  # vanish mid-upload: no done_writing, no close
    """
)


def test_client_disconnecting_mid_upload_changes_nothing(cache: Cache, sentinel: str) -> None:
    fake = fake_only(cache)  # counts finished uploads, which only the fake can
    before = fake.finished_puts
    proc = subprocess.run(
        [sys.executable, "-c", _ABANDONING_CLIENT, cache.endpoint, sentinel],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() == "sent", proc.stderr
    # Wait for the server to notice the dead stream; the sentinel fixture then checks the data.
    eventually(lambda: fake.finished_puts != before, "the server to notice the dead stream", timeout=30)
    assert fake.finished_puts == before + 1


@pytest.mark.parametrize(
    "hint", [b"flamepy-runner.payload-size=3", b"flamepy-runner.payload-size=999", b"junk"]
)
def test_batch_metadata_never_changes_the_stored_bytes(cache: Cache, hint: bytes) -> None:
    key = f"{cache.app}/s/hinted"
    writer, reader = cache.client.do_put(flight.FlightDescriptor.for_path(key), OPAQUE, TIMEOUT)
    cells = [b"abc", b"defg", b"h"]
    for i, cell in enumerate(cells):
        batch = pa.record_batch([pa.array([0], pa.uint64()), pa.array([cell])], schema=OPAQUE)
        if i == 0:
            writer.write_with_metadata(batch, pa.py_buffer(hint))
        else:
            writer.write_batch(batch)
    writer.done_writing()
    reader.read()
    writer.close()
    assert cache.rows(f"{key}:0") == [(1, "base", b"abcdefgh")]
