"""Client for Flame's object cache (an Arrow Flight service).

:class:`CacheClient` speaks the same wire protocol as flamepy 0.6.0 (``flamepy.core.cache``), so
objects it writes are readable by flamepy and the other way round, but it keeps every piece of
state on the instance: endpoint and TLS settings come from a :class:`~flamepy_runner.FlameConfig`,
and each client owns its Flight connections and its local object cache.

Wire summary (see ``cache-and-executor.md`` part A): a put is a ``DoPut`` of rows
``{version: uint64, data: binary}`` (or a native Arrow table) answered by one BSON PutResult
``{endpoint, key, version}``; a get is ``DoGet("<key>:<known version>")`` answered by the full
object, only the newer patches, or zero rows when nothing changed; a patch is a ``DoPut`` with
command ``PATCH:<key>``; deletes are ``DoAction("DELETE", prefix)``. Files (``upload_object``,
``download_object``) are :mod:`._cache_files`, the client's base class.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import bson
import pyarrow as pa
import pyarrow.flight as flight

from ._cache_files import FileTransfers
from ._cache_wire import (
    KIND_BASE,
    KIND_PATCH,
    OPAQUE_SCHEMA,
    SIZE_HINT_PREFIX,
    ObjectRef,
    cell_buffers,
    check_full_key,
    check_path,
    flight_errors,
    flight_location,
    matches,
    opaque_batch,
)
from ._config import FlameConfig
from ._exceptions import (
    ConfigError,
    InternalError,
    NotFoundError,
    UsageError,
)
from ._serialization import (
    deserialize,
    from_native_table,
    is_native_schema,
    native_payload,
    native_version,
    serialize_to_pieces,
)

__all__ = ["CacheClient", "Deserializer", "ObjectRef"]

#: ``deserializer(base, patches)`` folds an object's base and its patches into one value.
Deserializer = Callable[[Any, list[Any]], Any]

# Opaque payloads go out in rows of at most this size (flamepy's upload chunk).
_ROW_BYTES = 1024 * 1024
_LOCAL_CACHE_SIZE = 1000
_VIEWS_PER_OBJECT = 4
# Bulk transfers get a deadline that grows with their size, at this assumed worst-case rate,
# and (for files, _cache_files) never below flamepy's fixed 300 s for uploads.
_SLOWEST_RATE = 4 * 1024 * 1024
_GRPC_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


# --------------------------------------------------------------------------- local cache


@dataclasses.dataclass
class _Entry:
    """A locally cached object: base, patches in version order, and memoized folded views."""

    version: int
    base: Any
    patches: tuple[tuple[int, Any], ...] = ()
    # id(deserializer) -> (deserializer, folded value); the deserializer is kept alive so
    # its id cannot be reused while the entry exists.
    views: dict[int, tuple[Deserializer, Any]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Fetched:
    """One DoGet answer: ``full`` replaces the local copy, otherwise ``patches`` extend it."""

    full: bool
    version: int
    base: Any = None
    patches: tuple[tuple[int, Any], ...] = ()


def _open_client(endpoint: str, location: str, ca_file: str | None) -> flight.FlightClient:
    """A Flight connection to ``location`` (with ``ca_file``'s roots for ``grpc+tls``)."""
    kwargs: dict[str, Any] = {"generic_options": _GRPC_OPTIONS}
    if location.startswith("grpc+tls://") and ca_file:
        try:
            kwargs["tls_root_certs"] = Path(ca_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read cache CA file {ca_file}: {exc}") from exc
    with flight_errors(endpoint):
        return flight.FlightClient(location, **kwargs)


# --------------------------------------------------------------------------- the client


class CacheClient(FileTransfers):
    """A thread-safe client for one Flame object cache.

    Args:
        config: where the cache is (``cache_endpoint``), its CA (``cache_ca_file``) and the
            default deadline (``timeout``) for each call.
        max_cached_objects: how many objects the local versioned cache keeps (LRU).

    Objects returned by :meth:`get_object` are shared with the local cache (as in flamepy):
    treat them as read-only, or call ``get_object(ref.with_version(0))`` for a fresh copy.
    """

    def __init__(self, config: FlameConfig, *, max_cached_objects: int = _LOCAL_CACHE_SIZE) -> None:
        if max_cached_objects < 0:
            raise UsageError(f"max_cached_objects must be >= 0, got {max_cached_objects}")
        self._config = config
        self._max_cached = max_cached_objects
        self._lock = threading.Lock()
        self._clients: dict[str, flight.FlightClient] = {}
        self._objects: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._closed = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        """The configured cache endpoint (puts, uploads and deletes go there)."""
        return self._config.cache_endpoint

    def close(self) -> None:
        """Close every Flight connection and drop the local cache (idempotent)."""
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
            self._objects.clear()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _client(self, endpoint: str) -> flight.FlightClient:
        if not endpoint:
            raise ConfigError(
                "the object cache endpoint is not configured: set cache.endpoint in flame.yaml "
                "or FLAME_CACHE_ENDPOINT"
            )
        location = flight_location(endpoint)
        with self._lock:
            if self._closed:
                raise UsageError("this CacheClient is closed; create a new one")
            client = self._clients.get(location)
            if client is None:
                client = self._clients[location] = _open_client(
                    endpoint, location, self._config.cache_ca_file
                )
            return client

    def warm_up(self, timeout: float = 5.0) -> None:
        """Open the connection to the cache endpoint now, so the first transfer does not pay
        for it (a ``ListActions`` call, which every Flight server answers cheaply).

        Failures are ignored: the next real call reports them.
        """
        with contextlib.suppress(Exception):
            list(self._client(self.endpoint).list_actions(self._options(timeout)))

    def _options(self, timeout: float | None = None) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(timeout=self._config.timeout if timeout is None else timeout)

    def _transfer_timeout(self, nbytes: int, floor: float = 0.0) -> float:
        return max(floor, self._config.timeout + nbytes / _SLOWEST_RATE)

    # ----------------------------------------------------------------- local cache

    def _cached(self, cache_key: tuple[str, str]) -> _Entry | None:
        with self._lock:
            entry = self._objects.get(cache_key)
            if entry is not None:
                self._objects.move_to_end(cache_key)
            return entry

    def _remember(self, cache_key: tuple[str, str], entry: _Entry) -> None:
        with self._lock:
            current = self._objects.get(cache_key)
            # Two racing readers: keep the newer copy.
            if current is None or current.version <= entry.version:
                self._objects[cache_key] = entry
            self._objects.move_to_end(cache_key)
            while len(self._objects) > self._max_cached:
                self._objects.popitem(last=False)

    def _forget(self, cache_key: tuple[str, str]) -> None:
        with self._lock:
            self._objects.pop(cache_key, None)

    def _view(self, entry: _Entry, deserializer: Deserializer | None) -> Any:
        if deserializer is None:
            return entry.base
        with self._lock:
            hit = entry.views.get(id(deserializer))
        if hit is not None and hit[0] is deserializer:
            return hit[1]
        value = deserializer(entry.base, [patch for _, patch in entry.patches])
        with self._lock:
            # Inline lambdas are new objects on every call: keep only the latest few views.
            while len(entry.views) >= _VIEWS_PER_OBJECT:
                del entry.views[next(iter(entry.views))]
            entry.views[id(deserializer)] = (deserializer, value)
        return value

    # ----------------------------------------------------------------- puts

    def _put(
        self,
        endpoint: str,
        descriptor: flight.FlightDescriptor,
        schema: pa.Schema,
        batches: Iterable[pa.RecordBatch],
        *,
        key: str,
        timeout: float,
        size_hint: int | None = None,
    ) -> ObjectRef:
        """Stream ``batches`` in one DoPut and return the reference from its PutResult.

        ``size_hint`` (the opaque payload's total size) rides on the first batch as app_metadata;
        see :data:`~flamepy_runner._cache_wire.SIZE_HINT_PREFIX`.
        """
        client = self._client(endpoint)
        with flight_errors(endpoint, key):
            writer, reader = client.do_put(descriptor, schema, self._options(timeout))
            try:
                for index, batch in enumerate(batches):
                    if index == 0 and size_hint:
                        writer.write_with_metadata(batch, pa.py_buffer(SIZE_HINT_PREFIX + b"%d" % size_hint))
                    else:
                        writer.write_batch(batch)
                writer.done_writing()
                answer = reader.read()
            except BaseException:
                # The server's status arrives at close(); prefer it to the local symptom.
                writer.close()
                raise
            writer.close()
        if answer is None:
            raise InternalError(
                f"object cache {endpoint} sent no PutResult for {key}", endpoint=endpoint, key=key
            )
        try:
            doc = bson.decode(bytes(answer))
            return ObjectRef(endpoint=str(doc["endpoint"]), key=str(doc["key"]), version=int(doc["version"]))
        except Exception as exc:
            raise InternalError(
                f"object cache {endpoint} sent an unreadable PutResult for {key}: {exc}",
                endpoint=endpoint,
                key=key,
            ) from exc

    def _put_value(self, endpoint: str, path: str, obj: Any) -> ObjectRef:
        native = native_payload(obj)
        descriptor = flight.FlightDescriptor.for_path(path)
        if native is not None:
            size = sum(b.nbytes for b in native.batches)
            return self._put(
                endpoint,
                descriptor,
                native.schema,
                native.batches,
                key=path,
                timeout=self._transfer_timeout(size),
            )
        return self._put_opaque(endpoint, descriptor, obj, key=path)

    def _put_opaque(
        self, endpoint: str, descriptor: flight.FlightDescriptor, obj: Any, *, key: str
    ) -> ObjectRef:
        """Send ``obj`` encoded as rows of at most 1 MiB, which the cache concatenates.

        Splitting costs the cache nothing it would not spend anyway, spares this side a full
        copy of big pickled ``bytes`` (their rows are slices of the object itself), and keeps
        every gRPC message small.
        """
        pieces = serialize_to_pieces(obj)
        size = sum(piece.size for piece in pieces)
        rows = (
            opaque_batch(piece.slice(start, min(_ROW_BYTES, piece.size - start)))
            for piece in pieces
            for start in range(0, max(piece.size, 1), _ROW_BYTES)
        )
        return self._put(
            endpoint,
            descriptor,
            OPAQUE_SCHEMA,
            rows,
            key=key,
            timeout=self._transfer_timeout(size),
            size_hint=size if len(pieces) > 1 or size > _ROW_BYTES else None,
        )

    def put_object(self, key_prefix: str, obj: Any) -> ObjectRef:
        """Store ``obj`` under a new id in ``<app>/<session>``.

        Args:
            key_prefix: ``<app>/<session>``.
            obj: the object; tables, record batches and data frames are stored as native Arrow
                tables, numpy and Arrow arrays take fast paths, anything else is cloudpickled.

        Returns:
            The reference (advertised endpoint, full key, version 1).

        Raises:
            UsageError: ``key_prefix`` is malformed.
            ClusterError: the cache refused the put or could not be reached (subclass says how).
        """
        check_path(key_prefix, what="key prefix", allow_full=False, allow_prefix=True, allow_wildcard=False)
        return self._put_value(self.endpoint, key_prefix, obj)

    def update_object(self, ref: ObjectRef, obj: Any) -> ObjectRef:
        """Replace the object behind ``ref`` (its patches are dropped).

        Args:
            ref: the object to replace; the put goes to ``ref.endpoint``.
            obj: the new value (encoded as in :meth:`put_object`).

        Returns:
            The reference with the new version.

        Raises:
            UsageError: ``ref.key`` is malformed.
            ClusterError: the cache refused the put or could not be reached.
        """
        check_full_key(ref.key)
        try:
            return self._put_value(ref.endpoint, ref.key, obj)
        finally:
            self._forget((ref.endpoint, ref.key))

    def patch_object(self, ref: ObjectRef, delta: Any) -> ObjectRef:
        """Append ``delta`` to the object behind ``ref``; the base is unchanged.

        Readers see the patches through ``get_object(ref, deserializer=...)``. The local copy is
        kept, so the next get fetches only the new patches.

        Args:
            ref: the object to patch (must exist).
            delta: the patch value (always sent opaque).

        Returns:
            The reference with the new version.

        Raises:
            UsageError: ``ref.key`` is malformed.
            NotFoundError: the object does not exist.
            ClusterError: any other refusal or transport failure.
        """
        check_full_key(ref.key)
        descriptor = flight.FlightDescriptor.for_command(f"PATCH:{ref.key}".encode())
        return self._put_opaque(ref.endpoint, descriptor, delta, key=ref.key)

    # ----------------------------------------------------------------- gets

    def get_object(self, ref: ObjectRef, deserializer: Deserializer | None = None) -> Any:
        """Read the object behind ``ref``, reusing the local copy when it is current.

        The cache is asked for what changed since the local copy's version: nothing (the local
        copy is returned), only newer patches (appended locally), or the whole object.
        ``ref.version == 0`` ignores the local copy and downloads everything.

        Versions restart at 1 when an object is deleted, so a copy cached before another client
        deleted and rewrote the same full key can look current; read such keys with version 0.
        (Keys made by :meth:`put_object` are fresh UUIDs and never come back.)

        The call's deadline is ``config.timeout``, for the whole transfer.

        Args:
            ref: the object to read (asked of ``ref.endpoint``).
            deserializer: ``f(base, patches)`` folding the base and its patches into one value;
                without it only the base is returned. Results are memoized per deserializer.

        Returns:
            The base object, or ``deserializer(base, patches)``.

        Raises:
            UsageError: ``ref.key`` is malformed.
            NotFoundError: the object does not exist (never stored, deleted, or evicted).
            ClusterError: any other refusal or transport failure.
        """
        check_full_key(ref.key)
        cache_key = (ref.endpoint, ref.key)
        entry = None if ref.version == 0 else self._cached(cache_key)
        known = entry.version if entry is not None else 0
        fetched = self._fetch(ref, known)
        if fetched is None:
            if entry is None:
                raise NotFoundError(
                    f"object cache {ref.endpoint}: object {ref.key} not found",
                    endpoint=ref.endpoint,
                    key=ref.key,
                )
            return self._view(entry, deserializer)
        if fetched.full:
            entry = _Entry(version=fetched.version, base=fetched.base, patches=fetched.patches)
        elif entry is not None and fetched.patches and fetched.patches[0][0] > entry.version:
            entry = _Entry(version=fetched.version, base=entry.base, patches=entry.patches + fetched.patches)
        else:
            # Patches that do not follow our copy: start over from the whole object.
            full = self._fetch(ref, 0)
            if full is None or not full.full:
                raise InternalError(
                    f"object cache {ref.endpoint} sent no full copy of {ref.key}",
                    endpoint=ref.endpoint,
                    key=ref.key,
                )
            entry = _Entry(version=full.version, base=full.base, patches=full.patches)
        self._remember(cache_key, entry)
        return self._view(entry, deserializer)

    def _fetch(self, ref: ObjectRef, known: int) -> _Fetched | None:
        """One DoGet; None means "not modified since ``known``"."""
        client = self._client(ref.endpoint)
        with flight_errors(ref.endpoint, ref.key):
            reader = client.do_get(flight.Ticket(f"{ref.key}:{known}".encode()), self._options())
            table = reader.read_all()
        if is_native_schema(table.schema):
            return _Fetched(full=True, version=native_version(table.schema), base=from_native_table(table))
        if table.num_rows == 0:
            return None
        names = table.schema.names
        if "data" not in names or "version" not in names:
            raise InternalError(
                f"object cache {ref.endpoint} answered {ref.key} with columns {names}, expected version/data",
                endpoint=ref.endpoint,
                key=ref.key,
            )
        versions = [int(v) for v in table.column("version").to_pylist()]
        if "kind" in names:
            kinds = [str(k) for k in table.column("kind").to_pylist()]
        else:
            # Older servers: the first row is the base, the rest are patches.
            kinds = [KIND_BASE] + [KIND_PATCH] * (len(versions) - 1)
        values = [deserialize(buf) for buf in cell_buffers(table.column("data"))]
        if not len(versions) == len(kinds) == len(values):
            raise InternalError(f"object cache {ref.endpoint} sent ragged columns for {ref.key}")
        rows = list(zip(versions, kinds, values, strict=True))
        bases = [i for i, (_, kind, _) in enumerate(rows) if kind == KIND_BASE]
        patches = tuple((v, value) for v, kind, value in rows if kind == KIND_PATCH)
        if len(bases) + len(patches) != len(rows) or bases not in ([], [0]):
            raise InternalError(
                f"object cache {ref.endpoint} answered {ref.key} with malformed rows (kinds {kinds})",
                endpoint=ref.endpoint,
                key=ref.key,
            )
        patch_versions = [v for v, _ in patches]
        if patch_versions != sorted(set(patch_versions)):
            raise InternalError(
                f"object cache {ref.endpoint} sent patches of {ref.key} out of order: {patch_versions}",
                endpoint=ref.endpoint,
                key=ref.key,
            )
        version = max(versions)
        if bases:
            return _Fetched(full=True, version=version, base=rows[0][2], patches=patches)
        return _Fetched(full=False, version=version, patches=patches)

    # ----------------------------------------------------------------- deletes

    def delete_objects(self, prefix: str) -> None:
        """Delete one object (``a/s/id``), a session's objects (``a/s``) or an app's (``a/*``).

        Deleting something that does not exist is not an error. Versions restart at 1.

        Args:
            prefix: what to delete.

        Raises:
            UsageError: ``prefix`` is malformed.
            ClusterError: the cache refused the delete or could not be reached.
        """
        check_path(prefix, what="delete pattern", allow_full=True, allow_prefix=True, allow_wildcard=True)
        client = self._client(self.endpoint)
        with flight_errors(self.endpoint, prefix):
            results = list(client.do_action(flight.Action("DELETE", prefix.encode()), self._options()))
        if not results:
            raise InternalError(
                f"object cache {self.endpoint} did not confirm DELETE {prefix}", endpoint=self.endpoint
            )
        with self._lock:
            for cache_key in [k for k in self._objects if matches(prefix, k[1])]:
                del self._objects[cache_key]
