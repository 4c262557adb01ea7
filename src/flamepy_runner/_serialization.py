"""Payload encoding for the object cache, readable by flamepy 0.6.0 and back.

An *opaque* payload is one ``bytes`` cell that starts with a four-byte marker naming its format:

=============  ====================================================================
``FLM\\x00``    cloudpickle (the default for arbitrary Python objects)
``FLM\\x01``    a numpy array, written as an Arrow IPC tensor message
``FLM\\x02``    a ``pyarrow.Table``, written as an Arrow IPC stream
``FLM\\x03``    a ``pyarrow.Array``, as an IPC stream of one batch with one column ``data``
``FLM\\x04``    a ``pyarrow.RecordBatch``, as an IPC stream of one batch
=============  ====================================================================

Data without a marker is read as a plain pickle (what older writers sent). The markers and byte
layouts are flamepy's, so either side reads what the other wrote.

A *native* payload is an Arrow table sent as itself, with schema metadata
``flame.cache.format=arrow-table-v1`` (see :func:`native_payload` and :func:`from_native_table`);
``put_object``/``update_object`` use it for tables, record batches and data frames.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
from collections.abc import Callable
from typing import Any

import cloudpickle
import pyarrow as pa
import pyarrow.ipc

__all__ = [
    "FORMAT_ARROW_TABLE",
    "FORMAT_KEY",
    "LOGICAL_TYPE_KEY",
    "MARKER_ARRAY",
    "MARKER_BATCH",
    "MARKER_NUMPY",
    "MARKER_PICKLE",
    "MARKER_TABLE",
    "VERSION_KEY",
    "NativePayload",
    "deserialize",
    "from_native_table",
    "is_native_schema",
    "native_payload",
    "native_version",
    "serialize",
    "serialize_to_buffer",
    "serialize_to_pieces",
]

MARKER_PICKLE = b"FLM\x00"
MARKER_NUMPY = b"FLM\x01"
MARKER_TABLE = b"FLM\x02"
MARKER_ARRAY = b"FLM\x03"
MARKER_BATCH = b"FLM\x04"
_MARKER_LEN = 4

FORMAT_KEY = b"flame.cache.format"
VERSION_KEY = b"flame.cache.version"
LOGICAL_TYPE_KEY = b"flame.cache.logical_type"
FORMAT_ARROW_TABLE = b"arrow-table-v1"
_CACHE_META_PREFIX = b"flame.cache."

_LT_TABLE = "pyarrow.table"
_LT_BATCH = "pyarrow.record_batch"
_LT_PANDAS = "pandas.dataframe"
_LT_POLARS = "polars.dataframe"
_LT_DATASET = "dataset"


def _optional(name: str) -> Any:
    """Import ``name`` if installed; the fast paths exist only when their library does."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# Looked up once: numpy, pandas and polars are optional and slow to probe on every call.
_np = _optional("numpy")
_pd = _optional("pandas")
_pl = _optional("polars")


# --------------------------------------------------------------------------- opaque payloads


def serialize_to_buffer(obj: Any) -> pa.Buffer:
    """Encode ``obj`` as an opaque payload without an extra copy of large data.

    Args:
        obj: any picklable object; numpy arrays and Arrow tables, batches and arrays take the
            Arrow fast paths.

    Returns:
        The marker followed by the encoded object, as an Arrow buffer (zero-copy into a Flight
        ``binary`` cell).

    Raises:
        pickle.PicklingError: ``obj`` cannot be pickled (cloudpickle's own error, unchanged).
    """
    writer = _arrow_writer(obj)
    if writer is None:
        return pa.py_buffer(_pickled(obj))
    # Two passes: measure on a mock stream (no data copied), then write into an exact-size
    # buffer. A growing stream would reallocate and copy large payloads several times.
    mock = pa.MockOutputStream()
    writer(mock)
    out = pa.allocate_buffer(mock.size())
    writer(pa.FixedSizeBufferWriter(out))
    return out


def serialize_to_pieces(obj: Any) -> list[pa.Buffer]:
    """Encode ``obj`` as pieces whose concatenation is :func:`serialize`'s output.

    Large ``bytes`` members of a pickled object are not copied: their piece refers to the
    object itself. Senders that may split a payload over several rows (the object cache
    concatenates them) avoid one full copy of big payloads this way.

    Args:
        obj: the object to encode.

    Returns:
        The pieces, in order (never empty).
    """
    if _arrow_writer(obj) is not None:
        return [serialize_to_buffer(obj)]
    sink = _PieceSink()
    sink.write(MARKER_PICKLE)
    cloudpickle.dump(obj, sink, protocol=cloudpickle.DEFAULT_PROTOCOL)
    return sink.finish()


class _PieceSink:
    """A write-only file for pickle that keeps big immutable ``bytes`` by reference."""

    # pickle hands large payloads to write() unframed; smaller writes are gathered and copied.
    _BY_REFERENCE = 256 * 1024

    def __init__(self) -> None:
        self._pieces: list[pa.Buffer] = []
        self._small = io.BytesIO()

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if type(data) is bytes and size >= self._BY_REFERENCE:
            self._flush()
            self._pieces.append(pa.py_buffer(data))
        else:
            self._small.write(data)
        return size

    def _flush(self) -> None:
        if self._small.tell():
            self._pieces.append(pa.py_buffer(self._small.getvalue()))
            self._small = io.BytesIO()

    def finish(self) -> list[pa.Buffer]:
        self._flush()
        return self._pieces


def serialize(obj: Any) -> bytes:
    """Encode ``obj`` as opaque payload bytes with flamepy's format marker.

    Args:
        obj: the object to encode (see :func:`serialize_to_buffer`).

    Returns:
        The payload bytes, readable by :func:`deserialize` and by flamepy 0.6.0.
    """
    if _arrow_writer(obj) is None:
        return _pickled(obj)
    encoded: bytes = serialize_to_buffer(obj).to_pybytes()
    return encoded


def _pickled(obj: Any) -> bytes:
    # Pickling straight into one BytesIO copies big bytes-like members once, and getvalue()
    # hands over the buffer without another copy.
    out = io.BytesIO()
    out.write(MARKER_PICKLE)
    cloudpickle.dump(obj, out, protocol=cloudpickle.DEFAULT_PROTOCOL)
    data: bytes = out.getvalue()
    return data


def _arrow_writer(obj: Any) -> Callable[[pa.NativeFile], None] | None:
    """A function writing ``obj`` in its Arrow fast-path layout, or None for pickle."""
    if _np is not None and isinstance(obj, _np.ndarray):
        tensor = _tensor(obj)
        if tensor is None:
            return None
        return lambda sink: _write_marked(sink, MARKER_NUMPY, lambda: pyarrow.ipc.write_tensor(tensor, sink))
    if isinstance(obj, pa.Table):
        table = obj
        return lambda sink: _write_stream(sink, MARKER_TABLE, table.schema, table.to_batches())
    if isinstance(obj, pa.RecordBatch):
        batch = obj
        return lambda sink: _write_stream(sink, MARKER_BATCH, batch.schema, [batch])
    if isinstance(obj, pa.Array):
        wrapped = pa.record_batch([obj], names=["data"])
        return lambda sink: _write_stream(sink, MARKER_ARRAY, wrapped.schema, [wrapped])
    return None


def deserialize(data: bytes | bytearray | memoryview | pa.Buffer) -> Any:
    """Decode an opaque payload written by :func:`serialize` or by flamepy.

    Args:
        data: the payload; Arrow buffers and memoryviews are read without copying.

    Returns:
        The decoded object. Numpy arrays and Arrow objects share memory with ``data`` and are
        therefore read-only.

    Raises:
        ImportError: the payload is a numpy array and numpy is not installed.
        pickle.UnpicklingError: the data is neither a known format nor a pickle.
    """
    buf = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    if buf.size < _MARKER_LEN:
        return cloudpickle.loads(memoryview(buf))
    marker = buf.slice(0, _MARKER_LEN).to_pybytes()
    body = buf.slice(_MARKER_LEN)
    if marker == MARKER_PICKLE:
        return cloudpickle.loads(memoryview(body))
    if marker == MARKER_NUMPY:
        if _np is None:
            raise ImportError("this cached object is a numpy array: install numpy to read it")
        return pyarrow.ipc.read_tensor(pa.BufferReader(body)).to_numpy()
    if marker == MARKER_TABLE:
        return pyarrow.ipc.open_stream(body).read_all()
    if marker == MARKER_BATCH:
        return pyarrow.ipc.open_stream(body).read_next_batch()
    if marker == MARKER_ARRAY:
        return pyarrow.ipc.open_stream(body).read_next_batch().column(0)
    # No marker: a bare pickle from an older writer.
    return cloudpickle.loads(memoryview(buf))


def _tensor(arr: Any) -> pa.Tensor | None:
    """The Arrow tensor for ``arr``, or None when Arrow cannot represent it (then: pickle)."""
    if not (arr.flags.c_contiguous or arr.flags.f_contiguous):
        return None
    try:
        return pa.Tensor.from_numpy(arr)
    except (pa.ArrowException, TypeError, ValueError):
        # Object, string, complex and other non-numeric dtypes have no tensor form.
        return None


def _write_marked(sink: pa.NativeFile, marker: bytes, body: Callable[[], object]) -> None:
    sink.write(marker)
    body()


def _write_stream(
    sink: pa.NativeFile, marker: bytes, schema: pa.Schema, batches: list[pa.RecordBatch]
) -> None:
    sink.write(marker)
    with pyarrow.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


# --------------------------------------------------------------------------- native tables


@dataclasses.dataclass(frozen=True)
class NativePayload:
    """A table-like object prepared for a native ``arrow-table-v1`` put.

    Attributes:
        schema: the table schema with the ``flame.cache.*`` metadata set (version 0).
        batches: the record batches to send (at least one, possibly with zero rows).
    """

    schema: pa.Schema
    batches: list[pa.RecordBatch]


def native_payload(obj: Any) -> NativePayload | None:
    """Prepare ``obj`` for a native put if it is table-like, as flamepy does.

    Args:
        obj: a ``pyarrow.Table`` or ``RecordBatch``, a pandas or polars data frame, or any
            object whose ``to_arrow()`` returns a table or batch.

    Returns:
        The payload, or None when ``obj`` should be sent as an opaque payload instead.
    """
    logical: str | None = None
    table: pa.Table | None = None
    if isinstance(obj, pa.Table):
        logical, table = _LT_TABLE, obj
    elif isinstance(obj, pa.RecordBatch):
        logical, table = _LT_BATCH, pa.Table.from_batches([obj])
    elif _pd is not None and isinstance(obj, _pd.DataFrame):
        logical, table = _LT_PANDAS, pa.Table.from_pandas(obj)
    elif _pl is not None and isinstance(obj, _pl.DataFrame):
        logical, table = _LT_POLARS, obj.to_arrow()
    elif _pl is not None and isinstance(obj, _pl.LazyFrame):
        logical, table = _LT_POLARS, obj.collect().to_arrow()
    elif hasattr(obj, "to_arrow") and not isinstance(obj, type):
        try:
            converted = obj.to_arrow()
        except TypeError:
            converted = None
        if isinstance(converted, pa.RecordBatch):
            converted = pa.Table.from_batches([converted])
        if isinstance(converted, pa.Table):
            logical, table = _LT_DATASET, converted
    if table is None or logical is None:
        return None
    metadata = dict(table.schema.metadata or {})
    metadata[FORMAT_KEY] = FORMAT_ARROW_TABLE
    metadata[VERSION_KEY] = b"0"
    metadata[LOGICAL_TYPE_KEY] = logical.encode()
    schema = table.schema.with_metadata(metadata)
    table = table.replace_schema_metadata(metadata)
    batches = table.to_batches()
    if not batches:
        # An empty table still needs one (empty) batch so the server sees a body.
        batches = [pa.RecordBatch.from_pylist([], schema=schema)]
    return NativePayload(schema=schema, batches=batches)


def is_native_schema(schema: pa.Schema) -> bool:
    """Tell whether ``schema`` marks a native ``arrow-table-v1`` object.

    Args:
        schema: a schema received from the cache.

    Returns:
        True for native tables, False for the opaque row layout.
    """
    return (schema.metadata or {}).get(FORMAT_KEY) == FORMAT_ARROW_TABLE


def native_version(schema: pa.Schema) -> int:
    """Read the ``flame.cache.version`` the server stamped on a native table.

    Args:
        schema: a native table schema.

    Returns:
        The version, or 0 when absent or unreadable.
    """
    raw = (schema.metadata or {}).get(VERSION_KEY)
    if raw is None:
        return 0
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return 0


def from_native_table(table: pa.Table) -> Any:
    """Turn a native table from the cache back into the kind of object that was put.

    Args:
        table: the table as read from the cache, with its ``flame.cache.*`` metadata.

    Returns:
        A record batch, pandas or polars data frame when that was the logical type (and the
        library is installed), otherwise a ``pyarrow.Table``; the ``flame.cache.*`` metadata is
        removed.
    """
    metadata = dict(table.schema.metadata or {})
    logical = metadata.get(LOGICAL_TYPE_KEY, _LT_TABLE.encode()).decode(errors="replace")
    user_metadata = {k: v for k, v in metadata.items() if not k.startswith(_CACHE_META_PREFIX)}
    table = table.replace_schema_metadata(user_metadata or None)
    if logical == _LT_BATCH:
        batches = table.to_batches()
        return batches[0] if len(batches) == 1 else table
    if logical == _LT_PANDAS and _pd is not None:
        return table.to_pandas()
    if logical == _LT_POLARS and _pl is not None:
        return _pl.from_arrow(table)
    return table
