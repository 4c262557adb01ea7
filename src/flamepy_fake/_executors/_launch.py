"""How an application becomes an instance: command choice, expansion and environment (reference B4)."""

from __future__ import annotations

import itertools
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from .._control._state import AppRecord
from .._install import Installation
from ._zygote_pool import FLMEXEC_MODULE, RUNPY_MODULE, WORKER_MODULE

__all__ = ["build_env", "expand", "instance_argv", "is_flmexec", "is_flmping", "is_flmrun"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(text: str, *maps: Mapping[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` from the first map that has the name; unknown names stay literal."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        for m in maps:
            if name in m:
                return m[name]
        return match.group(0)

    return _VAR.sub(sub, text)


def is_flmrun(app: AppRecord) -> bool:
    """Whether ``app`` runs the Runner executor (``-m flamepy.runner.runpy``: flmrun and its clones)."""
    args = list(app.arguments)
    return any(a == "-m" and b == RUNPY_MODULE for a, b in itertools.pairwise(args)) or (
        app.command is not None and app.command.endswith(RUNPY_MODULE)
    )


def is_flmexec(app: AppRecord) -> bool:
    """Whether ``app`` is the script runner (upstream's ``flmexec-service`` program)."""
    return bool(app.command) and os.path.basename(app.command or "") == "flmexec-service"


def is_flmping(app: AppRecord) -> bool:
    """Whether ``app`` is the ping service (upstream's ``flmping-service`` program)."""
    return bool(app.command) and os.path.basename(app.command or "") == "flmping-service"


def instance_argv(
    app: AppRecord, flmrun: str, env: Mapping[str, str], python: str = sys.executable
) -> list[str]:
    """The program an instance of ``app`` runs.

    ``flmrun`` apps run our worker (``builtin``) or flamepy's ``runpy`` (``flamepy``) with the
    cluster's Python, so no ``uv`` or ``FLAME_HOME`` is needed; ``flmexec`` and ``flmping`` run
    the fake's script runner and echo service; every other app runs its own command and
    arguments, expanded against ``env``.
    """
    if is_flmrun(app):
        return [python, "-m", WORKER_MODULE if flmrun == "builtin" else RUNPY_MODULE]
    if is_flmexec(app):
        return [python, "-m", FLMEXEC_MODULE]
    if is_flmping(app):
        return [python, "-m", FLMEXEC_MODULE, "--ping"]
    command = expand(app.command or "", env)
    return [command, *(expand(a, env) for a in app.arguments)]


def _prepend(head: list[str], existing: str | None) -> str:
    parts = [p for p in head if p]
    if existing:
        parts.append(existing)
    return os.pathsep.join(parts)


def build_env(
    app: AppRecord,
    *,
    base: Mapping[str, str],
    socket_path: Path,
    frontend_endpoint: str,
    cache_endpoint: str,
    tmp_dir: Path,
    installation: Installation,
    extra_pythonpath: list[str],
) -> dict[str, str]:
    """The child environment, built in the reference's order and precedence.

    Args:
        app: the application (its ``environments`` are the base layer, expanded against ``base``).
        base: the manager's own environment (inherited by the child).
        socket_path: ``FLAME_INSTANCE_ENDPOINT``.
        frontend_endpoint: ``FLAME_ENDPOINT``.
        cache_endpoint: ``FLAME_CACHE_ENDPOINT``.
        tmp_dir: ``TMPDIR``/``TEMP``/``TMP`` unless the app sets them.
        installation: what the installer adds (prepended paths, variables set if absent).
        extra_pythonpath: directories appended after the installer's on ``PYTHONPATH`` (where
            the fake's own worker and flamepy are importable from).
    """
    own: dict[str, str] = {k: expand(v, base) for k, v in app.environments.items()}
    log = base.get("RUST_LOG") or "info"
    own["RUST_LOG"] = log
    own["FLAME_LOG"] = base.get("FLAME_LOG") or log
    own["FLAME_INSTANCE_ENDPOINT"] = str(socket_path)
    own["FLAME_ENDPOINT"] = frontend_endpoint
    own["FLAME_CACHE_ENDPOINT"] = cache_endpoint
    if "HOME" in base:
        own.setdefault("HOME", base["HOME"])
    env = dict(base)
    env.pop("FLAME_INSTANCE_ENDPOINT", None)
    env.update(own)
    env["PYTHONPATH"] = _prepend(
        [*installation.pythonpath, *extra_pythonpath], own.get("PYTHONPATH", base.get("PYTHONPATH"))
    )
    # The cluster's interpreter first on PATH: ``python3`` in an app command means the Python
    # that runs the fake (with flamepy and the project installed), like FLAME_HOME's bin.
    env["PATH"] = _prepend(
        [*installation.path, os.path.dirname(sys.executable)], own.get("PATH", base.get("PATH"))
    )
    for key, value in installation.env.items():
        if key not in own:
            env[key] = value
    for key in ("TMPDIR", "TEMP", "TMP"):
        if key not in own:
            env[key] = str(tmp_dir)
    return env
