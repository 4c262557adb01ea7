"""flamepy_fake: a wire-faithful Flame cluster that runs in-process.

``FakeCluster`` serves a fake session manager, object cache and executors on local ports;
the ``flamepy-fake`` command line and the pytest plugin (``flame_cluster`` fixture) wrap it.
``FakeObjectCache`` is the object cache alone. Introspection records: ``ExecutorInfo``
(``FakeCluster.executors()``), ``AppInfo``, ``SessionInfo``, ``TaskInfo``, ``ObjectInfo``
(``applications()``, ``sessions()``, ``tasks()``, ``objects()``) with the enums ``AppState``,
``SessionState``, ``TaskState``, ``ExecutorState``; ``EventRecord`` (``session_events()``);
``CallRecord`` in a ``CallLog`` (``FakeCluster.calls``); ``AbandonedInstance``
(``FakeCluster.abandoned_instances``). Fault injection: ``Faults`` (``FakeCluster.faults``)
hands out ``Fault`` objects, whose predicates see a ``CallTarget``; ``FaultError`` is a fault
the fake cannot apply. Importing
this package is cheap: grpc and pyarrow load when a cluster starts (or when a lazily exported
name is first used).
"""

from __future__ import annotations

import typing as _typing

from flamepy_runner._for_fake import lazy_names as _lazy_names

if _typing.TYPE_CHECKING:
    from ._cache._server import FakeObjectCache
    from ._cluster import FakeCluster
    from ._control._records import EventRecord
    from ._errors import ClusterStartError, FaultError
    from ._toolkit._calls import CallLog, CallRecord
    from ._toolkit._faults import CallTarget, Fault, Faults
    from ._toolkit._introspect import (
        AbandonedInstance,
        AppInfo,
        AppState,
        ExecutorInfo,
        ExecutorState,
        ObjectInfo,
        SessionInfo,
        SessionState,
        TaskInfo,
        TaskState,
    )

__all__ = [
    "AbandonedInstance",
    "AppInfo",
    "AppState",
    "CallLog",
    "CallRecord",
    "CallTarget",
    "ClusterStartError",
    "EventRecord",
    "ExecutorInfo",
    "ExecutorState",
    "FakeCluster",
    "FakeObjectCache",
    "Fault",
    "FaultError",
    "Faults",
    "ObjectInfo",
    "SessionInfo",
    "SessionState",
    "TaskInfo",
    "TaskState",
]

# Loaded on first access, so that importing the package (as pytest does for the plugin in
# every run) costs next to nothing; tracebacks and reprs show the public path.
_LAZY = {
    "AbandonedInstance": "._toolkit._introspect",
    "ClusterStartError": "._errors",
    "FakeCluster": "._cluster",
    "AppInfo": "._toolkit._introspect",
    "AppState": "._toolkit._introspect",
    "CallLog": "._toolkit._calls",
    "CallRecord": "._toolkit._calls",
    "CallTarget": "._toolkit._faults",
    "EventRecord": "._control._records",
    "ExecutorInfo": "._toolkit._introspect",
    "ExecutorState": "._toolkit._introspect",
    "FakeObjectCache": "._cache._server",
    "Fault": "._toolkit._faults",
    "FaultError": "._errors",
    "Faults": "._toolkit._faults",
    "ObjectInfo": "._toolkit._introspect",
    "SessionInfo": "._toolkit._introspect",
    "SessionState": "._toolkit._introspect",
    "TaskInfo": "._toolkit._introspect",
    "TaskState": "._toolkit._introspect",
    "__version__": "._version",  # one version for both packages: flamepy_runner.__version__
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, public=True)
