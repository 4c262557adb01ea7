"""Fork servers shared by every cluster of a process, one per start-up key.

A zygote holds only read-only start-up state (the imported modules of the instance programs),
so every cluster of a process can fork from the same one: the first cluster that needs it
starts it in the background, the next ones find it warm. A pytest run (or each xdist worker)
therefore pays the zygote's imports once, not once per test.

What makes two zygotes different is the key: the interpreter, the programs served, the modules
preloaded, and the environment read at interpreter start-up (``PYTHON*`` variables, the
``PYTHONPATH`` its preloads come from). Everything else an instance needs (its environment,
working directory, ``sys.path``, stdio) is set in the child after the fork, so nothing one
cluster's instance does reaches another's: each is a fresh copy of the zygote.

Life cycle: :meth:`ForkServers.stop` stops every zygote (each kills and reaps its children);
the process-wide pool is stopped by the pytest plugin when the (outermost) run ends and at
interpreter exit, a zygote follows its process on SIGKILL (parent-death signal), and a child created by
``os.fork`` forgets its parent's zygotes instead of sharing their sockets. A zygote that died
is replaced by the next :meth:`ForkServers.get`.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._home import FOREIGN_VARIABLES
from ._import_scope import ENV_VAR
from ._zygote import ForkServer, fork_supported

__all__ = [
    "FLMEXEC_MODULE",
    "RUNPY_MODULE",
    "WORKER_MODULE",
    "ForkServers",
    "own_paths",
    "prestart_fork_server",
    "shared_fork_servers",
    "start_up_key",
    "stop_shared_fork_servers",
    "zygote_request",
]

#: The instance programs a zygote serves (``python -m <module>``).
RUNPY_MODULE = "flamepy.runner.runpy"
WORKER_MODULE = "flamepy_runner._worker"
FLMEXEC_MODULE = "flamepy_fake._flmexec"

#: Imported by the zygote besides the instance programs: what their tasks commonly need.
PRELOAD = (
    "grpc._server",  # imported by grpc.server(), which every flmrun instance calls
    "cloudpickle",
    "yaml",  # FlameConfig.load() reads the instance's flame.yaml (imported lazily by the client)
    "pyarrow",
    "pyarrow.flight",
    "flamepy_runner._cache",
    "flamepy_fake._flmping",
)

_Key = tuple[str, tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]


def start_up_key(
    python: str, modules: tuple[str, ...], preload: tuple[str, ...], env: Mapping[str, str]
) -> _Key:
    """What distinguishes two zygotes: interpreter, programs, preloads, start-up environment
    (the ``PYTHON*`` variables and the import scope its modules are imported within)."""
    settings = tuple(sorted((k, v) for k, v in env.items() if k.startswith("PYTHON") or k == ENV_VAR))
    return (python, modules, preload, settings)


class ForkServers:
    """A pool of fork servers, one per start-up key, started on first use.

    Args:
        ready_timeout: seconds a spawn waits for a zygote still importing.
    """

    def __init__(self, *, ready_timeout: float = 60.0) -> None:
        self.ready_timeout = ready_timeout
        self._lock = threading.Lock()
        self._servers: dict[_Key, ForkServer] = {}
        self._log_dir: Path | None = None
        self._stopped = False
        self.started = 0  # zygotes started so far (observable in tests and benchmarks)

    def get(
        self,
        *,
        python: str,
        modules: tuple[str, ...],
        preload: tuple[str, ...],
        env: Mapping[str, str],
    ) -> ForkServer:
        """The live zygote for this key, started now (in the background) if there is none.

        Raises:
            RuntimeError: the pool was stopped.
        """
        key = start_up_key(python, modules, preload, env)
        with self._lock:
            if self._stopped:
                raise RuntimeError("the fork servers were stopped")
            server = self._servers.get(key)
            if server is not None and server.alive():
                return server
            if self._log_dir is None:
                self._log_dir = Path(tempfile.mkdtemp(prefix="flamepy-fake-zygotes-"))
            self.started += 1
            server = ForkServer(
                python=python,
                modules=modules,
                preload=preload,
                env=env,
                log_path=self._log_dir / f"zygote-{self.started}.log",
                ready_timeout=self.ready_timeout,
            )
            self._servers[key] = server
            # Stopping outside the lock: a zygote that died is already down, nothing waits.
        server.start()
        return server

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every zygote of the pool can fork (False: one is down or too slow)."""
        deadline = time.monotonic() + timeout
        return all(s.wait_ready(max(deadline - time.monotonic(), 0.0)) for s in self.servers())

    def servers(self) -> list[ForkServer]:
        """The zygotes started and not replaced (alive or not)."""
        with self._lock:
            return list(self._servers.values())

    def stop(self) -> None:
        """Stop every zygote (their children die with them) and remove their logs; idempotent."""
        with self._lock:
            self._stopped = True
            servers, self._servers = list(self._servers.values()), {}
            log_dir, self._log_dir = self._log_dir, None
        for server in servers:
            server.stop()
        if log_dir is not None:
            shutil.rmtree(log_dir, ignore_errors=True)

    def _forget(self) -> None:
        """In a child made by ``os.fork``: the parent's zygotes are not ours to use or stop."""
        self._lock = threading.Lock()
        self._servers = {}
        self._log_dir = None


def own_paths() -> list[str]:
    """Where flamepy_runner/flamepy_fake are imported from, so instances can import them too."""
    spec = importlib.util.find_spec("flamepy_runner")
    assert spec is not None and spec.origin is not None
    return [str(Path(spec.origin).resolve().parent.parent)]


def _importable(module: str) -> bool:
    """Whether ``module`` can be found (flamepy is optional)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def zygote_request(python: str, flmrun: str, instance_imports: str = "declared") -> dict[str, Any]:
    """What a cluster asks of the pool (:meth:`ForkServers.get`'s arguments): the interpreter,
    the programs (flamepy's runpy too with ``flmrun="flamepy"``), preloads and environment.

    With ``instance_imports="declared"`` the zygote imports within the scope of every program's
    distributions (:func:`._visible.zygote_scope`), which is part of its environment and so of
    what tells two zygotes apart.
    """
    modules = [WORKER_MODULE, FLMEXEC_MODULE]
    if flmrun == "flamepy" and _importable(RUNPY_MODULE):
        modules.append(RUNPY_MODULE)
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([*own_paths(), *filter(None, [env.get("PYTHONPATH")])])
    env.pop(ENV_VAR, None)
    if instance_imports == "declared":
        from ._import_scope import zygote_scope

        env[ENV_VAR] = zygote_scope().to_env()
    return {"python": python, "modules": tuple(modules), "preload": PRELOAD, "env": env}


def prestart_fork_server(
    *, flmrun: str = "builtin", instance_imports: str = "declared", python: str = sys.executable
) -> None:
    """Start the process-wide zygote that clusters with these settings will use, now.

    The pytest plugin calls this (in the background) once collection shows that tests will
    need a cluster, so the zygote's imports overlap the first cluster's start instead of
    delaying its first instance. Cheap to import and call: it imports neither grpc nor
    pyarrow here. Does nothing off Linux or once the pool is stopped.
    """
    if not fork_supported():
        return
    with contextlib.suppress(RuntimeError):
        shared_fork_servers().get(**zygote_request(python, flmrun, instance_imports))


_SHARED: ForkServers | None = None
_SHARED_LOCK = threading.Lock()


def shared_fork_servers() -> ForkServers:
    """The process-wide pool every cluster uses by default (created on first use)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED._stopped:
            _SHARED = ForkServers()
        return _SHARED


def stop_shared_fork_servers() -> None:
    """Stop the process-wide pool, if it was ever used (the next use starts a new one)."""
    with _SHARED_LOCK:
        shared = _SHARED
    if shared is not None:
        shared.stop()


def _after_fork_in_child() -> None:
    global _SHARED, _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    if _SHARED is not None:
        _SHARED._forget()
        _SHARED = None


atexit.register(stop_shared_fork_servers)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
