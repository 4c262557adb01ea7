"""The fake cluster's executor manager: scheduler-driven instances in threads or processes.

``ExecutorManager`` is the only entry point (contract D); see ``_manager`` for the executor
life cycle, ``_instance`` for the two instance kinds and ``_launch`` for command and
environment construction.
"""

from __future__ import annotations

from ._manager import BACKENDS, FLMRUN_MODES, AbandonedInstance, ExecutorInfo, ExecutorManager

__all__ = ["BACKENDS", "FLMRUN_MODES", "AbandonedInstance", "ExecutorInfo", "ExecutorManager"]
