"""Clusters that outlive one test: shared fake clusters and the run's real or external cluster.

A :class:`ClusterPool` belongs to one pytest scope (a module or the session). It starts a fake
cluster per distinct set of options on first use and stops them all when the scope ends; it also
opens the run's real (Docker) or external cluster once, remembering why when it cannot.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._backends import FlameBackend
from .._errors import Unavailable

if TYPE_CHECKING:
    from .._cluster import FakeCluster
    from ._settings import Settings

__all__ = ["ClusterPool", "open_remote"]


def open_remote(settings: Settings, stack: contextlib.ExitStack) -> FlameBackend:
    """Open the real or external cluster of ``settings`` on ``stack``.

    Raises:
        Unavailable: the cluster cannot be had here; the message is the reason.
    """
    from flamepy_runner import FlameConfig

    from .._backends import docker_backend, external_backend

    if settings.backend == "real":
        return stack.enter_context(docker_backend())
    assert settings.endpoint is not None and settings.cache_endpoint is not None
    config = FlameConfig(
        endpoint=settings.endpoint, cache_endpoint=settings.cache_endpoint, ca_file=settings.ca_file
    )
    try:
        return stack.enter_context(external_backend(config))
    except TimeoutError as exc:
        raise Unavailable(f"the external cluster is not ready: {exc}") from None


class ClusterPool:
    """The clusters one scope shares (see the module docstring).

    Args:
        work_dir: where the fake clusters keep their files.
    """

    def __init__(self, work_dir: Path) -> None:
        self._work_dir = work_dir
        self._fakes: dict[str, FakeCluster] = {}
        self._stack = contextlib.ExitStack()
        self._remote: FlameBackend | None = None
        self._unavailable: str | None = None

    def fake(self, cluster_kwargs: dict[str, Any]) -> FakeCluster:
        """The started fake cluster with these options, started now if it is the first use."""
        from .._cluster import FakeCluster

        key = repr(sorted(cluster_kwargs.items()))
        cluster = self._fakes.get(key)
        if cluster is None or not cluster.running:  # a test may have stopped it
            work_dir = self._work_dir / f"cluster-{len(self._fakes)}-{id(cluster_kwargs)}"
            work_dir.mkdir(parents=True)
            cluster = FakeCluster(work_dir=work_dir, **cluster_kwargs)
            cluster.start()
            self._fakes[key] = cluster
        return cluster

    def remote(self, settings: Settings) -> FlameBackend:
        """The run's real or external cluster.

        Raises:
            Unavailable: it cannot be had (remembered: later tests skip at once with the reason).
        """
        if self._unavailable is not None:
            raise Unavailable(self._unavailable)
        if self._remote is None:
            try:
                self._remote = open_remote(settings, self._stack)
            except Unavailable as exc:
                self._unavailable = str(exc)
                raise
        return self._remote

    def close(self) -> None:
        """Stop every fake cluster and close the remote one."""
        fakes, self._fakes = list(self._fakes.values()), {}
        try:
            for cluster in fakes:
                cluster.stop()
        finally:
            self._stack.close()
