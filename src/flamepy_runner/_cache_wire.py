"""Wire-level helpers of the cache client: object references, key checks, the Flight error
boundary and Arrow cell encoding.

Everything here is what :class:`~flamepy_runner._cache.CacheClient` needs to speak flamepy
0.6.0's protocol; the client itself holds the connections and the local cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, NoReturn

import bson
import pyarrow as pa
import pyarrow.flight as flight

from ._exceptions import (
    ClusterError,
    DeadlineExceededError,
    FlameError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UsageError,
)

__all__ = [
    "KIND_BASE",
    "KIND_PATCH",
    "OPAQUE_SCHEMA",
    "SIZE_HINT_PREFIX",
    "ObjectRef",
    "cell_buffers",
    "check_full_key",
    "check_path",
    "data_chunks",
    "flight_errors",
    "flight_location",
    "matches",
    "opaque_batch",
    "server_message",
]


# --------------------------------------------------------------------------- references

#: Optional app_metadata on the first batch of a put: ``<prefix><total payload bytes>``. The real
#: cache ignores batch metadata; the fake uses it to preallocate and keep its peak memory low.
SIZE_HINT_PREFIX = b"flamepy-runner.payload-size="
#: The rows of an opaque object (pickled values, files): flamepy's layout.
OPAQUE_SCHEMA = pa.schema([pa.field("version", pa.uint64()), pa.field("data", pa.binary())])
#: The ``kind`` of a row of a patched object's answer: its base or one of its patches.
KIND_BASE = "base"
KIND_PATCH = "patch"


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """Where a cached object lives and which version the holder last saw.

    Args:
        endpoint: the cache endpoint that stores the object (as advertised by the server).
        key: the full key ``<app>/<session>/<object id>``.
        version: the object version; 0 means "unknown", which makes :meth:`CacheClient.get_object`
            download the whole object instead of trusting its local copy.
    """

    endpoint: str
    key: str
    version: int = 0

    def encode(self) -> bytes:
        """Encode as BSON, byte-for-byte what flamepy 0.6.0 writes for the same reference.

        Returns:
            The BSON document ``{endpoint, key, version}``.
        """
        return bytes(bson.encode({"endpoint": self.endpoint, "key": self.key, "version": int(self.version)}))

    @classmethod
    def decode(cls, data: bytes) -> ObjectRef:
        """Decode a reference written by :meth:`encode` or by flamepy.

        Args:
            data: the BSON document.

        Returns:
            The reference.

        Raises:
            UsageError: ``data`` is not a BSON object reference.
        """
        try:
            doc = bson.decode(bytes(data))
        except Exception as exc:  # bson raises several unrelated types for garbage
            raise UsageError(f"not an encoded ObjectRef ({len(data)} bytes): {exc}") from exc
        endpoint, key, version = doc.get("endpoint"), doc.get("key"), doc.get("version", 0)
        if not isinstance(endpoint, str) or not isinstance(key, str) or not isinstance(version, int):
            raise UsageError(f"not an encoded ObjectRef: expected endpoint, key and version, got {doc!r}")
        return cls(endpoint=endpoint, key=key, version=int(version))

    def with_version(self, version: int) -> ObjectRef:
        """Return a copy naming ``version`` (0 forces the next get to fetch everything).

        Args:
            version: the version to record.

        Returns:
            The new reference.
        """
        return dataclasses.replace(self, version=version)


# --------------------------------------------------------------------------- key checks


def _check_component(kind: str, text: str, value: str) -> None:
    if not value:
        raise UsageError(f"invalid {kind} {text!r}: empty component")
    if ".." in value or "\\" in value:
        raise UsageError(f"invalid {kind} {text!r}: components may not contain '..' or '\\'")


def check_full_key(key: str) -> None:
    if not isinstance(key, str):
        raise UsageError(f"object key must be a str, got {type(key).__name__}")
    parts = key.split("/")
    if len(parts) != 3:
        raise UsageError(f"invalid object key {key!r}: expected '<app>/<session>/<id>'")
    for part in parts:
        _check_component("object key", key, part)
    if "*" in parts:
        raise UsageError(f"invalid object key {key!r}: '*' is only allowed in delete patterns '<app>/*'")


def check_path(path: str, *, what: str, allow_full: bool, allow_prefix: bool, allow_wildcard: bool) -> None:
    if not isinstance(path, str):
        raise UsageError(f"{what} must be a str, got {type(path).__name__}")
    parts = path.split("/")
    if len(parts) == 3 and allow_full:
        check_full_key(path)
        return
    if len(parts) == 2 and allow_prefix:
        for part in parts:
            _check_component(what, path, part)
        if parts[0] == "*" or (parts[1] == "*" and not allow_wildcard):
            raise UsageError(f"invalid {what} {path!r}: '*' is not allowed here")
        return
    shapes = [
        s for s, ok in (("'<app>/<session>'", allow_prefix), ("'<app>/<session>/<id>'", allow_full)) if ok
    ]
    raise UsageError(f"invalid {what} {path!r}: expected {' or '.join(shapes)}")


def matches(pattern: str, key: str) -> bool:
    """Tell whether a DELETE pattern (``a/s/id``, ``a/s`` or ``a/*``) covers ``key``."""
    app, _, rest = pattern.partition("/")
    if rest == "*":
        return key.startswith(f"{app}/") and key.count("/") == 2
    if pattern.count("/") == 2:
        return key == pattern
    return key.startswith(f"{pattern}/") and key.count("/") == 2


# --------------------------------------------------------------------------- error boundary


def server_message(exc: BaseException) -> str:
    """The server's own text, without pyarrow's framing and the remote traceback."""
    text = str(exc)
    marker = "with message: "
    if text.startswith("Flight returned") and marker in text:
        text = text.split(marker, 1)[1]
    for cut in (". Detail: ", ". gRPC client debug context", "\nDetail: "):
        text = text.split(cut, 1)[0]
    text = text.strip()
    # A server-side KeyError arrives with repr() quotes around its message.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]
    return text


def _raise_mapped(exc: BaseException, endpoint: str, key: str | None) -> NoReturn:
    """Translate one pyarrow/Flight exception into the matching :class:`ClusterError`."""
    where = f"object cache {endpoint}"
    detail = server_message(exc)
    cls: type[ClusterError]
    # Order matters: several Flight classes also derive from ArrowInvalid/ArrowCancelled.
    if isinstance(exc, flight.FlightTimedOutError):
        cls, detail = DeadlineExceededError, f"deadline exceeded: {detail}"
    elif isinstance(exc, flight.FlightUnavailableError):
        cls, detail = UnavailableError, f"unreachable: {detail}"
    elif isinstance(exc, flight.FlightWriteSizeExceededError):
        cls = InvalidArgumentError
    elif isinstance(exc, pa.ArrowKeyError):
        cls = NotFoundError
    elif isinstance(exc, pa.ArrowInvalid):
        cls = InvalidArgumentError
    else:
        cls = InternalError
    raise cls(f"{where}: {detail}", endpoint=endpoint, key=key) from exc


@contextlib.contextmanager
def flight_errors(endpoint: str, key: str | None = None) -> Iterator[None]:
    """The one place where Flight and Arrow errors become flamepy_runner exceptions."""
    try:
        yield
    except FlameError:
        raise
    except (flight.FlightError, pa.ArrowException) as exc:
        _raise_mapped(exc, endpoint, key)


def flight_location(endpoint: str) -> str:
    """The pyarrow location for a Flame cache URL (``grpcs``/``https`` mean TLS)."""
    for src, dst in (("grpcs://", "grpc+tls://"), ("https://", "grpc+tls://"), ("http://", "grpc://")):
        if endpoint.startswith(src):
            return dst + endpoint[len(src) :]
    return endpoint


def data_chunks(reader: Any) -> Iterator[Any]:
    """Yield the chunks of a Flight stream reader that carry a record batch.

    Works for the client's ``FlightStreamReader`` and the server's ``MessageReader`` alike;
    metadata-only chunks (``data is None``) are skipped, and the stream's end ends the loop.
    """
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            return
        if chunk.data is not None:
            yield chunk


def cell_buffers(column: pa.ChunkedArray | pa.Array) -> Iterator[pa.Buffer]:
    """Yield each value of a binary column as a zero-copy buffer slice."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    for chunk in chunks:
        if chunk.type not in (pa.binary(), pa.large_binary()):
            raise InternalError(f"object cache sent a 'data' column of type {chunk.type}, expected binary")
        width = 8 if chunk.type == pa.large_binary() else 4
        _, offsets_buf, data_buf = chunk.buffers()
        offsets = memoryview(offsets_buf).cast("q" if width == 8 else "i")
        first = chunk.offset
        for i in range(len(chunk)):
            start, end = offsets[first + i], offsets[first + i + 1]
            if data_buf is None or end == start:
                yield pa.py_buffer(b"")
            else:
                yield data_buf.slice(start, end - start)


def opaque_batch(payload: pa.Buffer) -> pa.RecordBatch:
    """One ``{version: 0, data: payload}`` row, built without copying ``payload``."""
    if payload.size < 2**31:
        offsets = pa.array([0, payload.size], type=pa.int32()).buffers()[1]
        data = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, payload])
    else:
        # flamepy and the Rust server expect binary; beyond 2 GiB only large_binary can hold it.
        offsets = pa.array([0, payload.size], type=pa.int64()).buffers()[1]
        data = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, payload])
    version = pa.array([0], type=pa.uint64())
    return pa.RecordBatch.from_arrays([version, data], names=["version", "data"])
