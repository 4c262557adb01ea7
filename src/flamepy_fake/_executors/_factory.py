"""The instance an executor runs, made for its application: a thread of this process, or a child
process in its own working directory, with its environment, forked from the zygote or spawned.

A thread instance shares this process (its module state, and one cache client for every thread
instance of the manager); a process instance gets the directories Flame v0.6.0's executor gives
it (``<work>/work/<app>`` with a ``tmp``), a socket, ``FLAME_*`` variables and, for ``flmrun``
with ``instance_imports="declared"``, the import scope of :mod:`._visible`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flamepy_runner import FlameConfig

from .._home import FOREIGN_VARIABLES
from ._import_scope import ENV_VAR as IMPORT_SCOPE_VAR
from ._import_scope import instance_scope
from ._instance import Instance, ProcessInstance, ShimError, ThreadInstance
from ._launch import build_env, instance_argv, is_flmexec, is_flmping, is_flmrun
from ._zygote_pool import own_paths

if TYPE_CHECKING:
    from .._control._state import AppRecord
    from .._install import Installation
    from ._zygote import ForkServer

__all__ = ["InstanceFactory"]


class InstanceFactory:
    """Makes the instances of one executor manager (see the module docstring).

    Args:
        work_dir: the manager's directory; instance directories go under ``instances/`` and
            their stdout/stderr under ``logs/``.
        socket_dir: a short directory for the instances' AF_UNIX sockets.
        frontend_endpoint, cache_endpoint: the ``FLAME_*`` endpoints instances get.
        flmrun: ``builtin`` or ``flamepy``, the ``flmrun`` program.
        instance_imports: ``declared`` or ``all``, what ``flmrun`` processes can import.
        python: the interpreter of ``flmrun``/``flmexec`` processes.
        home: ``HOME`` of process instances; inherited when None.
        bind_timeout: deadline for a socket to appear and for session enter/leave calls.
        stop_grace: seconds between SIGTERM and SIGKILL when an instance is released.
        zygote: the fork server, or None to spawn.
    """

    def __init__(
        self,
        *,
        work_dir: Path,
        socket_dir: Path,
        frontend_endpoint: str,
        cache_endpoint: str,
        flmrun: str,
        instance_imports: str,
        python: str,
        home: Path | None,
        bind_timeout: float,
        stop_grace: float,
        zygote: ForkServer | None,
    ) -> None:
        self.work_dir = work_dir
        self.socket_dir = socket_dir
        self.frontend_endpoint = frontend_endpoint
        self.cache_endpoint = cache_endpoint
        self.flmrun = flmrun
        self.instance_imports = instance_imports
        self.python = python
        self.home = home
        self.bind_timeout = bind_timeout
        self.stop_grace = stop_grace
        self.zygote = zygote
        self.client_config = FlameConfig(endpoint=frontend_endpoint, cache_endpoint=cache_endpoint)
        self._lock = threading.Lock()
        self._cache: Any = None  # CacheClient for thread instances, made on first use
        self._closed = False

    def make(self, eid: str, app: AppRecord, executors: str, installation: Installation) -> Instance:
        """The instance of executor ``eid`` (not started), ``executors`` being ``thread`` or ``process``.

        Raises:
            ShimError: the working directory cannot be made, or the command is empty or unexpanded.
        """
        if executors == "thread":
            return self._thread_instance(app, installation)
        auto_dir = not app.working_directory
        top = self.work_dir / "instances" / eid if auto_dir else Path(app.working_directory or "")
        app_dir = top / "work" / app.name
        tmp_dir = app_dir / "tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ShimError(f"cannot create the working directory {app_dir}: {exc}") from exc
        socket_path = self.socket_dir / f"{eid}.sock"
        base = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
        if self.home is not None:
            base["HOME"] = str(self.home)
        env = build_env(
            app,
            base=base,
            socket_path=socket_path,
            frontend_endpoint=self.frontend_endpoint,
            cache_endpoint=self.cache_endpoint,
            tmp_dir=tmp_dir,
            installation=installation,
            extra_pythonpath=own_paths(),
        )
        if is_flmrun(app) and self.instance_imports == "declared":
            scope = instance_scope(self.flmrun, app.name, installation.declared, installation.pythonpath)
            env[IMPORT_SCOPE_VAR] = scope.to_env()
        argv = instance_argv(app, self.flmrun, env, self.python)
        if not argv[0]:
            raise ShimError("the application has no command")
        if "${" in argv[0] or argv[0].startswith("$"):
            raise ShimError(f"failed to start service by command <{argv[0]}>: unexpanded variable")
        logs = self.work_dir / "logs"
        return ProcessInstance(
            argv,
            env=env,
            cwd=top,
            socket_path=socket_path,
            stdout_path=logs / f"{eid}.out",
            stderr_path=logs / f"{eid}.err",
            cleanup=(top,) if auto_dir else (app_dir,),
            ready_timeout=self.bind_timeout,
            call_timeout=self.bind_timeout,
            stop_grace=self.stop_grace,
            display=" ".join(argv),
            fork_server=self.zygote,
        )

    def warm_up(self, timeout: float) -> None:
        """Open the thread instances' cache connection now (see ``CacheClient.warm_up``)."""
        with contextlib.suppress(ShimError):
            self._thread_cache().warm_up(timeout)

    def close(self) -> None:
        """Close the thread instances' cache client, if one was made; make no other."""
        with self._lock:
            self._closed = True
            cache, self._cache = self._cache, None
        if cache is not None:
            with contextlib.suppress(Exception):
                cache.close()

    def _thread_instance(self, app: AppRecord, installation: Installation) -> Instance:
        if is_flmexec(app) or is_flmping(app):
            from .._flmexec import FlmexecService
            from .._flmping import PingService

            factory = FlmexecService if is_flmexec(app) else PingService
            return ThreadInstance(factory, self.client_config)
        from flamepy_runner._for_fake import RunnerWorker

        _append_sys_path(installation.pythonpath)
        cache = self._thread_cache()
        return ThreadInstance(lambda: RunnerWorker(cache), self.client_config)

    def _thread_cache(self) -> Any:
        from flamepy_runner import CacheClient

        with self._lock:
            if self._closed:
                raise ShimError("the executor manager is stopping")
            if self._cache is None:
                self._cache = CacheClient(self.client_config)
            return self._cache


_SYS_PATH_LOCK = threading.Lock()


def _append_sys_path(paths: tuple[str, ...]) -> None:
    """Make a Runner package importable by in-process instances, after everything else.

    Functions and classes pickled by reference name modules of the Runner's package; a thread
    instance can only import them from this process. The directories are appended, never
    prepended, so modules the process already imports win (in a test run, the project's own).
    """
    with _SYS_PATH_LOCK:
        for path in paths:
            if path not in sys.path:
                sys.path.append(path)
