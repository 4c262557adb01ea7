"""Upstream's message size limits, in one place (reference: session-manager.md §0 and §7).

Real Flame v0.6.0's session manager serves the Frontend with tonic's defaults: requests are
decoded up to 4 MiB (a larger one is refused before the handler runs), responses are encoded
without a limit. The object cache (Arrow Flight) is unlimited both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import grpc

__all__ = ["FRONTEND_MAX_REQUEST", "limit_requests", "refuse_oversized"]

#: tonic's default ``max_decoding_message_size``: 4 MiB, counted on the encoded message.
FRONTEND_MAX_REQUEST = 4 * 1024 * 1024


def refuse_oversized(size: int, context: grpc.ServicerContext) -> NoReturn:
    """Abort the call as tonic does for a request of ``size`` bytes over the limit."""
    context.abort(
        grpc.StatusCode.OUT_OF_RANGE,
        f"Error, decoded message length too large: found {size} bytes, "
        f"the limit is: {FRONTEND_MAX_REQUEST} bytes",
    )
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


class _Oversized:
    """What the deserializer hands over instead of a request that is over the size limit."""

    def __init__(self, size: int) -> None:
        self.size = size


def limit_requests(
    request_cls: Any, impl: Callable[..., Any]
) -> tuple[Callable[[bytes], Any], Callable[..., Any]]:
    """``rpc.generic_handler``'s ``wrap_unary_request`` for the Frontend: a deserializer that
    measures the encoded request first (a request over :data:`FRONTEND_MAX_REQUEST` is not
    parsed), and a behaviour that refuses what it flagged as tonic does."""

    def deserialize(raw: bytes) -> Any:
        if len(raw) > FRONTEND_MAX_REQUEST:
            return _Oversized(len(raw))  # not parsed: the handler refuses it first
        return request_cls.FromString(raw)

    def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, _Oversized):
            refuse_oversized(request.size, context)
        return impl(request, context)

    return deserialize, behaviour
