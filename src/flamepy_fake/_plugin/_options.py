"""The options of one ``flame_cluster``: what ``@pytest.mark.flame`` accepts, validated once."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .._control._policies import DEFAULT_POLICIES, check_policies
from .._values import INSTANCE_IMPORTS, parse_size
from ._settings import EXECUTORS, FLMRUN_MODES

__all__ = ["FlameOptions"]


class FlameOptions:
    """The options of one ``flame_cluster``, validated (what ``@pytest.mark.flame`` accepts).

    Args:
        executors: how instances run: ``auto``, ``thread`` or ``process`` (``FakeCluster(backend=)``).
        backend: the former name of ``executors`` (deprecated, still accepted).
        flmrun: ``builtin`` or ``flamepy``.
        max_executors: the fake's own cap on concurrent instances (``None``: none, as v0.6.0).
        policies: the scheduling policies (default ``("priority", "gang")``, as upstream's images).
        retry_limit: failed bindings of a session before event 1002.
        default_resreq: ``(cpu, memory, gpu)`` for sessions that name none.
        cache_max_memory: object cache memory limit: bytes, or a size as the CLI takes it
            (``"512M"``, ``"2G"``).
        allow_open_sessions: do not fail the test when sessions are still open at teardown.
        allow_unfinished_tasks: do not fail the test when tasks are pending or running at teardown.
        fork_server: fork instance processes from the cluster's zygote (``None``: where
            supported; ``False``: spawn each one), see ``FakeCluster``.
        instance_imports: what flmrun instances can import: ``declared`` (what a Flame
            executor has) or ``all`` (everything the test's environment has), see ``FakeCluster``.

    Raises:
        TypeError: an option has the wrong type, or a positional argument was given.
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        executors: str | None = None,
        backend: str | None = None,
        flmrun: str = "builtin",
        max_executors: int | None = None,
        policies: Sequence[str] = DEFAULT_POLICIES,
        retry_limit: int = 5,
        default_resreq: tuple[int, int, int] | None = None,
        cache_max_memory: int | str | None = None,
        allow_open_sessions: bool = False,
        allow_unfinished_tasks: bool = False,
        fork_server: bool | None = None,
        instance_imports: str = "declared",
    ) -> None:
        if executors is not None and backend is not None:
            raise TypeError("give executors or its former name backend, not both")
        name, executors = ("backend", backend) if backend is not None else ("executors", executors or "auto")
        if executors not in EXECUTORS:
            raise ValueError(f"{name} must be one of {', '.join(EXECUTORS)}; got {executors!r}")
        if flmrun not in FLMRUN_MODES:
            raise ValueError(f"flmrun must be one of {', '.join(FLMRUN_MODES)}; got {flmrun!r}")
        if instance_imports not in INSTANCE_IMPORTS:
            raise ValueError(
                f"instance_imports must be one of {', '.join(INSTANCE_IMPORTS)}; got {instance_imports!r}"
            )
        for name, value in (("max_executors", max_executors), ("retry_limit", retry_limit)):
            if name == "max_executors" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name, flag in (
            ("allow_open_sessions", allow_open_sessions),
            ("allow_unfinished_tasks", allow_unfinished_tasks),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        self.executors = executors
        if fork_server is not None and not isinstance(fork_server, bool):
            raise TypeError(f"fork_server must be True, False or None; got {fork_server!r}")
        self.fork_server = fork_server
        self.flmrun = flmrun
        self.instance_imports = instance_imports
        self.max_executors = max_executors
        self.policies = check_policies(policies)
        self.retry_limit = retry_limit
        self.default_resreq = default_resreq
        self.cache_max_memory = _size(cache_max_memory)
        self.allow_open_sessions = allow_open_sessions
        self.allow_unfinished_tasks = allow_unfinished_tasks

    def cluster_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``FakeCluster`` (the ``allow_*`` flags are the fixture's)."""
        return {
            "backend": self.executors,
            "flmrun": self.flmrun,
            "max_executors": self.max_executors,
            "policies": self.policies,
            "retry_limit": self.retry_limit,
            "default_resreq": self.default_resreq,
            "cache_max_memory": self.cache_max_memory,
            "fork_server": self.fork_server,
            "instance_imports": self.instance_imports,
        }


def _size(value: int | str | None) -> int | None:
    """``cache_max_memory`` in bytes: a positive int, or a size string such as ``512M``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_size(value)
        except argparse.ArgumentTypeError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f"cache_max_memory must be a positive number of bytes or a size such as 512M or 2G; got {value!r}"
    )


_OPTION_NAMES = (
    "executors",
    "flmrun",
    "max_executors",
    "policies",
    "retry_limit",
    "default_resreq",
    "cache_max_memory",
    "allow_open_sessions",
    "allow_unfinished_tasks",
    "fork_server",
    "instance_imports",
)
