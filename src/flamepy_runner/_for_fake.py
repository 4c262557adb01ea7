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
- ``serve_worker``: its ``main``, for process instances and the fake's programs;
- ``lazy_names``: the packages' one mechanism for names loaded on first access.
"""

from __future__ import annotations

import typing as _typing

from ._lazy import lazy_names

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
    "lazy_names",
    "pb",
    "rpc",
    "serve_worker",
]

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "pb": "._proto",
        "rpc": "._proto",
        "SIZE_HINT_PREFIX": "._cache_wire",
        "data_chunks": "._cache_wire",
        "InstanceService": "._worker",
        "InstanceServicer": "._worker",
        "RunnerWorker": "._worker",
        "serve_worker": "._worker:serve",
    },
)
