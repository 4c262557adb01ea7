"""What flamepy_fake builds on inside flamepy_runner: the one seam between the two packages.

The fake cluster is an independent implementation of Flame's servers, but it shares the wire
bindings with the client and runs the client's worker as its builtin ``flmrun`` program. It
reaches into flamepy_runner only through the names listed here (and the public API); a test
(``tests/unit/test_for_fake.py``) holds it to that. Each name is loaded on first access, so a
fake module that needs the bindings does not also import pyarrow or the worker.

- ``pb``, ``rpc``: the ``flame.v1`` messages and the stub / handler builders (private pool);
- ``SIZE_HINT_PREFIX``, ``data_chunks``: the object cache's batch metadata and its reader;
- ``InstanceService``, ``InstanceServicer``: the ``flame.v1.Instance`` hooks and their servicer,
  which the fake's ``flmexec`` and ``flmping`` programs implement too;
- ``RunnerWorker``: the builtin ``flmrun`` program's service, for thread instances;
- ``serve_worker``: its ``main``, for process instances and the fake's programs.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from ._cache_wire import SIZE_HINT_PREFIX, data_chunks
    from ._proto import pb, rpc
    from ._worker import InstanceService, InstanceServicer, RunnerWorker
    from ._worker import serve as serve_worker

__all__ = [
    "SIZE_HINT_PREFIX",
    "InstanceService",
    "InstanceServicer",
    "RunnerWorker",
    "data_chunks",
    "pb",
    "rpc",
    "serve_worker",
]

# name -> (module, attribute)
_WHERE = {
    "pb": ("._proto", "pb"),
    "rpc": ("._proto", "rpc"),
    "SIZE_HINT_PREFIX": ("._cache_wire", "SIZE_HINT_PREFIX"),
    "data_chunks": ("._cache_wire", "data_chunks"),
    "InstanceService": ("._worker", "InstanceService"),
    "InstanceServicer": ("._worker", "InstanceServicer"),
    "RunnerWorker": ("._worker", "RunnerWorker"),
    "serve_worker": ("._worker", "serve"),
}


def __getattr__(name: str) -> _typing.Any:
    if name in _WHERE:
        module, attribute = _WHERE[name]
        value = getattr(_importlib.import_module(module, "flamepy_runner"), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
