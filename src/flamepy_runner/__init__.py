"""flamepy_runner: run Python functions, classes and instances on a Flame cluster.

The public API is re-exported here; implementation modules are private (``_name``).
"""

from __future__ import annotations

from ._config import DEFAULT_EXCLUDES, FlameConfig
from ._exceptions import (
    AlreadyExistsError,
    ClusterError,
    ConfigError,
    DeadlineExceededError,
    FlameError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    RemoteError,
    UnavailableError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_EXCLUDES",
    "AlreadyExistsError",
    "ClusterError",
    "ConfigError",
    "DeadlineExceededError",
    "FlameConfig",
    "FlameError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "RemoteError",
    "UnavailableError",
    "UsageError",
]
