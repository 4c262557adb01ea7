"""The fake cluster's executor manager: scheduler-driven instances in threads or processes.

``ExecutorManager`` is the only entry point (contract D); see ``_manager`` for the executor
life cycle, ``_drive`` for one executor's binding, ``_factory`` for making its instance,
``_instance`` for the two instance kinds, ``_launch`` for command and environment
construction, ``_zygote``/``_zygote_pool`` for the fork servers every cluster of a process
shares, and ``_visible``/``_import_scope`` for what an instance can import (what a
Flame executor has, not the test's whole environment).
"""

from __future__ import annotations

import typing as _typing

from flamepy_runner._for_fake import lazy_names as _lazy_names

if _typing.TYPE_CHECKING:
    from .._options import FLMRUN_MODES
    from .._toolkit._introspect import AbandonedInstance, ExecutorInfo
    from ._manager import BACKENDS, ExecutorManager
    from ._zygote_pool import ForkServers, shared_fork_servers, stop_shared_fork_servers

# Loaded on first access: the zygote pool is needed (by the plugin, before any cluster) without
# the manager's imports (grpc, pyarrow).
_LAZY = {
    "BACKENDS": "._manager",
    "FLMRUN_MODES": ".._options",
    "AbandonedInstance": ".._toolkit._introspect",
    "ExecutorInfo": ".._toolkit._introspect",
    "ExecutorManager": "._manager",
    "ForkServers": "._zygote_pool",
    "shared_fork_servers": "._zygote_pool",
    "stop_shared_fork_servers": "._zygote_pool",
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY)


__all__ = [
    "BACKENDS",
    "FLMRUN_MODES",
    "AbandonedInstance",
    "ExecutorInfo",
    "ExecutorManager",
    "ForkServers",
    "shared_fork_servers",
    "stop_shared_fork_servers",
]
