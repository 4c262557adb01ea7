"""Payload representations of the fake object cache and their Arrow encodings.

Opaque objects are single buffers (the ``data`` cells of an upload, concatenated); native
``arrow-table-v1`` objects are a schema plus record batches. The on-disk layout (A8) is Arrow IPC
files of one ``{version: uint64, data: binary}`` row, or the native table itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc

__all__ = [
    "FORMAT_ARROW_TABLE",
    "FORMAT_KEY",
    "KIND_BASE",
    "KIND_PATCH",
    "OPAQUE_SCHEMA",
    "RESPONSE_SCHEMA",
    "VERSION_KEY",
    "NativeTable",
    "PayloadBuilder",
    "binary_array",
    "binary_cells",
    "opaque_contents",
    "opaque_row",
    "read_ipc_file",
    "write_ipc_file",
]

FORMAT_KEY = b"flame.cache.format"
VERSION_KEY = b"flame.cache.version"
FORMAT_ARROW_TABLE = b"arrow-table-v1"

#: What clients put: column 0 UInt64 (ignored), column 1 Binary (concatenated over all rows).
OPAQUE_SCHEMA = pa.schema([pa.field("version", pa.uint64()), pa.field("data", pa.binary())])
#: What DoGet answers for opaque objects (and for "not modified", with zero rows).
RESPONSE_SCHEMA = pa.schema(
    [
        pa.field("version", pa.uint64(), nullable=False),
        pa.field("kind", pa.utf8(), nullable=False),
        pa.field("data", pa.binary(), nullable=False),
    ]
)
KIND_BASE = "base"
KIND_PATCH = "patch"


# --------------------------------------------------------------------------- payloads


@dataclasses.dataclass(frozen=True)
class NativeTable:
    """A native ``arrow-table-v1`` object: its schema (as sent) and record batches.

    Attributes:
        schema: the schema, including the ``flame.cache.*`` metadata.
        batches: the batches as received.
    """

    schema: pa.Schema
    batches: tuple[pa.RecordBatch, ...]

    @property
    def nbytes(self) -> int:
        """Arrow in-memory size, what the memory limit counts."""
        return sum(b.nbytes for b in self.batches)

    def stamped(self, version: int) -> NativeTable:
        """Return a copy whose schema says ``flame.cache.version=<version>``.

        Args:
            version: the version to stamp.

        Returns:
            The stamped table (batches shared, not copied).
        """
        metadata = dict(self.schema.metadata or {})
        metadata[FORMAT_KEY] = FORMAT_ARROW_TABLE
        metadata[VERSION_KEY] = str(version).encode()
        schema = self.schema.with_metadata(metadata)
        batches = tuple(pa.RecordBatch.from_arrays(b.columns, schema=schema) for b in self.batches)
        return NativeTable(schema=schema, batches=batches)

    def table(self) -> pa.Table:
        """The batches as one table with this schema."""
        return pa.Table.from_batches(list(self.batches), schema=self.schema)


class PayloadBuilder:
    """Concatenates the ``data`` cells of an upload into one buffer, copying as little as possible.

    A single non-empty cell is kept as is (zero-copy). When the sender announced the total size
    (:meth:`reserve`), cells are copied into one buffer of that size as they arrive, so the
    received batches can be freed at once and the peak stays near the object size. Otherwise the
    cells are kept and copied once, into a buffer of exactly their total size, by :meth:`finish`
    (a growing buffer would reallocate, and copy, large uploads several times over).
    """

    def __init__(self) -> None:
        self.rows = 0
        self._cells: list[pa.Buffer] = []
        self._size = 0
        self._target: pa.Buffer | None = None
        self._writer: pa.FixedSizeBufferWriter | None = None
        self._filled = 0

    def reserve(self, total: int) -> None:
        """Preallocate for an upload announced as ``total`` bytes.

        A wrong or absurd announcement is harmless: data beyond it falls back to the
        gather-then-copy path, and an allocation failure simply ignores the hint.

        Args:
            total: the announced payload size.
        """
        if self.rows or self._target is not None or total <= 0:
            return
        try:
            self._target = pa.allocate_buffer(total)
        except (MemoryError, pa.ArrowException):
            return
        self._writer = pa.FixedSizeBufferWriter(self._target)

    def add(self, cell: pa.Buffer) -> None:
        """Append one cell.

        Args:
            cell: the cell's bytes.
        """
        self.rows += 1
        if not cell.size:
            return
        if self._writer is not None and self._target is not None:
            if self._filled + cell.size <= self._target.size:
                self._writer.write(cell)
                self._filled += cell.size
                return
            # More data than announced: keep what was copied and gather the rest.
            self._drop_target()
        self._cells.append(cell)
        self._size += cell.size

    def _drop_target(self) -> None:
        if self._target is not None and self._filled:
            self._cells.append(self._target.slice(0, self._filled))
            self._size += self._filled
        self._target, self._writer, self._filled = None, None, 0

    def finish(self) -> pa.Buffer:
        """Return everything added so far as one buffer (and forget the cells)."""
        if self._target is not None and not self._cells:
            target, filled = self._target, self._filled
            self._target, self._writer, self._filled = None, None, 0
            return target if filled == target.size else target.slice(0, filled)
        self._drop_target()
        cells, self._cells = self._cells, []
        if not cells:
            return pa.py_buffer(b"")
        if len(cells) == 1:
            return cells[0]
        out = pa.allocate_buffer(self._size)
        sink = pa.FixedSizeBufferWriter(out)
        for cell in cells:
            sink.write(cell)
        return out


def binary_cells(array: pa.Array) -> list[pa.Buffer]:
    """Return each value of a binary array as a zero-copy slice.

    Args:
        array: a ``binary`` or ``large_binary`` array.

    Returns:
        One buffer per row (nulls read as empty).
    """
    if array.type not in (pa.binary(), pa.large_binary()):
        raise TypeError(f"expected a binary array, got {array.type}")
    _, offsets_buf, data_buf = array.buffers()
    if offsets_buf is None:
        return [pa.py_buffer(b"")] * len(array)
    offsets = memoryview(offsets_buf).cast("q" if array.type == pa.large_binary() else "i")
    cells = []
    for i in range(array.offset, array.offset + len(array)):
        start, end = offsets[i], offsets[i + 1]
        cells.append(
            pa.py_buffer(b"") if data_buf is None or end == start else data_buf.slice(start, end - start)
        )
    return cells


def binary_array(data: pa.Buffer) -> pa.Array:
    """A one-row binary array over ``data`` without copying it.

    Args:
        data: the cell contents.

    Returns:
        A ``binary`` array (``large_binary`` beyond 2 GiB).
    """
    if data.size < 2**31:
        offsets = pa.array([0, data.size], type=pa.int32()).buffers()[1]
        return pa.Array.from_buffers(pa.binary(), 1, [None, offsets, data])
    offsets = pa.array([0, data.size], type=pa.int64()).buffers()[1]
    return pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, data])


def opaque_row(version: int, data: pa.Buffer) -> pa.RecordBatch:
    cell = binary_array(data)
    schema = (
        OPAQUE_SCHEMA
        if cell.type == pa.binary()
        else pa.schema([OPAQUE_SCHEMA.field(0), ("data", cell.type)])
    )
    return pa.RecordBatch.from_arrays([pa.array([version], type=pa.uint64()), cell], schema=schema)


def write_ipc_file(target: Path, schema: pa.Schema, batches: tuple[pa.RecordBatch, ...]) -> None:
    """Write an Arrow IPC file atomically (a reader never sees half a file)."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        with pa.OSFile(str(partial), "wb") as sink, pyarrow.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def read_ipc_file(source: Path) -> pa.Table:
    with pa.OSFile(str(source), "rb") as handle:
        buf = handle.read_buffer()
    return pyarrow.ipc.open_file(buf).read_all()


def opaque_contents(table: pa.Table) -> tuple[int, pa.Buffer]:
    """Version of the first row and all ``data`` cells concatenated, from a stored opaque file."""
    if table.num_columns < 2 or not pa.types.is_unsigned_integer(table.schema.field(0).type):
        raise ValueError(f"not an opaque object file (schema {table.schema})")
    versions = table.column(0)
    version = int(versions[0].as_py() or 0) if len(versions) else 0
    builder = PayloadBuilder()
    for chunk in table.column(1).chunks:
        for cell in binary_cells(chunk):
            builder.add(cell)
    return version, builder.finish()
