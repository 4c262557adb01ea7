"""``pytest --flame-autostart``: one cluster for a whole pytest process, for suites without fixtures.

Started in ``pytest_configure`` (before collection) in each process that runs tests (each xdist
worker; never the controller), it puts the cluster's client environment into ``os.environ``:
``FLAME_ENDPOINT``, ``FLAME_CACHE_ENDPOINT`` and a ``HOME`` whose ``.flame/flame.yaml`` names only
this cluster (so a developer's ``~/.flame/flame.yaml`` cannot win), without ``FLAME_CA_FILE`` /
``FLAME_CACHE_STORAGE``. It resets flamepy's cached clients; :meth:`Autostart.stop` undoes it all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ._flamepy_reset import reset_flamepy_clients

if TYPE_CHECKING:
    from .._cluster import FakeCluster
    from ._settings import Settings

__all__ = ["Autostart"]


class Autostart:
    """The autostarted cluster of this process and the environment it replaced."""

    def __init__(self, settings: Settings, cluster_kwargs: dict[str, object]) -> None:
        self._settings = settings
        self._cluster_kwargs = cluster_kwargs
        self._stack = contextlib.ExitStack()
        self._saved: dict[str, str | None] = {}
        self.cluster: FakeCluster | None = None
        self.env: dict[str, str] = {}

    def start(self) -> None:
        """Start the cluster and export its environment.

        Raises:
            pytest.UsageError: a real or external cluster cannot be had (the reason is given).
        """
        try:
            env = self._start()
        except BaseException:
            self._stack.close()
            raise
        self.env = env
        for key in set(env) | {"FLAME_CA_FILE", "FLAME_CACHE_STORAGE"}:
            self._saved[key] = os.environ.get(key)
        for key in ("FLAME_CA_FILE", "FLAME_CACHE_STORAGE"):
            os.environ.pop(key, None)
        os.environ.update(env)
        reset_flamepy_clients()

    def _start(self) -> dict[str, str]:
        from .._home import isolated_env

        if self._settings.backend == "fake":
            from .._cluster import FakeCluster

            cluster = FakeCluster(**self._cluster_kwargs)  # type: ignore[arg-type]
            self._stack.callback(cluster.stop)
            cluster.start()
            self.cluster = cluster
            base = {k: v for k, v in os.environ.items() if k in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
            return isolated_env(base, cluster.home, cluster.env)
        from .._errors import Unavailable
        from .._home import make_home
        from ._pool import open_remote

        try:
            backend = open_remote(self._settings, self._stack)
        except Unavailable as exc:
            raise pytest.UsageError(f"--flame-autostart: {exc}") from None
        home = Path(tempfile.mkdtemp(prefix="flamepy-fake-home-"))
        self._stack.callback(shutil.rmtree, home, ignore_errors=True)
        make_home(home, backend.endpoint, backend.cache_endpoint)
        base = {k: v for k, v in os.environ.items() if k in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME")}
        return isolated_env(base, home, backend.env)

    def stop(self) -> None:
        """Restore the environment and stop the cluster (idempotent)."""
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}
        reset_flamepy_clients()
        self._stack.close()
