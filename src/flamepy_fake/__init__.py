"""flamepy_fake: a wire-faithful Flame cluster that runs in-process.

``FakeCluster`` serves a fake session manager, object cache and executors on local ports;
the ``flamepy-fake`` command line and the pytest plugin (``flame_cluster`` fixture) wrap it.
Importing this package is cheap: grpc and pyarrow load when a cluster starts.
"""

from __future__ import annotations

from ._cluster import ClusterStartError, FakeCluster

__all__ = ["ClusterStartError", "FakeCluster"]

# Tracebacks and reprs show the public path, not the private module.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
