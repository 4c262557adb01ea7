"""Upstream's message size limits, in one place (reference: session-manager.md §0 and §7).

Real Flame v0.6.0's session manager serves the Frontend with tonic's defaults: requests are
decoded up to 4 MiB (a larger one is refused before the handler runs), responses are encoded
without a limit. The object cache (Arrow Flight) is unlimited both ways.
"""

from __future__ import annotations

from typing import NoReturn

import grpc

__all__ = ["FRONTEND_MAX_REQUEST", "refuse_oversized"]

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
