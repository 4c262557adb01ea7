"""The fake object cache's Arrow Flight transport (A3-A7 of ``cache-and-executor.md``).

:class:`FakeObjectCache` owns a :class:`~flamepy_fake._cache._store.ObjectStore` and a
``pyarrow.flight`` server in front of it. The server translates the store's neutral
:class:`~flamepy_fake._cache._keys.StoreError` into Flight statuses in one place
(:func:`_status`): INVALID_ARGUMENT as ``InvalidRequest``, NOT_FOUND as ``ObjectNotFound``,
INTERNAL as ``FlightInternalError``, which pyarrow clients see as ``ArrowInvalid``,
``ArrowKeyError`` and ``FlightInternalError``, as with the real cache. Each status message is
v0.6.0's exact text; pyarrow's server then appends ``. Detail: Python exception: <class name>``
to INVALID_ARGUMENT and NOT_FOUND, which no pyarrow server can avoid (README: differences), but
never the server's traceback (see :class:`ObjectNotFound`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import bson
import pyarrow as pa
import pyarrow.flight as flight
from bson.int64 import Int64

from flamepy_runner._for_fake import SIZE_HINT_PREFIX, data_chunks

from .._addresses import bracket, outbound_address
from .._toolkit._calls import CACHE_SERVICE, CallLog
from .._toolkit._faults import DELAY, FAIL, CallTarget, Faults
from ._keys import (
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    StoreError,
    parse_full_key,
    parse_path,
    parse_ticket,
    utf8_error,
)
from ._payloads import RESPONSE_SCHEMA, NativeTable, PayloadBuilder, binary_array, binary_cells
from ._store import ObjectStore, Row

__all__ = ["FakeObjectCache"]

log = logging.getLogger(__name__)

_PATCH_PREFIX = b"PATCH:"
_DELETE = "DELETE"
_DELETE_DESCRIPTION = "Delete objects by key prefix"
_WILDCARD_HOSTS = {"0.0.0.0", "::", "", "[::]"}


class ObjectNotFound(KeyError):
    """NOT_FOUND for a Flight client, with the message alone (no Python traceback in it).

    pyarrow's server sends a Python exception's formatted traceback along with its status
    ("Detail: Python exception: Traceback ..."), and only a FlightError skips that, but no
    FlightError maps to NOT_FOUND. When formatting the exception fails, pyarrow sends only the
    class name instead. The module name below makes the formatted text unencodable (a lone
    surrogate), so it fails on every Python version, at no cost to the status or the message.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidRequest(ValueError):
    """INVALID_ARGUMENT for a Flight client, with the message alone (see :class:`ObjectNotFound`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# See ObjectNotFound's docstring: an unencodable module name keeps the traceback off the wire.
ObjectNotFound.__module__ = "flamepy_fake\udcff"
InvalidRequest.__module__ = "flamepy_fake\udcff"


def _raise_status(code: str, message: str) -> Any:
    if code == INVALID_ARGUMENT:
        raise InvalidRequest(message) from None
    if code == NOT_FOUND:
        raise ObjectNotFound(message) from None
    raise flight.FlightInternalError(message)


@contextlib.contextmanager
def _status() -> Iterator[None]:
    """The one place where store refusals become Flight statuses."""
    try:
        yield
    except StoreError as exc:
        _raise_status(exc.code, exc.message)


def _size_hint(metadata: pa.Buffer | None) -> int:
    """The payload size a flamepy_runner client announces on its first batch (0: none)."""
    if metadata is None:
        return 0
    raw = metadata.to_pybytes()
    if not raw.startswith(SIZE_HINT_PREFIX):
        return 0
    digits = raw[len(SIZE_HINT_PREFIX) :]
    return int(digits) if digits.isdigit() else 0


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _descriptor_key(descriptor: flight.FlightDescriptor) -> str | None:
    if descriptor.descriptor_type == flight.DescriptorType.PATH:
        return "/".join(_text(part) for part in descriptor.path) or None
    command = descriptor.command or b""
    return _text(command[len(_PATCH_PREFIX) :] if command.startswith(_PATCH_PREFIX) else command) or None


# How each handler's arguments name the key (for the call record and fault predicates).
_KEY_OF: dict[str, Callable[..., str | None]] = {
    "do_put": lambda descriptor, *_: _descriptor_key(descriptor),
    "do_get": lambda ticket: _text(ticket.ticket).split(":", 1)[0] or None,
    "do_action": lambda action: _text(action.body.to_pybytes()) if action.body is not None else None,
    "get_flight_info": _descriptor_key,
    "get_schema": _descriptor_key,
    "list_flights": lambda criteria: None,
    "list_actions": lambda: None,
}
# Exceptions a fault raises so that pyarrow sends its status (see _calllog._FLIGHT_STATUS).
_FAULT_ERRORS: dict[str, Callable[[str], BaseException]] = {
    "CANCELLED": flight.FlightCancelledError,
    "DEADLINE_EXCEEDED": flight.FlightTimedOutError,
    "INTERNAL": flight.FlightInternalError,
    "INVALID_ARGUMENT": InvalidRequest,
    "NOT_FOUND": ObjectNotFound,
    "PERMISSION_DENIED": flight.FlightUnauthorizedError,
    "UNAUTHENTICATED": flight.FlightUnauthenticatedError,
    "UNAVAILABLE": flight.FlightUnavailableError,
    "UNIMPLEMENTED": NotImplementedError,
}


def _watched(handler: str, impl: Callable[..., Any], calls: CallLog, faults: Faults) -> Callable[..., Any]:
    """``impl`` recorded in ``calls`` and subject to ``faults`` (the cache's one interception point)."""
    from .._toolkit._calllog import _FLIGHT_METHODS, _FLIGHT_STATUS

    method = _FLIGHT_METHODS[handler.upper()]
    key_of = _KEY_OF[handler]

    def call(context: flight.ServerCallContext, *args: Any) -> Any:
        start = time.perf_counter()
        status = "UNKNOWN"
        key = key_of(*args)
        try:
            if faults.armed:
                target = CallTarget(method, key=key)
                delay = faults.take(DELAY, target)
                if delay is not None:
                    time.sleep(delay.seconds)
                fail = faults.take(FAIL, target)
                if fail is not None and fail.status is not None:
                    raise _FAULT_ERRORS[fail.status](fail.message or "")
            result = impl(context, *args)
            status = "OK"
            return result
        except BaseException as exc:
            status = next((code for kind, code in _FLIGHT_STATUS if isinstance(exc, kind)), "UNKNOWN")
            raise
        finally:
            calls.record(CACHE_SERVICE, method, status, time.perf_counter() - start, key=key)

    return call


class _FlightService(flight.FlightServerBase):  # type: ignore[misc]
    """The Flight methods; all state lives in ``store``.

    With ``calls`` and ``faults``, every handler is wrapped once (:func:`_watched`): each call is
    recorded and injected faults act before the handler runs.
    """

    def __init__(
        self,
        location: str,
        store: ObjectStore,
        *,
        calls: CallLog | None = None,
        faults: Faults | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(location, **kwargs)
        self.store = store
        self.advertised = ""
        self.stopping = threading.Event()
        self._counts_lock = threading.Lock()
        self.finished_puts = 0
        if calls is not None and faults is not None:
            for handler in _KEY_OF:
                setattr(self, handler, _watched(handler, getattr(self, handler), calls, faults))

    # ----------------------------------------------------------------- DoPut

    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        try:
            self._do_put(context, descriptor, reader, writer)
        finally:
            with self._counts_lock:
                self.finished_puts += 1

    def _do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        # v0.6.0's check order (v0.6.0.md section 7): a bad PATCH path while reading, then
        # "No data received", then the missing key, then rows and columns, then the key shape.
        with _status():
            key_text, is_patch = self._put_target(descriptor)
            schema = reader.schema
            native = (schema.metadata or {}).get(b"flame.cache.format") == b"arrow-table-v1" and not is_patch
            problem = None if native else self._opaque_problem(schema)
            batches: list[pa.RecordBatch] = []
            builder = PayloadBuilder()
            received = rows = 0
            for chunk in data_chunks(reader):
                batch = chunk.data
                received += 1
                rows += batch.num_rows
                if native:
                    batches.append(batch)
                elif problem is None:
                    if received == 1:
                        builder.reserve(_size_hint(chunk.app_metadata))
                    for cell in binary_cells(batch.column(1)):
                        builder.add(cell)
            if context.is_cancelled() or self.stopping.is_set():
                # A client that went away mid-upload: keep what was stored before.
                raise flight.FlightCancelledError("upload cancelled before it completed")
            if received == 0:
                raise StoreError(INVALID_ARGUMENT, "No data received")
            if key_text is None:
                raise StoreError(INVALID_ARGUMENT, "key must be provided in descriptor path or command")
            if native:
                key, version = self.store.put(key_text, NativeTable(schema=schema, batches=tuple(batches)))
            else:
                if rows == 0:
                    raise StoreError(INVALID_ARGUMENT, "Expected at least one row")
                if problem is not None:
                    raise problem
                data = builder.finish()
                if is_patch:
                    key, version = self.store.patch(key_text, data)
                else:
                    key, version = self.store.put(key_text, data)
        answer = bson.encode({"endpoint": self.advertised, "key": key, "version": Int64(version)})
        writer.write(pa.py_buffer(answer))

    @staticmethod
    def _put_target(descriptor: flight.FlightDescriptor) -> tuple[str | None, bool]:
        """The key text (None when the descriptor names none) and whether this is a PATCH.

        Raises:
            StoreError: a PATCH command whose key fails the path parser (checked first, as
                v0.6.0 does while it reads the stream).
        """
        if descriptor.descriptor_type == flight.DescriptorType.PATH and descriptor.path:
            raw, is_patch = descriptor.path[0], False
        elif descriptor.descriptor_type == flight.DescriptorType.CMD and descriptor.command.startswith(
            _PATCH_PREFIX
        ):
            raw, is_patch = descriptor.command[len(_PATCH_PREFIX) :], True
        else:
            return None, False
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StoreError(INVALID_ARGUMENT, f"Invalid key: {utf8_error(exc)}") from None
        if is_patch:
            try:
                parse_path(text)
            except ValueError as exc:
                raise StoreError(INVALID_ARGUMENT, f"Invalid PATCH key '{text}': {exc}") from None
        return text, is_patch

    @staticmethod
    def _opaque_problem(schema: pa.Schema) -> StoreError | None:
        """Why an opaque upload's columns are wrong (reported after the row check), or None."""
        if len(schema) < 2:
            # The real cache panics here; a clear refusal is kinder and keeps the server up.
            return StoreError(
                INVALID_ARGUMENT,
                f"Expected at least 2 columns (version: uint64, data: binary), got {len(schema)}",
            )
        if schema.field(0).type != pa.uint64():
            return StoreError(INTERNAL, "Invalid version column")
        if schema.field(1).type not in (pa.binary(), pa.large_binary()):
            return StoreError(INTERNAL, "Invalid data column")
        return None

    # ----------------------------------------------------------------- DoGet

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        with _status():
            key_text, client_version = parse_ticket(ticket.ticket)
            result = self.store.get(key_text, client_version)
        if result.native is not None:
            return flight.RecordBatchStream(result.native.table())
        if result.not_modified:
            return flight.RecordBatchStream(pa.Table.from_batches([], schema=RESPONSE_SCHEMA))
        schema = RESPONSE_SCHEMA
        if any(row.data.size >= 2**31 for row in result.rows):
            schema = pa.schema(
                [RESPONSE_SCHEMA.field(0), RESPONSE_SCHEMA.field(1), ("data", pa.large_binary())]
            )
        # One batch per row, as the real cache sends; the generator stops early on shutdown.
        return flight.GeneratorStream(schema, self._rows(schema, result.rows))

    def _rows(self, schema: pa.Schema, rows: tuple[Row, ...]) -> Iterator[pa.RecordBatch]:
        for row in rows:
            if self.stopping.is_set():
                raise flight.FlightUnavailableError("the fake object cache is shutting down")
            data = binary_array(row.data)
            if data.type != schema.field(2).type:
                data = data.cast(schema.field(2).type)
            yield pa.RecordBatch.from_arrays(
                [pa.array([row.version], type=pa.uint64()), pa.array([row.kind], type=pa.utf8()), data],
                schema=schema,
            )

    # ----------------------------------------------------------------- actions

    def do_action(self, context: flight.ServerCallContext, action: flight.Action) -> Iterator[bytes]:
        if action.type != _DELETE:
            raise InvalidRequest(f"Unknown action type: {action.type}. Only DELETE is supported.")
        body = action.body.to_pybytes() if action.body is not None else b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"Invalid key: {utf8_error(exc)}") from None
        with _status():
            self.store.delete(text)
        return iter([b"OK"])

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return [(_DELETE, _DELETE_DESCRIPTION)]

    # ----------------------------------------------------------------- metadata

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if descriptor.descriptor_type != flight.DescriptorType.PATH or not descriptor.path:
            raise InvalidRequest("Empty descriptor path")
        try:
            key = "/".join(part.decode("utf-8") for part in descriptor.path)
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"Invalid key: {utf8_error(exc)}") from None
        schema = None
        with contextlib.suppress(StoreError):
            parse_full_key(key)
            schema = self.store.native_schema(key)
        endpoint = flight.FlightEndpoint(key.encode(), [self.advertised])
        return flight.FlightInfo(schema, flight.FlightDescriptor.for_path(key), [endpoint], -1, -1)

    def list_flights(self, context: flight.ServerCallContext, criteria: bytes) -> Iterator[flight.FlightInfo]:
        for key, size in self.store.listing():
            endpoint = flight.FlightEndpoint(key.encode(), [self.advertised])
            yield flight.FlightInfo(None, flight.FlightDescriptor.for_path(key), [endpoint], -1, size)

    def get_schema(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor) -> Any:
        return flight.SchemaResult(RESPONSE_SCHEMA)


_T = TypeVar("_T")


def _started(part: _T | None) -> _T:
    """Return ``part`` of a running cache, or say clearly that the cache is not running."""
    if part is None:
        raise RuntimeError("the fake object cache is not started: call start() first")
    return part


class FakeObjectCache:
    """An in-process Arrow Flight object cache that behaves like Flame's.

    Args:
        host: the address to listen on (``127.0.0.1`` by default).
        port: the port; 0 picks a free one.
        advertise_host: the host put in every PutResult and FlightInfo; by default ``host``,
            or this machine's outbound address when ``host`` is a wildcard (never ``0.0.0.0``).
        storage_dir: persist objects here and load existing ones at start; None keeps memory only.
        max_memory: resident byte limit with LRU eviction (None: unlimited).
        max_objects: resident object limit with LRU eviction (None: unlimited).
        tls_certificates: ``(cert_chain_pem, private_key_pem)`` to serve ``grpc+tls``.
        log_calls: log each call as it ends (see :mod:`flamepy_fake._toolkit._calllog`).
        calls: record every call here (a FakeCluster's call record); needs ``faults``.
        faults: apply these injected faults to the Flight calls; needs ``calls``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise_host: str | None = None,
        storage_dir: str | os.PathLike[str] | None = None,
        max_memory: int | None = None,
        max_objects: int | None = None,
        tls_certificates: tuple[bytes, bytes] | None = None,
        log_calls: bool = False,
        calls: CallLog | None = None,
        faults: Faults | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._advertise_host = advertise_host
        self._storage_dir = storage_dir
        self._max_memory = max_memory
        self._max_objects = max_objects
        self._tls = tls_certificates
        self._log_calls = log_calls
        self._calls = calls
        self._faults = faults
        self._lock = threading.Lock()
        self._server: _FlightService | None = None
        self._store: ObjectStore | None = None
        self._endpoint: str | None = None
        self._stopped = False

    @property
    def scheme(self) -> str:
        """``grpc`` or ``grpc+tls``."""
        return "grpc+tls" if self._tls else "grpc"

    @property
    def endpoint(self) -> str:
        """The advertised endpoint, e.g. ``grpc://127.0.0.1:43125``.

        Raises:
            RuntimeError: the cache is not running.
        """
        return _started(self._endpoint)

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: the cache is not running.
        """
        port: int = _started(self._server).port
        return port

    @property
    def store(self) -> ObjectStore:
        """The object store behind the server (for inspection in tests).

        Raises:
            RuntimeError: the cache is not running.
        """
        return _started(self._store)

    @property
    def finished_puts(self) -> int:
        """How many DoPut calls have ended so far, successfully or not (lets tests wait for them)."""
        server = self._server
        return server.finished_puts if server is not None else 0

    def start(self) -> FakeObjectCache:
        """Load storage (if any) and start serving.

        Returns:
            self, for chaining.

        Raises:
            RuntimeError: already started, or stopped (a stopped cache cannot restart).
            OSError: the address cannot be bound.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("this fake object cache was stopped; create a new one")
            if self._server is not None:
                raise RuntimeError("the fake object cache is already started")
            store = ObjectStore(
                storage_dir=self._storage_dir, max_memory=self._max_memory, max_objects=self._max_objects
            )
            location = f"{self.scheme}://{bracket(self._host or '0.0.0.0')}:{self._requested_port}"
            kwargs: dict[str, Any] = {}
            if self._tls is not None:
                kwargs["tls_certificates"] = [flight.CertKeyPair(cert=self._tls[0], key=self._tls[1])]
            if self._log_calls:
                from .._toolkit._calllog import FlightCallLog

                kwargs["middleware"] = {"flamepy-fake-calls": FlightCallLog()}
            try:
                server = _FlightService(location, store, calls=self._calls, faults=self._faults, **kwargs)
            except (pa.ArrowException, flight.FlightError) as exc:
                raise OSError(f"cannot start the fake object cache on {location}: {exc}") from exc
            host = self._advertise_host
            if host is None:
                host = outbound_address() if self._host in _WILDCARD_HOSTS else self._host
            self._endpoint = f"{self.scheme}://{bracket(host)}:{server.port}"
            server.advertised = self._endpoint
            self._server, self._store = server, store
            log.info("fake object cache listening on %s", self._endpoint)
            return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent).

        Downloads in progress end at their next row; uploads in progress are waited for (pyarrow's
        server cannot interrupt a stream it is reading), so a client holding an upload open
        delays the stop until it finishes, disconnects or reaches its deadline.
        """
        with self._lock:
            self._stopped = True
            server, self._server = self._server, None
        if server is not None:
            server.stopping.set()
            server.shutdown()
            server.wait()

    def __enter__(self) -> FakeObjectCache:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = (
            self._endpoint if self._server is not None else ("stopped" if self._stopped else "not started")
        )
        return f"<FakeObjectCache {state}>"
