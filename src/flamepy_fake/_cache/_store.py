"""State of the fake object cache: versions, patches, native tables, eviction, disk.

Plain Python over ``pyarrow`` buffers, no Flight: :mod:`flamepy_fake._cache._server` is the thin
Arrow Flight adapter in front of it. Keys are parsed by :mod:`flamepy_fake._cache._keys`, payloads
are encoded by :mod:`flamepy_fake._cache._payloads`. Refusals are
:class:`~flamepy_fake._cache._keys.StoreError` with the real cache's status and message texts
(``cache-and-executor.md`` part A).

Model (A3-A8): every key has metadata (current version S, size) and, while resident, a payload:
an opaque base buffer with numbered patches, or a native Arrow table. Versions start at 1 and grow
by one per put and per patch; a put drops the patches; a delete forgets the key, so the next put
is version 1 again. With a memory limit, least recently read objects lose their payload (the
metadata stays); with a storage directory they are reloaded from disk on the next access.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import pyarrow as pa

from ._keys import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    ObjectPath,
    StoreError,
    parse_full_key,
    parse_path,
    parse_ticket,
)
from ._payloads import (
    FORMAT_ARROW_TABLE,
    FORMAT_KEY,
    KIND_BASE,
    KIND_PATCH,
    OPAQUE_SCHEMA,
    RESPONSE_SCHEMA,
    VERSION_KEY,
    NativeTable,
    PayloadBuilder,
    opaque_contents,
    opaque_row,
    read_ipc_file,
    write_ipc_file,
)

# The key and payload names are re-exported: callers see one cache-state module.
__all__ = [
    "INTERNAL",
    "INVALID_ARGUMENT",
    "MAX_PATCHES_ON_DISK",
    "NOT_FOUND",
    "OPAQUE_SCHEMA",
    "RESPONSE_SCHEMA",
    "GetResult",
    "NativeTable",
    "ObjectPath",
    "ObjectStore",
    "PayloadBuilder",
    "Row",
    "StoreError",
    "parse_full_key",
    "parse_path",
    "parse_ticket",
]

log = logging.getLogger(__name__)

#: The real cache refuses the 1001st patch of an object kept on disk.
MAX_PATCHES_ON_DISK = 1000


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class Row:
    """One DoGet row: a base or a patch at a version."""

    version: int
    kind: str
    data: pa.Buffer


@dataclasses.dataclass(frozen=True)
class GetResult:
    """What DoGet should send.

    Attributes:
        rows: base and/or patch rows (opaque objects); empty for "not modified".
        native: the stamped table for native objects, else None.
    """

    rows: tuple[Row, ...] = ()
    native: NativeTable | None = None

    @property
    def not_modified(self) -> bool:
        """True when the client's copy is current (zero rows, opaque schema)."""
        return self.native is None and not self.rows


@dataclasses.dataclass
class _Payload:
    base_version: int
    base: pa.Buffer | NativeTable
    patches: list[tuple[int, pa.Buffer]]

    @property
    def nbytes(self) -> int:
        base: int = self.base.nbytes if isinstance(self.base, NativeTable) else self.base.size
        return base + sum(int(p.size) for _, p in self.patches)


@dataclasses.dataclass
class _Meta:
    version: int
    size: int
    patches: int = 0


# --------------------------------------------------------------------------- the store


class ObjectStore:
    """The objects of one fake cache (thread-safe; one lock).

    Args:
        storage_dir: persist objects under this directory (``<root>/<app>/<ssn>/<id>.arrow``
            plus ``<id>.deltas/<n>.arrow``) and load what is there now; None keeps memory only.
        max_memory: evict least recently read payloads while resident bytes exceed this; the
            object just written is never evicted. None means no limit.
        max_objects: the same limit counted in objects.
    """

    def __init__(
        self,
        *,
        storage_dir: str | os.PathLike[str] | None = None,
        max_memory: int | None = None,
        max_objects: int | None = None,
    ) -> None:
        if max_memory is not None and max_memory < 0:
            raise ValueError(f"max_memory must be >= 0, got {max_memory}")
        if max_objects is not None and max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {max_objects}")
        self._root = Path(storage_dir) if storage_dir is not None else None
        self._max_memory = max_memory
        self._max_objects = max_objects
        self._lock = threading.Lock()
        self._meta: dict[str, _Meta] = {}
        # Resident payloads in recency order (least recently used first).
        self._resident: OrderedDict[str, _Payload] = OrderedDict()
        self._bytes = 0
        if self._root is not None:
            self._root.mkdir(parents=True, exist_ok=True)
            self._load_all()

    # ----------------------------------------------------------------- queries

    @property
    def resident_bytes(self) -> int:
        """Bytes of payload currently held in memory."""
        with self._lock:
            return self._bytes

    def list_keys(self) -> list[str]:
        """Every key with metadata (resident or evicted), sorted."""
        with self._lock:
            return sorted(self._meta)

    def is_resident(self, key: str) -> bool:
        """Tell whether ``key``'s payload is in memory.

        Args:
            key: a full key.

        Returns:
            True when resident.
        """
        with self._lock:
            return key in self._resident

    def version(self, key: str) -> int | None:
        """Current version of ``key`` or None if unknown.

        Args:
            key: a full key.

        Returns:
            The version.
        """
        with self._lock:
            meta = self._meta.get(key)
            return meta.version if meta else None

    def listing(self) -> list[tuple[str, int]]:
        """``(key, size)`` for every key with metadata, including evicted ones (ListFlights)."""
        with self._lock:
            return [(key, meta.size) for key, meta in self._meta.items()]

    def objects(self) -> list[tuple[str, int, int, int]]:
        """``(key, version, size, patches)`` for every key with metadata, sorted by key."""
        with self._lock:
            return [(key, m.version, m.size, m.patches) for key, m in sorted(self._meta.items())]

    def native_schema(self, key: str) -> pa.Schema | None:
        """The stored schema of a native object, or None (GetFlightInfo; no existence check).

        Args:
            key: a full key.

        Returns:
            The stamped schema, or None for opaque or unknown objects.
        """
        with self._lock:
            payload = self._resident.get(key)
            if payload is not None and isinstance(payload.base, NativeTable):
                return payload.base.schema
        return None

    # ----------------------------------------------------------------- writes

    def put(self, path_text: str, data: pa.Buffer | NativeTable) -> tuple[str, int]:
        """Create or overwrite an object (DoPut without PATCH).

        Args:
            path_text: ``app/session`` (a new UUIDv4 id) or ``app/session/id``.
            data: the concatenated opaque bytes, or a native table.

        Returns:
            The full key and its new version.

        Raises:
            StoreError: INVALID_ARGUMENT for a malformed path or ``app/*``.
        """
        try:
            path = parse_path(path_text)
            if path.is_wildcard:  # v0.6.0 resolves 'a/*' to the bare app, which is no path
                parse_path(path.app)
        except ValueError as exc:
            raise StoreError(INVALID_ARGUMENT, str(exc)) from None
        if path.object_id is None:
            path = dataclasses.replace(path, object_id=str(uuid.uuid4()))
        self._check_storable(path)
        key = path.key
        with self._lock:
            meta = self._meta.get(key)
            version = (meta.version if meta else 0) + 1
            if isinstance(data, NativeTable):
                data = data.stamped(version)
            payload = _Payload(base_version=version, base=data, patches=[])
            if self._root is not None:
                self._write_base(path, payload)
            self._meta[key] = _Meta(version=version, size=payload.nbytes, patches=len(payload.patches))
            self._make_resident(key, payload)
            self._evict(keep=key)
        return key, version

    def patch(self, key_text: str, data: pa.Buffer) -> tuple[str, int]:
        """Append a patch to an existing object (DoPut with ``PATCH:<key>``).

        Args:
            key_text: ``app/session/id``.
            data: the patch bytes.

        Returns:
            The key and the patch's version.

        Raises:
            StoreError: INVALID_ARGUMENT for a malformed key (the full-key parser; the server
                checks the PATCH command's path syntax first) or too many patches on disk;
                NOT_FOUND when the object does not exist (or was evicted without storage).
        """
        path = parse_full_key(key_text)
        key = path.key
        with self._lock:
            payload = self._payload(path)
            meta = self._meta.get(key)
            if payload is None and meta is not None and self._root is not None:
                raise StoreError(NOT_FOUND, f"object <{key}> not found, must put first")
            if payload is None or meta is None:
                raise StoreError(NOT_FOUND, f"object <{key}> not found for patch")
            if self._root is not None and len(payload.patches) >= MAX_PATCHES_ON_DISK:
                raise StoreError(
                    INVALID_ARGUMENT,
                    f"object <{key}> has reached maximum delta count ({MAX_PATCHES_ON_DISK})",
                )
            version = meta.version + 1
            if self._root is not None:
                self._write_patch(path, len(payload.patches), version, data)
            payload.patches.append((version, data))
            self._bytes += data.size
            meta.version, meta.size, meta.patches = version, payload.nbytes, len(payload.patches)
            self._make_resident(key, payload)
            self._evict(keep=key)
        return key, version

    def delete(self, path_text: str) -> list[str]:
        """Delete ``app/session/id``, ``app/session`` or ``app/*`` (memory, metadata, disk).

        Args:
            path_text: what to delete; matching nothing is fine.

        Returns:
            The keys that were removed.

        Raises:
            StoreError: INVALID_ARGUMENT for a malformed path.
        """
        try:
            path = parse_path(path_text)
        except ValueError as exc:
            raise StoreError(INVALID_ARGUMENT, str(exc)) from None
        with self._lock:
            gone = [key for key in self._meta if path.covers(key)]
            for key in gone:
                del self._meta[key]
                payload = self._resident.pop(key, None)
                if payload is not None:
                    self._bytes -= payload.nbytes
            if self._root is not None and "." not in (path.app, path.session, path.object_id):
                self._remove_files(path)
        return gone

    # ----------------------------------------------------------------- reads

    def get(self, key_text: str, client_version: int) -> GetResult:
        """Decide the DoGet answer for a client that holds ``client_version`` (0: nothing).

        Args:
            key_text: ``app/session/id``.
            client_version: the version after the ticket's ``:``.

        Returns:
            Not modified, patches only, the full object, or the native table (A5).

        Raises:
            StoreError: INVALID_ARGUMENT for a malformed key; NOT_FOUND for unknown objects.
        """
        path = parse_full_key(key_text)
        key = path.key
        with self._lock:
            payload = self._payload(path)
            meta = self._meta.get(key)
            if payload is None or meta is None:
                raise StoreError(NOT_FOUND, f"object <{key}> not found")
            self._resident.move_to_end(key)
            current, base_version = meta.version, payload.base_version
            if client_version != 0 and client_version == current:
                return GetResult()
            if isinstance(payload.base, NativeTable):
                return GetResult(native=payload.base)
            newer = [(v, d) for v, d in payload.patches if v > client_version]
            contiguous = [v for v, _ in newer] == list(range(client_version + 1, current + 1))
            if 0 < client_version < current and base_version <= client_version and contiguous:
                return GetResult(rows=tuple(Row(v, KIND_PATCH, d) for v, d in newer))
            rows = [Row(base_version, KIND_BASE, payload.base)]
            rows.extend(Row(v, KIND_PATCH, d) for v, d in payload.patches)
            return GetResult(rows=tuple(rows))

    # ----------------------------------------------------------------- memory

    def _make_resident(self, key: str, payload: _Payload) -> None:
        old = self._resident.pop(key, None)
        if old is not None and old is not payload:
            self._bytes -= old.nbytes
        elif old is payload:
            # A patch already added its bytes; only the recency changes.
            self._resident[key] = payload
            return
        self._resident[key] = payload
        self._bytes += payload.nbytes

    def _over_limit(self) -> bool:
        if self._max_memory is not None and self._bytes > self._max_memory:
            return True
        return self._max_objects is not None and len(self._resident) > self._max_objects

    def _evict(self, keep: str) -> None:
        """Drop least recently used payloads until under the limits, never ``keep``."""
        while self._over_limit():
            victim = next((k for k in self._resident if k != keep), None)
            if victim is None:
                return
            payload = self._resident.pop(victim)
            self._bytes -= payload.nbytes
            log.debug("evicted %s (%d bytes)", victim, payload.nbytes)

    def _payload(self, path: ObjectPath) -> _Payload | None:
        """The resident payload, reloaded from disk on a miss (caller holds the lock)."""
        key = path.key
        payload = self._resident.get(key)
        if payload is not None or self._root is None or not self._storable(path):
            return payload
        try:
            payload = self._read_object(self._base_file(path))
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise StoreError(INTERNAL, f"cannot read object {key} from storage: {exc}") from exc
        meta = self._meta.get(key)
        version = max([payload.base_version] + [v for v, _ in payload.patches])
        if meta is None:
            self._meta[key] = _Meta(version=version, size=payload.nbytes, patches=len(payload.patches))
        self._make_resident(key, payload)
        self._evict(keep=key)
        return payload

    # ----------------------------------------------------------------- disk

    @staticmethod
    def _storable(path: ObjectPath) -> bool:
        # "." components would alias a parent directory on disk (and "./*" would wipe the root).
        return "." not in (path.app, path.session, path.object_id)

    def _check_storable(self, path: ObjectPath) -> None:
        if self._root is not None and not self._storable(path):
            raise StoreError(
                INVALID_ARGUMENT, f"Invalid path '{path.key}': '.' components cannot be stored on disk"
            )

    def _session_dir(self, path: ObjectPath) -> Path:
        assert self._root is not None
        return self._root / path.app / path.session

    def _base_file(self, path: ObjectPath) -> Path:
        return self._session_dir(path) / f"{path.object_id}.arrow"

    def _deltas_dir(self, path: ObjectPath) -> Path:
        return self._session_dir(path) / f"{path.object_id}.deltas"

    def _write_base(self, path: ObjectPath, payload: _Payload) -> None:
        target = self._base_file(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(payload.base, NativeTable):
                write_ipc_file(target, payload.base.schema, payload.base.batches)
            else:
                batch = opaque_row(payload.base_version, payload.base)
                write_ipc_file(target, batch.schema, (batch,))
            shutil.rmtree(self._deltas_dir(path), ignore_errors=True)
        except OSError as exc:
            raise StoreError(INTERNAL, f"cannot store object {path.key}: {exc}") from exc

    def _write_patch(self, path: ObjectPath, index: int, version: int, data: pa.Buffer) -> None:
        target = self._deltas_dir(path) / f"{index}.arrow"
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            batch = opaque_row(version, data)
            write_ipc_file(target, batch.schema, (batch,))
        except OSError as exc:
            raise StoreError(INTERNAL, f"cannot store patch of {path.key}: {exc}") from exc

    def _remove_files(self, path: ObjectPath) -> None:
        assert self._root is not None
        if path.is_wildcard:
            shutil.rmtree(self._root / path.app, ignore_errors=True)
        elif path.object_id is None:
            shutil.rmtree(self._session_dir(path), ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                self._base_file(path).unlink()
            shutil.rmtree(self._deltas_dir(path), ignore_errors=True)

    def _read_object(self, base_file: Path) -> _Payload:
        table = read_ipc_file(base_file)
        if (table.schema.metadata or {}).get(FORMAT_KEY) == FORMAT_ARROW_TABLE:
            raw = (table.schema.metadata or {}).get(VERSION_KEY, b"0")
            version = int(raw) if raw.isdigit() else 0
            native = NativeTable(schema=table.schema, batches=tuple(table.to_batches()))
            return _Payload(base_version=version, base=native, patches=[])
        version, data = opaque_contents(table)
        payload = _Payload(base_version=version, base=data, patches=[])
        deltas = base_file.with_name(base_file.name[: -len(".arrow")] + ".deltas")
        if deltas.is_dir():
            numbered = sorted((int(p.stem), p) for p in deltas.glob("*.arrow") if p.stem.isdigit())
            for n, delta_file in numbered:
                delta_version, delta = opaque_contents(read_ipc_file(delta_file))
                # A stored version of 0 means "base + n + 1" (files written by other tools).
                payload.patches.append((delta_version or version + n + 1, delta))
        return payload

    def _load_all(self) -> None:
        """Load every stored object at start-up; unreadable files are skipped with a warning."""
        assert self._root is not None
        for base_file in sorted(self._root.glob("*/*/*.arrow")):
            app, session = base_file.parent.parent.name, base_file.parent.name
            path = ObjectPath(app, session, base_file.name[: -len(".arrow")])
            try:
                parse_path(path.key)
                payload = self._read_object(base_file)
            except (OSError, pa.ArrowException, ValueError, KeyError) as exc:
                log.warning("fake object cache: skipping unreadable %s: %s", base_file, exc)
                continue
            version = max([payload.base_version] + [v for v, _ in payload.patches])
            with self._lock:
                self._meta[path.key] = _Meta(
                    version=version, size=payload.nbytes, patches=len(payload.patches)
                )
                self._make_resident(path.key, payload)
                self._evict(keep=path.key)
