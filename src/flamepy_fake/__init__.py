"""flamepy_fake: a wire-faithful Flame cluster that runs in-process.

``FakeCluster`` serves a fake session manager, object cache and executors on local ports;
the ``flamepy-fake`` command line and the pytest plugin (``flame_cluster`` fixture) wrap it.
``FakeObjectCache`` is the object cache alone; ``ExecutorInfo`` is what
``FakeCluster.executors()`` returns, ``EventRecord`` what ``FakeCluster.session_events()``
returns and ``AbandonedInstance`` what ``FakeCluster.abandoned_instances`` lists. Importing
this package is cheap: grpc and pyarrow load when a cluster starts (or when a lazily exported
name is first used).
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ._cluster import ClusterStartError, FakeCluster

if _typing.TYPE_CHECKING:
    from ._cache_server import FakeObjectCache
    from ._executors import AbandonedInstance, ExecutorInfo
    from ._records import EventRecord

__all__ = [
    "AbandonedInstance",
    "ClusterStartError",
    "EventRecord",
    "ExecutorInfo",
    "FakeCluster",
    "FakeObjectCache",
]

# Tracebacks and reprs show the public path, not the private module.
for _name in ("ClusterStartError", "FakeCluster"):
    globals()[_name].__module__ = __name__
del _name

# Names whose modules import grpc or pyarrow: loaded on first access.
_LAZY = {
    "AbandonedInstance": "._executors",
    "EventRecord": "._records",
    "ExecutorInfo": "._executors",
    "FakeObjectCache": "._cache_server",
}


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name], __name__), name)
        value.__module__ = __name__
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
