"""Files through the object cache: :meth:`upload_object` and :meth:`download_object`.

Part of :class:`~flamepy_runner._cache.CacheClient` (its base): a file is an opaque object
whose bytes go up in 1 MiB rows (flamepy's ``upload_object`` layout) and come down to disk as
they arrive, with deadlines that grow with the size.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.flight as flight

from ._cache_wire import (
    KIND_BASE,
    OPAQUE_SCHEMA,
    ObjectRef,
    cell_buffers,
    check_full_key,
    check_path,
    data_chunks,
    flight_errors,
    opaque_batch,
)
from ._exceptions import UsageError
from ._serialization import is_native_schema

__all__ = ["FileTransfers"]

_UPLOAD_CHUNK = 1024 * 1024
# Uploads and downloads get at least flamepy's fixed 300 s deadline, more for large files.
_TRANSFER_FLOOR = 300.0


class FileTransfers:
    """The file methods of :class:`~flamepy_runner._cache.CacheClient`."""

    if TYPE_CHECKING:

        @property
        def endpoint(self) -> str: ...

        def _client(self, endpoint: str) -> flight.FlightClient: ...

        def _options(self, timeout: float | None = None) -> flight.FlightCallOptions: ...

        def _transfer_timeout(self, nbytes: int, floor: float = 0.0) -> float: ...

        # CacheClient._put: one DoPut of the batches, answered by the object's reference.
        _put: Callable[..., ObjectRef]

    def upload_object(self, key: str, path: str | os.PathLike[str]) -> ObjectRef:
        """Upload a file, streamed in 1 MiB rows (flamepy's ``upload_object`` layout).

        Flight has no way to abort an upload cleanly: if this call is interrupted locally (for
        instance by ``KeyboardInterrupt``), the cache may keep the part already sent. Upload
        again before using the key.

        Args:
            key: a full key ``<app>/<session>/<name>`` (created or overwritten) or a prefix
                ``<app>/<session>`` (a new id is generated).
            path: the file to send.

        Returns:
            The reference to the stored file.

        Raises:
            UsageError: ``key`` is malformed or ``path`` is not a readable file.
            ClusterError: the cache refused the upload or could not be reached.
        """
        check_path(key, what="upload key", allow_full=True, allow_prefix=True, allow_wildcard=False)
        source = Path(path)
        try:
            size = source.stat().st_size
            handle = pa.OSFile(str(source), "rb")
        except (OSError, pa.ArrowIOError) as exc:
            raise UsageError(f"cannot upload {source}: {exc}") from exc

        def rows() -> Iterator[pa.RecordBatch]:
            sent = False
            while True:
                chunk = handle.read_buffer(_UPLOAD_CHUNK)
                if chunk.size == 0 and sent:
                    return
                # An empty file still goes up as one empty row, so it can be downloaded again.
                sent = True
                yield opaque_batch(chunk)
                if chunk.size < _UPLOAD_CHUNK:
                    return

        try:
            return self._put(
                self.endpoint,
                flight.FlightDescriptor.for_path(key),
                OPAQUE_SCHEMA,
                rows(),
                key=key,
                timeout=self._transfer_timeout(size, _TRANSFER_FLOOR),
                size_hint=size if size > _UPLOAD_CHUNK else None,
            )
        finally:
            handle.close()

    def download_object(self, ref_or_key: ObjectRef | str, path: str | os.PathLike[str]) -> Path:
        """Download a file stored with :meth:`upload_object` (or any opaque object's bytes).

        The rows are written to disk as they arrive; the file appears under ``path`` only once
        complete.

        Args:
            ref_or_key: a reference, or a full key read from the configured endpoint.
            path: where to write the file (parent directories are created).

        Returns:
            ``path`` as a :class:`~pathlib.Path`.

        Raises:
            UsageError: the key is malformed, or the object is a native table or has patches.
            NotFoundError: the object does not exist.
            ClusterError: any other refusal or transport failure.
        """
        ref = ref_or_key if isinstance(ref_or_key, ObjectRef) else ObjectRef(self.endpoint, ref_or_key, 0)
        check_full_key(ref.key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        client = self._client(ref.endpoint)
        try:
            with open(partial, "wb") as out, flight_errors(ref.endpoint, ref.key):
                reader = client.do_get(
                    flight.Ticket(f"{ref.key}:0".encode()),
                    self._options(self._transfer_timeout(0, _TRANSFER_FLOOR)),
                )
                if is_native_schema(reader.schema):
                    raise UsageError(f"object {ref.key} is an Arrow table, not a file: use get_object")
                for chunk in data_chunks(reader):
                    batch = chunk.data
                    if "kind" in batch.schema.names and any(
                        k != KIND_BASE for k in batch.column("kind").to_pylist()
                    ):
                        raise UsageError(
                            f"object {ref.key} has patches; download_object reads plain files only"
                        )
                    for cell in cell_buffers(batch.column("data")):
                        out.write(memoryview(cell))
            os.replace(partial, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        return dest
