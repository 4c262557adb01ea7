"""What ``flame_cluster`` hands out on a real or external backend: a cluster-like handle.

It has the interface tests use on every backend (``endpoint``, ``cache_endpoint``, ``config``,
``env``, ``home``, ``client_env()``, ``running``, ``backend``). Anything else a
:class:`~flamepy_fake.FakeCluster` has (``executors()``, ``instance_logs()``, ``state``, ...) is
fake-only: asking for it skips the test with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from flamepy_runner import FlameConfig

from .._home import isolated_env, make_home

__all__ = ["RemoteCluster"]


class RemoteCluster:
    """A real or external Flame cluster, seen through the same interface as ``FakeCluster``.

    Args:
        backend: ``"real"`` or ``"external"``.
        config: the cluster's endpoints.
        home_dir: a directory for :attr:`home` (its ``.flame/flame.yaml`` names only this cluster).
        origin: where the cluster comes from, for messages.
    """

    def __init__(self, backend: str, config: FlameConfig, home_dir: Path, origin: str) -> None:
        self.backend = backend
        self.origin = origin
        self._config = config
        self._home = make_home(home_dir, config.endpoint, config.cache_endpoint)

    @property
    def running(self) -> bool:
        """Always ``True``: the plugin does not stop a real or external cluster during the run."""
        return True

    @property
    def endpoint(self) -> str:
        """The session manager URL (``FLAME_ENDPOINT``)."""
        return self._config.endpoint

    @property
    def cache_endpoint(self) -> str:
        """The object cache URL (``FLAME_CACHE_ENDPOINT``)."""
        return self._config.cache_endpoint

    @property
    def config(self) -> FlameConfig:
        """A :class:`flamepy_runner.FlameConfig` pointing at this cluster."""
        return self._config

    @property
    def env(self) -> dict[str, str]:
        """``FLAME_ENDPOINT`` / ``FLAME_CACHE_ENDPOINT`` (and ``FLAME_CA_FILE`` for TLS)."""
        env = {"FLAME_ENDPOINT": self.endpoint, "FLAME_CACHE_ENDPOINT": self.cache_endpoint}
        if self._config.ca_file:
            env["FLAME_CA_FILE"] = self._config.ca_file
        return env

    @property
    def home(self) -> Path:
        """A HOME whose ``.flame/flame.yaml`` names only this cluster."""
        return self._home

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) with :attr:`env` set and ``HOME`` set to :attr:`home`."""
        return isolated_env(os.environ if base is None else base, self.home, self.env)

    def __getattr__(self, name: str) -> Any:
        from .._cluster import FakeCluster

        if not name.startswith("_") and hasattr(FakeCluster, name):
            pytest.skip(f"flame_cluster.{name} is fake-only (the backend is {self.backend}: {self.origin})")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"RemoteCluster({self.backend!r}, {self.endpoint!r}, {self.cache_endpoint!r})"
