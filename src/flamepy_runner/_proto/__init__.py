"""flame.v1 wire bindings of flamepy_runner (private).

``pb`` holds every message, enum and service of ``protos/*.proto``; ``rpc`` builds gRPC
client stubs and server handlers from the service descriptors. Both load next to any
``flamepy`` version in either import order, because our descriptors live in a private pool.
"""

from __future__ import annotations

from . import _flame_v1 as pb
from . import _rpc as rpc

__all__ = ["pb", "rpc"]
