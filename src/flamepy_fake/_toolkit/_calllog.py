"""Call logging: one line per RPC as it is served (``flamepy-fake -v``).

``served <service>/<method>: <status>`` is logged at INFO on the ``flamepy_fake.calls`` logger
when a call ends, for the session manager (a gRPC server interceptor) and for the object cache
(an Arrow Flight server middleware). Clusters install them only when asked (``log_calls``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pyarrow.flight as flight

__all__ = ["CALL_LOGGER", "FlightCallLog", "GrpcCallLog"]

CALL_LOGGER = logging.getLogger("flamepy_fake.calls")
_FLIGHT_SERVICE = "arrow.flight.protocol.FlightService"
# Flight method names as on the wire (FlightMethod enum name -> RPC name).
_FLIGHT_METHODS = {
    "HANDSHAKE": "Handshake",
    "LIST_FLIGHTS": "ListFlights",
    "GET_FLIGHT_INFO": "GetFlightInfo",
    "GET_SCHEMA": "GetSchema",
    "DO_GET": "DoGet",
    "DO_PUT": "DoPut",
    "DO_ACTION": "DoAction",
    "LIST_ACTIONS": "ListActions",
    "DO_EXCHANGE": "DoExchange",
    "POLL_FLIGHT_INFO": "PollFlightInfo",
}
# What a Python exception in a Flight handler becomes for the client (pyarrow's mapping).
_FLIGHT_STATUS = (
    (flight.FlightCancelledError, "CANCELLED"),
    (flight.FlightTimedOutError, "DEADLINE_EXCEEDED"),
    (flight.FlightUnavailableError, "UNAVAILABLE"),
    (flight.FlightUnauthenticatedError, "UNAUTHENTICATED"),
    (flight.FlightUnauthorizedError, "PERMISSION_DENIED"),
    (flight.FlightInternalError, "INTERNAL"),
    (KeyError, "NOT_FOUND"),
    (ValueError, "INVALID_ARGUMENT"),
    (NotImplementedError, "UNIMPLEMENTED"),
)


def _served(method: str, status: str) -> None:
    CALL_LOGGER.info("served %s: %s", method, status)


def _grpc_status(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(code.name)


class GrpcCallLog(grpc.ServerInterceptor):  # type: ignore[misc]
    """Logs every unary-request call of a gRPC server when it ends, with its status code."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method.lstrip("/")
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_stream_rpc_method_handler(
            _streaming(method, handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unary(method: str, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    def logged(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = behaviour(request, context)
        except BaseException:
            _served(method, _grpc_status(context, failed=True))
            raise
        _served(method, _grpc_status(context, failed=False))
        return response

    return logged


def _streaming(method: str, behaviour: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    def logged(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behaviour(request, context)
        except BaseException:
            _served(method, _grpc_status(context, failed=True))
            raise
        _served(method, _grpc_status(context, failed=False))

    return logged


class _FlightCall(flight.ServerMiddleware):  # type: ignore[misc]
    def __init__(self, method: str) -> None:
        self.method = method

    def call_completed(self, exception: BaseException | None) -> None:
        status = "OK"
        if exception is not None:
            status = next((code for kind, code in _FLIGHT_STATUS if isinstance(exception, kind)), "UNKNOWN")
        _served(self.method, status)


class FlightCallLog(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Logs every Flight call when it ends, with the status the client gets."""

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> _FlightCall:
        name = _FLIGHT_METHODS.get(info.method.name, info.method.name)
        return _FlightCall(f"{_FLIGHT_SERVICE}/{name}")
