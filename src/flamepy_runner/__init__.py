"""flamepy_runner: run Python functions, classes and instances on a Flame cluster.

The public API is re-exported here; implementation modules are private (``_name``).
"""

from __future__ import annotations

import typing as _typing

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
    PackageError,
    RemoteError,
    UnavailableError,
    UsageError,
    WaitTimeoutError,
)
from ._lazy import lazy_names as _lazy_names

if _typing.TYPE_CHECKING:
    from ._cache import CacheClient
    from ._cache_wire import ObjectRef
    from ._future import ObjectFuture
    from ._packaging import PackageCache
    from ._runner import Runner
    from ._service import RunnerService
    from ._types import ResourceRequirement, SessionContext
    from ._worker import current_config

__version__ = "0.1.0"

# Names whose modules pull in pyarrow (~0.4 s): loaded on first access, so that importing
# flamepy_runner (and flamepy_fake, which builds on it) stays cheap.
_LAZY = {
    "CacheClient": "._cache",
    "ObjectRef": "._cache_wire",
    "current_config": "._worker",
    "PackageCache": "._packaging",
    "Runner": "._runner",
    "RunnerService": "._service",
    "ObjectFuture": "._future",
    "ResourceRequirement": "._types",
    "SessionContext": "._types",
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY)


__all__ = [
    "DEFAULT_EXCLUDES",
    "AlreadyExistsError",
    "CacheClient",
    "ClusterError",
    "ConfigError",
    "DeadlineExceededError",
    "FlameConfig",
    "FlameError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "ObjectFuture",
    "ObjectRef",
    "PackageCache",
    "PackageError",
    "RemoteError",
    "ResourceRequirement",
    "Runner",
    "RunnerService",
    "SessionContext",
    "UnavailableError",
    "UsageError",
    "WaitTimeoutError",
    "current_config",
]
