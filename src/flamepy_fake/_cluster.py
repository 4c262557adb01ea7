"""FakeCluster: a session manager, an object cache and executors, served in-process.

``FakeCluster`` owns a lifecycle and composes the parts; each lives in its own module:

- ``_parts.ClusterParts``: what runs while the cluster is started, in start and stop order;
- ``_control._state.ClusterState``: the plain-Python state model (sessions, tasks, executors);
- ``_control._frontend.FrontendServicer``: the ``flame.v1.Frontend`` gRPC adapter over that state;
- ``_cache._server.FakeObjectCache``: the Arrow Flight object cache;
- ``_executors.ExecutorManager``: the scheduler and the thread / process instances;
- ``_cluster_toolkit.ClusterToolkit`` (the base class): what a test reads and injects.

Every cluster owns its state, ports, threads and work directory, so two clusters in one
process are independent, and ``stop()`` leaves nothing behind. Heavy modules (grpc, pyarrow)
are imported by ``start()``, not at import time, to keep ``import flamepy_fake`` cheap.
"""

from __future__ import annotations

import atexit
import enum
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flamepy_runner import UsageError

from ._addresses import check_port, dialable
from ._cluster_toolkit import ClusterToolkit
from ._control._policies import DEFAULT_POLICIES
from ._errors import ClusterStartError
from ._options import EXECUTORS, FLMRUN_MODES, INSTANCE_IMPORTS, ClusterOptions, executors_from
from ._parts import ClusterParts, Placement

if TYPE_CHECKING:
    from flamepy_runner import FlameConfig

    from ._control._state import ClusterState
    from ._toolkit._introspect import AbandonedInstance

__all__ = ["BACKENDS", "FLMRUN_MODES", "INSTANCE_IMPORTS", "ClusterStartError", "FakeCluster"]

#: The former name of ``EXECUTORS`` (``FakeCluster(executors=...)``'s values).
BACKENDS = EXECUTORS

# Clusters still running at interpreter exit are stopped then, so a forgotten stop() leaves no
# instance process, socket file or temp directory behind. Strong references: a running cluster
# serves (and must be stopped) whether or not the caller kept it.
_RUNNING: set[FakeCluster] = set()


@atexit.register
def _stop_forgotten_clusters() -> None:
    for cluster in list(_RUNNING):
        cluster.stop()


class _Lifecycle(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


class FakeCluster(ClusterToolkit):
    """A fake Flame cluster served on local ports: session manager, object cache, executors.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with FakeCluster() as cluster:
            subprocess.run(cmd, env={**os.environ, **cluster.env}, check=True)

    Args:
        host: address to bind both servers to. Loopback by default; binding to another
            interface (``"0.0.0.0"``) must be asked for explicitly.
        port: session manager port; 0 picks a free one.
        cache_port: object cache port; 0 picks a free one.
        executors: ``"auto"`` (the default) and ``"process"`` run every instance in its own
            process, as a real cluster does: a task never sees the caller's module state.
            ``"thread"`` runs ``flmrun``, ``flmexec`` and ``flmping`` instances as threads of
            this process: faster to start, but tasks **share this process's module state**
            (a module-level value the test changes is what the task reads, which a real
            cluster never shows). Other programs always run as processes.
        backend: the former name of ``executors`` (deprecated: one ``DeprecationWarning``).
        flmrun: ``"builtin"`` runs ``flmrun`` sessions with flamepy_runner's worker,
            ``"flamepy"`` with the stock ``python -m flamepy.runner.runpy``.
        max_executors: the fake's own cap on concurrent instances, for small machines; ``None``
            (the default) means no cap, as Flame v0.6.0, which never reads
            ``limits.max_executors``: there the priority policy's share of the node's capacity
            sets how many executors a session gets. A fake-only option.
        policies: the scheduling policies, v0.6.0's ``cluster.policies``: a list of
            ``priority``, ``drf`` and ``gang``; the default ``("priority", "gang")`` is what
            upstream's images and CI use. A list without ``gang`` (with which v0.6.0 never runs
            a task) is refused.
        retry_limit: failed bindings of a session before event 1002 stops retries.
        default_resreq: resource requirement given to sessions that name none, as
            ``(cpu, memory, gpu)``; the state model's default when ``None``.
        work_dir: parent directory for the cluster's working files (instance directories,
            sockets, installed packages). A fresh temporary directory is made inside it (or
            in the system temp dir) and removed by :meth:`stop`.
        cache_storage_dir: persist cached objects under this directory (off by default).
        cache_max_memory: memory limit of the object cache in bytes, with LRU eviction.
        advertise_host: the host put in ``endpoint`` and ``cache_endpoint``; defaults to
            ``host``, or ``127.0.0.1`` when ``host`` is a wildcard address.
        log_calls: log ``served <service>/<method>: <status>`` at INFO on the
            ``flamepy_fake.calls`` logger as each call ends (``flamepy-fake -v``).
        fork_server: fork instance processes of ``flmrun``, ``flmexec`` and ``flmping`` from
            a zygote that has already imported them (milliseconds instead of a ~150 ms spawn;
            every cluster of the process shares it); ``None`` (the default) means on where
            supported (Linux), ``False`` always spawns. When the zygote cannot be used (not
            Linux, or it died), instances are spawned after one warning on the ``flamepy_fake``
            logger.
        instance_imports: what ``flmrun`` instance processes can import. ``"declared"`` (the
            default) is what a Flame v0.6.0 executor has: the standard library, the flmrun
            program's distributions (flamepy 0.6.0 and its requirements; the builtin worker
            adds flamepy-runner's), the package and the distributions its ``pyproject.toml``
            (or the Runner's ``dependencies=``) declares, with their requirements resolved
            from this environment; any other import fails with ``ModuleNotFoundError`` as on
            Flame, and the instance's stderr names the missing declaration. ``"all"`` lets
            instances import everything this environment has. Thread executors always share
            the test's modules.

    Raises:
        ValueError: an option is out of range or not one of the accepted values.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cache_port: int = 0,
        executors: str | None = None,
        backend: str | None = None,
        flmrun: str = "builtin",
        max_executors: int | None = None,
        policies: Sequence[str] = DEFAULT_POLICIES,
        retry_limit: int = 5,
        default_resreq: tuple[int, int, int] | None = None,
        work_dir: str | Path | None = None,
        cache_storage_dir: str | Path | None = None,
        cache_max_memory: int | str | None = None,
        advertise_host: str | None = None,
        log_calls: bool = False,
        fork_server: bool | None = None,
        instance_imports: str = "declared",
    ) -> None:
        if not host:
            raise ValueError("host must be a non-empty address, e.g. '127.0.0.1'")
        check_port("port", port)
        check_port("cache_port", cache_port)
        if port and port == cache_port:
            raise ValueError(f"port and cache_port must differ (both are {port})")
        options = ClusterOptions.build(
            executors=executors_from(executors, backend, "FakeCluster"),
            flmrun=flmrun,
            fork_server=fork_server,
            instance_imports=instance_imports,
            max_executors=max_executors,
            policies=policies,
            retry_limit=retry_limit,
            default_resreq=default_resreq,
            cache_max_memory=cache_max_memory,
        )
        self._cluster_options = options
        self._placement = Placement(
            host=host,
            port=port,
            cache_port=cache_port,
            advertise=advertise_host or dialable(host),
            work_parent=Path(work_dir) if work_dir is not None else None,
            cache_storage_dir=Path(cache_storage_dir) if cache_storage_dir is not None else None,
            log_calls=log_calls,
        )

        self._lock = threading.RLock()
        self._lifecycle = _Lifecycle.NEW
        self._retiring = False  # stopped for its users, the rest of stop() still to run
        self._parts: ClusterParts | None = None
        self._abandoned: tuple[AbandonedInstance, ...] = ()
        from ._toolkit._calls import CallLog  # here, not at module level: `import flamepy_fake` stays cheap

        self._calls = CallLog()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeCluster:
        """Start serving. Calling it again on a running cluster does nothing.

        Returns:
            The cluster itself, so ``cluster = FakeCluster().start()`` works.

        Raises:
            UsageError: the cluster was stopped (a stopped cluster cannot restart).
            ClusterStartError: a port is taken or a part failed to start; nothing is left running.
        """
        with self._lock:
            if self._lifecycle is _Lifecycle.RUNNING:
                return self
            if self._lifecycle is _Lifecycle.STOPPED:
                raise UsageError(
                    "Cannot restart a FakeCluster once it has been stopped; create a new FakeCluster."
                )
            self._lifecycle = _Lifecycle.STARTING
            self._parts = ClusterParts(self._placement, self._cluster_options, self._calls)
            try:
                self._parts.start()
            except BaseException:
                self._stop_parts()
                self._lifecycle = _Lifecycle.STOPPED
                raise
            self._lifecycle = _Lifecycle.RUNNING
            _RUNNING.add(self)
            return self

    def stop(self) -> None:
        """Stop every part and remove the work directory; idempotent.

        Running instances are killed, long polls and task watches end, both ports close,
        and no thread, socket or temporary directory of the cluster remains. On a cluster
        whose stop was begun by ``_retire()`` it finishes that stop (or waits for the thread
        finishing it).
        """
        with self._lock:
            if self._lifecycle is _Lifecycle.STOPPED and not self._retiring:
                return
            self._lifecycle = _Lifecycle.STOPPED
            self._retiring = False
            _RUNNING.discard(self)
            self._stop_parts()

    def _retire(self) -> Callable[[], None]:
        """Begin :meth:`stop` and return what finishes it, for a caller that runs the rest off
        its critical path (the pytest plugin, between tests).

        At once the cluster is stopped for its users (``running`` is False, its methods refuse)
        and the ``FLAME_*`` variables it exported leave ``os.environ``, so the next cluster of
        the process starts as if this one were gone. Instances, ports, threads and files go
        when the returned callable (this cluster's :meth:`stop`) runs; until then the cluster
        stays in the list the interpreter's exit stops.
        """
        with self._lock:
            if self._lifecycle is not _Lifecycle.STOPPED:
                self._lifecycle = _Lifecycle.STOPPED
                self._retiring = True
                if self._parts is not None and self._parts.manager is not None:
                    self._parts.manager.withdraw_env()
        return self.stop

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _stop_parts(self) -> None:
        parts = self._parts
        if parts is not None:
            try:
                parts.stop()
            finally:
                self._abandoned = parts.abandoned

    # ------------------------------------------------------------------ properties

    def _require_running(self, what: str) -> None:
        if self._lifecycle is _Lifecycle.RUNNING or (
            self._lifecycle is _Lifecycle.STARTING and what in ("endpoint", "cache_endpoint")
        ):
            return
        if self._lifecycle is _Lifecycle.STOPPED:
            raise UsageError(
                f"Cannot use {what} of a FakeCluster that has been stopped; create a new FakeCluster."
            )
        raise UsageError(
            f"Cannot use {what} before the FakeCluster is started: "
            "call start() or use 'with FakeCluster() as cluster:'."
        )

    @property
    def running(self) -> bool:
        """Whether the cluster is serving (started and not stopped)."""
        return self._lifecycle is _Lifecycle.RUNNING

    def _running_parts(self, what: str) -> ClusterParts:
        self._require_running(what)
        assert self._parts is not None
        return self._parts

    @property
    def host(self) -> str:
        """The address the servers are bound to."""
        return self._placement.host

    @property
    def port(self) -> int:
        """The session manager port (the bound one once started)."""
        return self._running_parts("port").bound_port

    @property
    def endpoint(self) -> str:
        """The session manager URL, ``http://<host>:<port>`` (the value of ``FLAME_ENDPOINT``).

        Raises:
            UsageError: the cluster is not running.
        """
        return self._running_parts("endpoint").endpoint

    @property
    def cache_endpoint(self) -> str:
        """The object cache URL, ``grpc://<host>:<port>`` (the value of ``FLAME_CACHE_ENDPOINT``).

        Raises:
            UsageError: the cluster is not running.
        """
        endpoint = self._running_parts("cache_endpoint").cache_endpoint
        assert endpoint is not None
        return endpoint

    @property
    def env(self) -> dict[str, str]:
        """The environment a client or child process needs to reach this cluster.

        Returns:
            A new dict with ``FLAME_ENDPOINT`` and ``FLAME_CACHE_ENDPOINT``.

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("env")
        return {"FLAME_ENDPOINT": self.endpoint, "FLAME_CACHE_ENDPOINT": self.cache_endpoint}

    @property
    def home(self) -> Path:
        """A HOME whose ``.flame/flame.yaml`` names only this cluster (inside :attr:`work_dir`).

        Process instances run with it; the plugin's fixtures and ``flamepy-fake run`` give it
        to the code under test, so a developer's ``~/.flame/flame.yaml`` never leaks in.
        """
        home = self._running_parts("home").home
        assert home is not None
        return home

    def client_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A complete environment for a client process that must reach only this cluster.

        Args:
            base: the environment to start from; ``os.environ`` when omitted.

        Returns:
            ``base`` with :attr:`env` set, ``HOME`` set to :attr:`home` and ``FLAME_CA_FILE`` /
            ``FLAME_CACHE_STORAGE`` removed (``XDG_CACHE_HOME`` / ``XDG_CONFIG_HOME`` keep
            pointing at the real ones, for pip and friends).

        Raises:
            UsageError: the cluster is not running.
        """
        from ._home import isolated_env

        return isolated_env(os.environ if base is None else base, self.home, self.env)

    @property
    def config(self) -> FlameConfig:
        """A :class:`flamepy_runner.FlameConfig` pointing at this cluster.

        Raises:
            UsageError: the cluster is not running.
        """
        from flamepy_runner import FlameConfig

        self._require_running("config")
        return FlameConfig(endpoint=self.endpoint, cache_endpoint=self.cache_endpoint)

    @property
    def state(self) -> ClusterState:
        """The cluster's state model, for white-box tests (raw protobuf values).

        Tests should prefer the typed records of :meth:`applications`, :meth:`sessions`,
        :meth:`tasks`, :meth:`executors` and :meth:`objects`.
        """
        state = self._running_parts("state").state
        assert state is not None
        return state

    @property
    def work_dir(self) -> Path:
        """The cluster's private working directory (removed by :meth:`stop`)."""
        work_dir = self._running_parts("work_dir").work_dir
        assert work_dir is not None
        return work_dir

    @property
    def options(self) -> Mapping[str, Any]:
        """The options the cluster was built with (for diagnostics)."""
        return {
            "host": self._placement.host,
            "port": self._placement.port,
            "cache_port": self._placement.cache_port,
            **self._cluster_options.as_dict(),
            "work_dir": self._placement.work_parent,
            "cache_storage_dir": self._placement.cache_storage_dir,
            "advertise_host": self._placement.advertise,
            "log_calls": self._placement.log_calls,
        }

    def __repr__(self) -> str:
        # Safe on a half-built object (an __init__ that raised): pytest shows reprs of locals.
        lifecycle = getattr(self, "_lifecycle", None)
        if lifecycle is None:
            return "<FakeCluster (not initialised)>"
        if lifecycle is _Lifecycle.RUNNING:
            return f"<FakeCluster running endpoint={self.endpoint} cache_endpoint={self.cache_endpoint}>"
        return f"<FakeCluster {lifecycle.value}>"
