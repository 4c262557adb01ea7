"""The options of one ``flame_cluster``: what ``@pytest.mark.flame`` accepts, validated once."""

from __future__ import annotations

from typing import Any

from .._options import ClusterOptions, executors_from

__all__ = ["FlameOptions"]


class FlameOptions:
    """The options of one ``flame_cluster``, validated (what ``@pytest.mark.flame`` accepts).

    Args:
        executors: how instances run: ``auto``, ``thread`` or ``process`` (``FakeCluster(executors=)``).
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
        TypeError: a positional argument, an unknown name, both names of executors, or a
            non-bool ``allow_*``.
        ValueError: an option is out of range (``ClusterOptions`` checks them, with its texts).
    """

    def __init__(
        self,
        *,
        executors: str | None = None,
        backend: str | None = None,
        allow_open_sessions: bool = False,
        allow_unfinished_tasks: bool = False,
        **options: Any,
    ) -> None:
        # The marker renamed backend= already (with its own warning): no second one here.
        given = executors_from(executors, backend, "FlameOptions", warn=False)
        for name, flag in (
            ("allow_open_sessions", allow_open_sessions),
            ("allow_unfinished_tasks", allow_unfinished_tasks),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        self.cluster = ClusterOptions.build(**options, executors=given)
        self.executors = self.cluster.executors
        self.flmrun = self.cluster.flmrun
        self.fork_server = self.cluster.fork_server
        self.instance_imports = self.cluster.instance_imports
        self.max_executors = self.cluster.max_executors
        self.policies = self.cluster.policies
        self.retry_limit = self.cluster.retry_limit
        self.default_resreq = self.cluster.default_resreq
        self.cache_max_memory = self.cluster.cache_max_memory
        self.allow_open_sessions = allow_open_sessions
        self.allow_unfinished_tasks = allow_unfinished_tasks

    def cluster_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``FakeCluster`` (the ``allow_*`` flags are the fixture's)."""
        return self.cluster.as_dict()


#: What ``@pytest.mark.flame`` accepts: every cluster option, then the fixture's own flags.
_OPTION_NAMES = (*ClusterOptions.names(), "allow_open_sessions", "allow_unfinished_tasks")
