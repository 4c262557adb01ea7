"""The fake cluster's executor manager: scheduler-driven instances in threads or processes.

``ExecutorManager`` is the only entry point (contract D); see ``_manager`` for the executor
life cycle, ``_instance`` for the two instance kinds, ``_launch`` for command and
environment construction, and ``_zygote``/``_zygote_pool`` for the fork servers every cluster
of a process shares.
"""

from __future__ import annotations

from ._manager import BACKENDS, FLMRUN_MODES, AbandonedInstance, ExecutorInfo, ExecutorManager
from ._zygote_pool import ForkServers, shared_fork_servers, stop_shared_fork_servers

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
