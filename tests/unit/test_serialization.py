"""Opaque payload markers and native-table preparation (flamepy's layouts)."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle
import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest

from flamepy_runner import _serialization as ser


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    def __hash__(self) -> int:
        return self.x


@pytest.mark.parametrize(
    "value",
    [None, 0, "text", b"\x00\xff", [1, {"a": (2, 3)}], Point(4), float("inf")],
    ids=["none", "int", "str", "bytes", "nested", "class", "inf"],
)
def test_python_objects_use_the_cloudpickle_marker(value: Any) -> None:
    data = ser.serialize(value)
    assert data[:4] == ser.MARKER_PICKLE
    assert cloudpickle.loads(data[4:]) == value
    assert ser.deserialize(data) == value
    assert ser.deserialize(ser.serialize_to_buffer(value)) == value


def test_lambdas_round_trip() -> None:
    assert ser.deserialize(ser.serialize(lambda x: x + 1))(1) == 2


def test_numpy_arrays_use_the_tensor_layout() -> None:
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    data = ser.serialize(arr)
    assert data[:4] == ser.MARKER_NUMPY
    tensor = pyarrow.ipc.read_tensor(pa.BufferReader(data[4:]))
    np.testing.assert_array_equal(tensor.to_numpy(), arr)
    out = ser.deserialize(data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, arr)


def test_fortran_ordered_arrays_keep_their_values() -> None:
    arr = np.asfortranarray(np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(ser.deserialize(ser.serialize(arr)), arr)


@pytest.mark.parametrize(
    "arr",
    [np.arange(10)[::2], np.array(["a", None], dtype=object), np.array([1 + 2j])],
    ids=["strided", "object", "complex"],
)
def test_numpy_without_a_tensor_form_falls_back_to_pickle(arr: np.ndarray) -> None:
    data = ser.serialize(arr)
    assert data[:4] == ser.MARKER_PICKLE
    np.testing.assert_array_equal(ser.deserialize(data), arr)


def test_arrow_table_batch_and_array_markers() -> None:
    table = pa.table({"a": [1, 2], "b": ["x", None]})
    batch = pa.record_batch({"c": [1.5]})
    array = pa.array(["p", "q"])
    for value, marker in ((table, ser.MARKER_TABLE), (batch, ser.MARKER_BATCH), (array, ser.MARKER_ARRAY)):
        data = ser.serialize(value)
        assert data[:4] == marker
        assert ser.deserialize(data).equals(value)
    # The array travels as a one-column batch named "data".
    reader = pyarrow.ipc.open_stream(ser.serialize(array)[4:])
    assert reader.schema.names == ["data"]


def test_unmarked_data_is_read_as_a_plain_pickle() -> None:
    assert ser.deserialize(pickle.dumps({"legacy": True})) == {"legacy": True}


def test_short_data_is_read_as_a_pickle() -> None:
    assert ser.deserialize(pickle.dumps(None, protocol=0)) is None  # b"N." is shorter than a marker


def test_deserialize_accepts_buffers_and_views() -> None:
    data = ser.serialize({"k": 1})
    for form in (data, bytearray(data), memoryview(data), pa.py_buffer(data)):
        assert ser.deserialize(form) == {"k": 1}


def test_garbage_raises() -> None:
    with pytest.raises(pickle.UnpicklingError):
        ser.deserialize(b"FLM\x00not a pickle")


# --------------------------------------------------------------------------- native tables


def test_native_payload_for_tables_sets_cache_metadata() -> None:
    table = pa.table({"a": [1, 2]}).replace_schema_metadata({b"user": b"1"})
    payload = ser.native_payload(table)
    assert payload is not None
    meta = payload.schema.metadata
    assert meta[ser.FORMAT_KEY] == ser.FORMAT_ARROW_TABLE
    assert meta[ser.VERSION_KEY] == b"0"
    assert meta[ser.LOGICAL_TYPE_KEY] == b"pyarrow.table"
    assert meta[b"user"] == b"1"
    assert pa.Table.from_batches(payload.batches).column("a").to_pylist() == [1, 2]
    assert ser.is_native_schema(payload.schema)


def test_native_payload_for_batches_and_to_arrow_objects() -> None:
    batch = pa.record_batch({"a": [1]})
    assert ser.native_payload(batch).schema.metadata[ser.LOGICAL_TYPE_KEY] == b"pyarrow.record_batch"

    class Dataset:
        def to_arrow(self) -> pa.Table:
            return pa.table({"z": [9]})

    payload = ser.native_payload(Dataset())
    assert payload is not None and payload.schema.metadata[ser.LOGICAL_TYPE_KEY] == b"dataset"
    assert ser.native_payload({"not": "a table"}) is None
    assert ser.native_payload(pa.array([1])) is None


def test_empty_tables_still_send_one_batch() -> None:
    payload = ser.native_payload(pa.table({"a": pa.array([], pa.int64())}))
    assert payload is not None and len(payload.batches) == 1 and payload.batches[0].num_rows == 0


def test_from_native_table_restores_the_logical_type_and_strips_metadata() -> None:
    table = pa.table({"a": [1]})
    stored = ser.native_payload(table)
    got = ser.from_native_table(pa.Table.from_batches(stored.batches, schema=stored.schema))
    assert isinstance(got, pa.Table) and got.schema.metadata is None and got.equals(table)
    batch_payload = ser.native_payload(pa.record_batch({"a": [1]}))
    got_batch = ser.from_native_table(
        pa.Table.from_batches(batch_payload.batches, schema=batch_payload.schema)
    )
    assert isinstance(got_batch, pa.RecordBatch)


def test_native_version_reads_the_stamp() -> None:
    schema = pa.schema([("a", pa.int64())])
    assert ser.native_version(schema.with_metadata({ser.VERSION_KEY: b"7"})) == 7
    assert ser.native_version(schema.with_metadata({ser.VERSION_KEY: b"x"})) == 0
    assert ser.native_version(schema) == 0


def test_pieces_concatenate_to_the_payload_and_keep_big_bytes_by_reference() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    value = {"blob": big, "tail": b"t" * 10}
    pieces = ser.serialize_to_pieces(value)
    assert b"".join(p.to_pybytes() for p in pieces) == ser.serialize(value)
    assert pa.py_buffer(big).address in [p.address for p in pieces]
    assert ser.serialize_to_pieces(7)[0].to_pybytes() == ser.serialize(7)
    table = pa.table({"a": [1]})
    assert [p.to_pybytes() for p in ser.serialize_to_pieces(table)] == [ser.serialize(table)]
