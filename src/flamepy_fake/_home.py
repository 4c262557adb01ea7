"""Offline means offline: a HOME whose only Flame configuration is the fake cluster.

flamepy reads ``~/.flame/flame.yaml`` (``Path.home()``, so ``$HOME``) and then ``FLAME_*``
variables; a developer's file or environment (``package.storage``, TLS files, another cluster)
must not reach code under test on the fake. :func:`make_home` writes a HOME with a
``flame.yaml`` naming only the cluster; :func:`isolated_env` is an environment that uses it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

__all__ = ["FOREIGN_VARIABLES", "isolated_env", "make_home"]

#: Variables flamepy and flamepy_runner read besides the endpoints; removed, never forwarded.
FOREIGN_VARIABLES: tuple[str, ...] = ("FLAME_CA_FILE", "FLAME_CACHE_STORAGE")
_CONTEXT = "flamepy-fake"


def make_home(directory: Path, endpoint: str, cache_endpoint: str) -> Path:
    """Create ``directory/.flame/flame.yaml`` with one context, this cluster; return ``directory``."""
    config = {
        "current-context": _CONTEXT,
        "contexts": [
            {"name": _CONTEXT, "cluster": {"endpoint": endpoint}, "cache": {"endpoint": cache_endpoint}}
        ],
    }
    (directory / ".flame").mkdir(parents=True, exist_ok=True)
    (directory / ".flame" / "flame.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return directory


def isolated_env(base: Mapping[str, str], home: Path, cluster_env: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``HOME`` set to ``home``, foreign ``FLAME_*`` removed and ``cluster_env`` set.

    Tools that keep caches or settings under HOME (pip, uv) keep finding them: ``XDG_CACHE_HOME``
    and ``XDG_CONFIG_HOME`` point at the real ones unless already set.
    """
    env = {k: v for k, v in base.items() if k not in FOREIGN_VARIABLES}
    real_home = base.get("HOME")
    if real_home:
        env.setdefault("XDG_CACHE_HOME", os.path.join(real_home, ".cache"))
        env.setdefault("XDG_CONFIG_HOME", os.path.join(real_home, ".config"))
    env["HOME"] = str(home)
    env.update(cluster_env)
    return env
