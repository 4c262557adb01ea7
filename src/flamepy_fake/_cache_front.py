"""A gRPC front for the fake object cache: clients see the statuses v0.6.0 sends, nothing more.

pyarrow's Flight server can only refuse a call with INVALID_ARGUMENT or NOT_FOUND by letting a
Python exception escape, and then appends ``. Detail: Python exception: Traceback ...`` (the
server's own stack) to the status message, and repr-quotes a ``KeyError``'s text. Upstream's
Rust cache sends the bare message. So the fake's Flight service listens on a private loopback
port, and this front serves the cache's public address: it forwards every Flight call, message
by message and as raw bytes (nothing is decoded or re-encoded), and when the service refuses a
call it answers with the same status code and the message alone, taken from the Arrow status
trailer, without Arrow's trailers. A pyarrow client then sees exactly what it sees from a real
cache, e.g. ``Flight returned not found error, with message: object <a/s/x> not found``.

One handler thread per call in flight (streams hold theirs while they run); a call is cancelled
on the service as soon as its client goes away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

__all__ = ["FlightFront", "clean_message"]

_SERVICE_PREFIX = "/arrow.flight.protocol.FlightService/"
_MESSAGE_TRAILER = "x-arrow-status-message-bin"
_ARROW_TRAILER_PREFIX = "x-arrow-"
_DETAIL = ". Detail: "
_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_NO_DEADLINE = 10 * 365 * 24 * 3600.0  # seconds; beyond this a call has no deadline
_THREADS = 256  # created on demand; streams hold one each for as long as they run


def clean_message(details: str | None, trailers: Any) -> str:
    """The refusal's own text: the Arrow message trailer, or the details without Arrow's detail."""
    for key, value in trailers or ():
        if key == _MESSAGE_TRAILER:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return (details or "").split(_DETAIL, 1)[0]


def _forwarded_metadata(context: grpc.ServicerContext) -> list[tuple[str, str | bytes]]:
    # grpc adds its own pseudo headers and user-agent; forward only the caller's.
    return [
        (key, value)
        for key, value in context.invocation_metadata()
        if not key.startswith((":", "grpc-")) and key not in ("user-agent", "te", "content-type")
    ]


class _ClientGone(Exception):
    """The client vanished mid-stream: raised into the forwarded call to cancel it, not end it."""


def _relay(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    """The client's messages; a stream cut by the client's disappearance cancels the call.

    grpc ends the request iterator the same way for a half-close and for a vanished client; the
    difference shows in ``is_active()``. Raising makes grpc cancel the forwarded call, so the
    service never commits a partial upload as if it were complete.
    """
    yield from requests
    if not context.is_active():
        raise _ClientGone("the client went away before the end of its stream")


class _Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Handles every FlightService method as a byte stream to the backing service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not method.startswith(_SERVICE_PREFIX):
            return None
        # Streaming both ways fits every Flight method: the server never sees the arity.
        return grpc.stream_stream_rpc_method_handler(
            lambda requests, context: self._call(method, requests, context)
        )

    def _call(self, method: str, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        stub = self._channel.stream_stream(method)
        requests = _relay(requests, context)
        remaining = context.time_remaining()  # an "infinite" deadline comes out as ~2**63 seconds
        timeout = remaining if remaining < _NO_DEADLINE else None
        call = stub(requests, timeout=timeout, metadata=_forwarded_metadata(context))
        context.add_callback(call.cancel)  # the client went away: stop the work behind it
        try:
            yield from call
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            if code == grpc.StatusCode.CANCELLED and not context.is_active():
                return
            trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
            details = error.details() if hasattr(error, "details") else str(error)
            context.abort(code, clean_message(details, trailers))


class FlightFront:
    """The public gRPC server of the fake object cache, in front of its Flight service.

    Args:
        host: the address to listen on.
        port: the port; 0 picks a free one.
        backend: ``host:port`` of the Flight service (plain gRPC on loopback).
        tls_certificates: ``(cert_chain_pem, private_key_pem)`` to serve TLS.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(
        self, host: str, port: int, backend: str, *, tls_certificates: tuple[bytes, bytes] | None = None
    ) -> None:
        self._channel = grpc.insecure_channel(backend, options=_OPTIONS)
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="flamepy-fake-cache")
        self._server = grpc.server(self._pool, options=[*_OPTIONS, ("grpc.so_reuseport", 0)])
        self._server.add_generic_rpc_handlers((_Forwarder(self._channel),))
        address = f"{host}:{port}"
        try:
            if tls_certificates is None:
                bound = self._server.add_insecure_port(address)
            else:
                cert, key = tls_certificates
                credentials = grpc.ssl_server_credentials([(key, cert)])
                bound = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:  # recent grpc raises instead of returning 0
            self._close()
            raise OSError(f"cannot bind the fake object cache to {address}: {exc}") from exc
        if not bound:
            self._close()
            raise OSError(f"cannot bind the fake object cache to {address}")
        self.port: int = bound
        self._stopped = threading.Event()

    def start(self) -> None:
        """Start serving."""
        self._server.start()

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (calls still running after ``grace`` seconds are cancelled); idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._server.stop(grace).wait()
        self._close()

    def _close(self) -> None:
        self._channel.close()
        self._pool.shutdown(wait=True)
