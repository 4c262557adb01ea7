"""The fake executor manager: one thread per executor drives its instance through a binding.

Each executor runs on a thread of its own, driven through its binding (install, instance,
session enter, tasks, release) by :mod:`._drive`, the manager's base class.

Code inside tasks reaching its own cluster: process instances get ``FLAME_ENDPOINT`` and
``FLAME_CACHE_ENDPOINT`` in their environment. Thread instances share the cluster's process:
our worker exposes the cluster's configuration through
``flamepy_runner._worker.current_config()`` while a task runs (per thread, so several clusters
in one process stay apart). flamepy itself only reads the process environment (and keeps one
connection per process), so for flamepy calls inside thread tasks the manager exports both
variables into ``os.environ`` when they are unset (``export_env``) and removes them at stop.
Limits: with several clusters in one process, or a flamepy connection made earlier to another
cluster, flamepy calls in thread tasks go where flamepy's process-wide state points; use the
process executors for such code. Threads a task starts itself do not see ``current_config()``.
A Runner package's directories are appended to this process's ``sys.path`` for thread
instances (modules pickled by reference must be importable here); a module already imported
under the same name is not reloaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from .._control._policies import DEFAULT_POLICIES
from .._control._scheduler import Scheduler
from .._control._state import AppRecord, ClusterState, SessionDemand, StateError
from .._install import Installer, ReleaseStore, shared_release_store
from .._options import EXECUTORS
from .._toolkit._introspect import AbandonedInstance, ExecutorInfo, executor_state
from ._drive import ExecutorDrive
from ._factory import InstanceFactory
from ._hooks import ExecutorHooks
from ._instance import Instance
from ._launch import (
    is_flmexec,
    is_flmping,
    is_flmrun,
)
from ._zygote import ForkServer, fallback_text, fork_supported
from ._zygote_pool import ForkServers, shared_fork_servers, zygote_request

__all__ = ["AbandonedInstance", "ExecutorInfo", "ExecutorManager"]

logger = logging.getLogger(__name__)
# How long the start-up warm-up waits for the cache (it only saves the first bind a handshake).
_WARM_UP_TIMEOUT = 5.0

BACKENDS = EXECUTORS  # the former name, kept for the package's exports


class ExecutorManager(ExecutorDrive):
    """Runs the cluster's instances (contract D).

    Args:
        state: the cluster state.
        frontend_endpoint: ``FLAME_ENDPOINT`` given to instances (``http://host:port``).
        cache_endpoint: ``FLAME_CACHE_ENDPOINT`` given to instances (``grpc://host:port``).
        executors: ``auto`` or ``process`` (every instance is a process: isolated module state,
            as on a real cluster) or ``thread`` (threads whenever the app can run in-process:
            flmrun with the builtin worker, flmexec, flmping; they share this process's module
            state; any other command always runs as a process).
        flmrun: ``builtin`` (our worker) or ``flamepy`` (stock ``python -m flamepy.runner.runpy``,
            always in a process).
        max_executors: the fake's optional cap on live instances (``None``: none, as v0.6.0).
        policies: v0.6.0's scheduling policies (default ``("priority", "gang")``).
        work_dir: directory for instance directories, logs and installed packages; the
            manager removes what it creates there.
        retry_backoff: seconds before retrying a session after a bind failure (doubling).
        bind_timeout: deadline for an instance's socket to appear and for OnSessionEnter and
            OnSessionLeave.
        stop_grace: seconds between SIGTERM and SIGKILL when an instance is released.
        shutdown_grace: at :meth:`stop`, seconds instance processes get between SIGTERM and
            SIGKILL, and then executor threads get to finish before they are abandoned.
        python: the interpreter that runs flmrun/flmexec instances.
        home: ``HOME`` of process instances (the cluster's isolated one); inherited when None.
        hooks: injected faults and the record of calls into instances (``FakeCluster``'s).
        export_env: set ``FLAME_ENDPOINT``/``FLAME_CACHE_ENDPOINT`` in this process while the
            manager runs, if both are unset, so flamepy calls inside thread instances reach
            this cluster (see the module docstring).
        fork_server: fork flmrun/flmexec/flmping instance processes from a zygote
            (:mod:`._zygote`) instead of spawning them; ``None`` (default) means on where
            supported (Linux). Off Linux, or when the zygote dies, instances are spawned, after
            one warning.
        fork_servers: where the zygote comes from: the process-wide pool by default
            (:func:`._zygote_pool.shared_fork_servers`), so every cluster of a process forks
            from the same warm zygote; the manager never stops a pool it was given.
        releases: where installed packages are kept: the process-wide store by default
            (:func:`.._install.shared_release_store`), so a package version is extracted and
            its dependencies installed once per process, not once per cluster.
        instance_imports: what flmrun instance processes can import: ``declared`` (default)
            limits them to what a Flame executor has (the standard library, the flmrun
            program's distributions, the package and the distributions it declares, see
            :mod:`._visible`); ``all`` lets them import anything the test's environment has.
            Thread instances always share this process's modules.
    """

    def __init__(
        self,
        state: ClusterState,
        *,
        frontend_endpoint: str,
        cache_endpoint: str,
        executors: str = "auto",
        flmrun: str = "builtin",
        max_executors: int | None = None,
        policies: tuple[str, ...] = DEFAULT_POLICIES,
        work_dir: Path,
        retry_backoff: float = 0.5,
        bind_timeout: float = 30.0,
        stop_grace: float = 3.0,
        shutdown_grace: float = 0.5,
        python: str = sys.executable,
        export_env: bool = True,
        home: Path | None = None,
        hooks: ExecutorHooks | None = None,
        fork_server: bool | None = None,
        fork_servers: ForkServers | None = None,
        releases: ReleaseStore | None = None,
        instance_imports: str = "declared",
    ) -> None:
        # Values come checked: FakeCluster validated them once (flamepy_fake._options).
        self.state = state
        self.frontend_endpoint = frontend_endpoint
        self.cache_endpoint = cache_endpoint
        self._executors = executors
        self.flmrun = flmrun
        self.instance_imports = instance_imports
        self.max_executors = max_executors
        self.work_dir = Path(work_dir)
        self.retry_backoff = retry_backoff
        self.bind_timeout = bind_timeout
        self.stop_grace = stop_grace
        self.shutdown_grace = shutdown_grace
        self.python = python
        self.abandoned: list[AbandonedInstance] = []
        self.hooks = hooks
        self.installer = Installer(
            self.work_dir / "apps",
            python=python,
            releases=shared_release_store() if releases is None else releases,
        )
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._binding: dict[str, str] = {}  # executor id -> session, until the bind outcome is known
        self._instances: dict[str, Instance] = {}
        self._logs: dict[str, Instance] = {}
        self._history: dict[str, str] = {}  # executor id -> session, every executor ever spawned
        self._stopping = threading.Event()
        self._started = False
        self._factory: InstanceFactory | None = None  # made by start()
        self._warm_thread: threading.Thread | None = None
        self._socket_dir: Path | None = None
        self.export_env = export_env
        self.home = home
        self._exported: dict[str, str] = {}
        self.fork_server = fork_server
        self._zygote: ForkServer | None = None
        self._fork_servers = fork_servers
        self._scheduler = Scheduler(
            state,
            spawn=self._spawn,
            live=self._live,
            executors_for=lambda d: self.executors_for(d.app),
            max_executors=max_executors,
            policies=policies,
            retry_backoff=retry_backoff,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the working directories and start scheduling."""
        if self._started:
            return
        self._started = True
        for sub in ("instances", "logs", "apps"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        # AF_UNIX paths are limited to ~104 bytes: sockets live in a short dir under /tmp.
        self._socket_dir = Path(
            tempfile.mkdtemp(prefix="ffx-", dir="/tmp" if os.path.isdir("/tmp") else None)
        )
        if (
            self.export_env
            and "FLAME_ENDPOINT" not in os.environ
            and "FLAME_CACHE_ENDPOINT" not in os.environ
        ):
            self._exported = {
                "FLAME_ENDPOINT": self.frontend_endpoint,
                "FLAME_CACHE_ENDPOINT": self.cache_endpoint,
            }
            os.environ.update(self._exported)
        self._start_fork_server()
        self._factory = InstanceFactory(
            work_dir=self.work_dir,
            socket_dir=self._socket_dir,
            frontend_endpoint=self.frontend_endpoint,
            cache_endpoint=self.cache_endpoint,
            flmrun=self.flmrun,
            instance_imports=self.instance_imports,
            python=self.python,
            home=self.home,
            bind_timeout=self.bind_timeout,
            stop_grace=self.stop_grace,
            zygote=self._zygote,
        )
        if self._executors == "thread":
            # The cache connections a test's first bind needs (the package download and the
            # thread instances' client), opened while it makes its Runner: ~2.5 ms off a
            # thread-instance test's first call. Not for process instances: there the child
            # opens its own, and the warm-up only slowed the Runner's start (measured).
            warm = threading.Thread(target=self._warm_up, name="flamepy-fake-warm-up", daemon=True)
            self._warm_thread = warm
            warm.start()
        self._scheduler.start()

    def _warm_up(self) -> None:
        timeout = min(self.bind_timeout, _WARM_UP_TIMEOUT)
        self.installer.warm_up(self.cache_endpoint, timeout)
        if self._factory is not None:
            self._factory.warm_up(timeout)

    def _start_fork_server(self) -> None:
        """Find (or start in the background) the zygote, unless off, useless (thread executors)
        or unsupported. It is shared: it outlives this manager (see :mod:`._zygote_pool`)."""
        if self.fork_server is False or self._executors == "thread":
            return
        if not fork_supported():
            logger.warning(fallback_text(f"no fork server on {sys.platform} (fork is safe on Linux only)"))
            return
        pool = self._fork_servers if self._fork_servers is not None else shared_fork_servers()
        try:
            self._zygote = pool.get(**zygote_request(self.python, self.flmrun, self.instance_imports))
        except RuntimeError as exc:  # the pool was stopped (interpreter exit): spawn instead
            logger.warning(fallback_text(str(exc)))

    def stop(self) -> None:
        """Stop scheduling, kill every instance, join the executor threads, remove files.

        Never waits on user code: instance processes get ``shutdown_grace`` seconds after
        SIGTERM (all at once), then SIGKILL; executor threads get ``shutdown_grace`` more. A
        thread still running after that is a thread instance inside user code, which cannot be
        killed: it is abandoned, renamed ``flamepy-fake-abandoned-<id>`` and listed in
        :attr:`abandoned`.
        """
        self._stopping.set()
        self._scheduler.stop()
        self.installer.cancel()
        if self._warm_thread is not None:
            self._warm_thread.join(timeout=self.shutdown_grace)
        with self._lock:
            instances = list(self._instances.values())
        for inst in instances:
            inst.terminate()
        deadline = time.monotonic() + self.shutdown_grace
        for inst in instances:
            inst.stop(grace=max(deadline - time.monotonic(), 0.0))
        deadline = time.monotonic() + self.shutdown_grace
        for thread in self._all_threads():
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        self._abandon_running_threads()
        # The zygote is shared: its pool stops it; this manager's children are gone by now.
        self.withdraw_env()
        if self._factory is not None:
            self._factory.close()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        shutil.rmtree(self.work_dir / "instances", ignore_errors=True)

    def withdraw_env(self) -> None:
        """Remove from ``os.environ`` the variables :meth:`start` exported (those still holding
        this manager's values); idempotent."""
        for key, value in self._exported.items():
            if os.environ.get(key) == value:
                del os.environ[key]
        self._exported = {}

    def __enter__(self) -> ExecutorManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _all_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads.values())

    def _abandon_running_threads(self) -> None:
        """Mark and list the executor threads still running (daemons: they never block exit)."""
        records = {rec.id: rec for rec in self.state.executors()}
        with self._lock:
            running = [(eid, t) for eid, t in self._threads.items() if t.is_alive()]
        for eid, thread in running:
            thread.name = f"flamepy-fake-abandoned-{eid[:8]}"
            rec = records.get(eid)
            entry = AbandonedInstance(
                executor_id=eid,
                thread_name=thread.name,
                session_id=rec.session_id if rec else None,
                task_id=rec.task_id if rec else None,
            )
            self.abandoned.append(entry)
            logger.warning(
                "abandoned %s: a thread instance cannot be killed, its code keeps running in this process",
                entry.describe(),
            )

    # -- introspection --------------------------------------------------------------------------

    def executors(self) -> list[ExecutorInfo]:
        """Every executor of the cluster (a snapshot)."""
        return [
            ExecutorInfo(
                id=rec.id,
                state=executor_state(rec.state),
                session=rec.session_id,
                app=rec.application,
                executors=rec.executors,
                pid=rec.pid,
                task_id=rec.task_id,
            )
            for rec in self.state.executors()
        ]

    def instance_logs(self, executor_id: str) -> str:
        """stdout and stderr of the executor's instance (empty for thread instances).

        Readable until the manager's work directory is removed, also once the executor is
        gone, and for instances that died while binding; empty before the instance starts.

        Raises:
            KeyError: no such executor was ever started by this manager.
        """
        with self._lock:
            known = executor_id in self._history
            inst = self._logs.get(executor_id)
        if not known:
            raise KeyError(f"unknown executor {executor_id!r}")
        return "" if inst is None else inst.logs()

    def executors_of(self, session_id: str) -> list[str]:
        """Ids of every executor started for ``session_id``, oldest first, gone ones included."""
        with self._lock:
            return [eid for eid, sid in self._history.items() if sid == session_id]

    def executors_for(self, app: AppRecord) -> str:
        """How an instance of ``app`` runs: ``thread`` or ``process``."""
        in_process = (is_flmrun(app) and self.flmrun == "builtin") or is_flmexec(app) or is_flmping(app)
        return "thread" if in_process and self._executors == "thread" else "process"

    # -- executors ------------------------------------------------------------------------------

    def _live(self) -> int:
        with self._lock:
            return len(self._threads)

    def _spawn(self, demand: SessionDemand, executor_id: str) -> None:
        thread = threading.Thread(
            target=self._run,
            args=(executor_id,),
            name=f"flamepy-fake-executor-{executor_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._threads[executor_id] = thread
            self._binding[executor_id] = demand.session_id
            self._history[executor_id] = demand.session_id
        thread.start()

    def _report_bind(self, eid: str, ok: bool | None) -> None:
        """Tell the scheduler how the executor's bind ended (once; None = abandoned)."""
        with self._lock:
            session_id = self._binding.pop(eid, None)
        if session_id is not None:
            self._scheduler.bind_finished(session_id, ok)

    def _run(self, eid: str) -> None:
        session_id: str | None = None
        try:
            try:
                app, ssn = self.state.binding(eid)
            except StateError:
                return
            session_id = ssn.id
            self._serve(eid, app, ssn)
        except Exception:
            logger.exception("executor %s failed", eid)
        finally:
            # Stopped while still listed: a manager stopping meanwhile must see it and wait.
            with self._lock:
                inst = self._instances.get(eid)
            if inst is not None:
                inst.stop()
            with self._lock:
                self._instances.pop(eid, None)
            self._report_bind(eid, None)
            with self._lock:
                self._threads.pop(eid, None)
            with contextlib.suppress(StateError):
                self.state.release_executor(eid)
            logger.debug("executor %s of session %s released", eid, session_id)
