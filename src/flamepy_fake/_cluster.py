"""FakeCluster: a session manager, an object cache and executors, served in-process.

``FakeCluster`` only composes and owns the parts; each lives in its own module:

- ``_state.ClusterState``: the plain-Python state model (sessions, tasks, executors);
- ``_frontend.FrontendServicer``: the ``flame.v1.Frontend`` gRPC adapter over that state;
- ``_cache._server.FakeObjectCache``: the Arrow Flight object cache;
- ``_executors.ExecutorManager``: the scheduler and the thread / process instances.

Every cluster owns its state, ports, threads and work directory, so two clusters in one
process are independent, and ``stop()`` leaves nothing behind. Heavy modules (grpc, pyarrow)
are imported by ``start()``, not at import time, to keep ``import flamepy_fake`` cheap.
"""

from __future__ import annotations

import atexit
import enum
import errno
import ipaddress
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from flamepy_runner._exceptions import UsageError

from ._control._policies import DEFAULT_POLICIES
from ._errors import ClusterStartError
from ._options import EXECUTORS, FLMRUN_MODES, INSTANCE_IMPORTS, ClusterOptions, executors_from

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from flamepy_runner._config import FlameConfig

    from ._cache._server import FakeObjectCache
    from ._control._records import EventRecord
    from ._control._state import ClusterState
    from ._executors import AbandonedInstance, ExecutorInfo, ExecutorManager
    from ._toolkit._calls import CallLog
    from ._toolkit._faults import Faults
    from ._toolkit._introspect import AppInfo, ObjectInfo, SessionInfo, TaskInfo

__all__ = ["BACKENDS", "FLMRUN_MODES", "INSTANCE_IMPORTS", "ClusterStartError", "FakeCluster"]

#: The former name of ``EXECUTORS`` (``FakeCluster(executors=...)``'s values).
BACKENDS = EXECUTORS

# Streaming RPCs (WatchTask, ListTask) hold a server thread each for as long as they run, and
# flamepy watches every task it submits; a small pool would starve unary calls behind them.
# ThreadPoolExecutor only creates threads on demand, so a high cap costs nothing at start.
_SERVER_THREADS = 256
# How long stop() lets in-flight RPCs finish. The state wakes every long poll first, so in
# practice the server stops as soon as the last unary call returns.
_STOP_GRACE = 1.0
_GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    # grpc enables SO_REUSEPORT by default, which would let two servers share a port silently;
    # a taken port must be an error instead.
    ("grpc.so_reuseport", 0),
    # Upstream's limits are applied per request by the handlers (_limits.py), with tonic's
    # status and text; gRPC's own limit would answer RESOURCE_EXHAUSTED with its own words.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)


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


class FakeCluster:
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
        _check_port("port", port)
        _check_port("cache_port", cache_port)
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
        self._policies = options.policies
        self._host = host
        self._port = port
        self._cache_port = cache_port
        self._advertise = advertise_host or _dialable(host)
        self._backend = options.executors
        self._flmrun = options.flmrun
        self._max_executors = options.max_executors
        self._retry_limit = options.retry_limit
        self._default_resreq = options.default_resreq
        self._work_parent = Path(work_dir) if work_dir is not None else None
        self._cache_storage_dir = Path(cache_storage_dir) if cache_storage_dir is not None else None
        self._cache_max_memory = options.cache_max_memory
        self._log_calls = log_calls
        self._fork_server = options.fork_server
        self._instance_imports = options.instance_imports

        self._lock = threading.RLock()
        self._lifecycle = _Lifecycle.NEW
        self._retiring = False  # stopped for its users, the rest of stop() still to run
        self._state: ClusterState | None = None
        self._server: grpc.Server | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._cache: FakeObjectCache | None = None
        self._manager: ExecutorManager | None = None
        self._work_dir: Path | None = None
        self._bound_port = 0
        self._cache_endpoint: str | None = None
        self._abandoned: tuple[AbandonedInstance, ...] = ()
        from ._toolkit._calls import CallLog  # here, not at module level: `import flamepy_fake` stays cheap

        self._calls = CallLog()
        self._faults: Faults | None = None
        self._home: Path | None = None

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
            try:
                self._start_parts()
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
                if self._manager is not None:
                    self._manager.withdraw_env()
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

    def _start_parts(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        from flamepy_runner._proto import pb, rpc

        from ._control._frontend import FrontendServicer
        from ._control._state import ClusterState
        from ._home import make_home
        from ._limits import limit_requests
        from ._toolkit._faults import Faults
        from ._toolkit._intercept import intercepted

        # Check the host and explicit ports before building anything: a clear message beats
        # grpc's (which also logs its own lines on stderr).
        for what, port in (("session manager", self._port), ("object cache", self._cache_port)):
            _probe_port(self._host, port, what)
        storage = self._cache_storage_dir
        if storage is not None and storage.exists() and not storage.is_dir():
            raise ClusterStartError(
                f"cannot store cached objects in {storage}: it is a file, not a directory"
            )

        try:
            self._work_dir = Path(tempfile.mkdtemp(prefix="flamepy-fake-", dir=self._work_parent))
        except OSError as exc:
            where = self._work_parent or tempfile.gettempdir()
            raise ClusterStartError(f"cannot create the cluster's work directory in {where}: {exc}") from exc
        state_kwargs: dict[str, Any] = {"retry_limit": self._retry_limit}
        if self._default_resreq is not None:
            state_kwargs["default_resreq"] = self._default_resreq
        self._state = ClusterState(**state_kwargs)
        self._faults = Faults([m.name for m in pb.FRONTEND_SERVICE.methods])

        self._pool = ThreadPoolExecutor(max_workers=_SERVER_THREADS, thread_name_prefix="flamepy-fake-rpc")
        interceptors = []
        if self._log_calls:
            from ._toolkit._calllog import GrpcCallLog

            interceptors.append(GrpcCallLog())
        self._server = grpc.server(self._pool, options=list(_GRPC_OPTIONS), interceptors=interceptors)
        servicer = intercepted(FrontendServicer(self._state), pb.FRONTEND_SERVICE, self._calls, self._faults)
        handler = rpc.generic_handler(pb.FRONTEND_SERVICE, servicer, wrap_unary_request=limit_requests)
        self._server.add_generic_rpc_handlers((handler,))
        try:
            bound = self._server.add_insecure_port(f"{_bracket(self._host)}:{self._port}")
        except RuntimeError as exc:  # grpc raises instead of returning 0 in recent versions
            raise ClusterStartError(_bind_message("session manager", self._host, self._port, exc)) from exc
        if not bound:
            raise ClusterStartError(_bind_message("session manager", self._host, self._port, None))
        self._bound_port = bound
        self._server.start()

        self._cache_endpoint = self._start_cache()
        self._home = make_home(self._work_dir / "home", self.endpoint, self._cache_endpoint)
        self._start_executors()

    def _start_cache(self) -> str:
        from ._cache._server import FakeObjectCache

        cache = FakeObjectCache(
            self._host,
            self._cache_port,
            advertise_host=self._advertise,
            storage_dir=self._cache_storage_dir,
            max_memory=self._cache_max_memory,
            log_calls=self._log_calls,
            calls=self._calls,
            faults=self._faults,
        )
        try:
            cache.start()
        except Exception as exc:
            cache.stop()
            raise ClusterStartError(_bind_message("object cache", self._host, self._cache_port, exc)) from exc
        self._cache = cache
        return str(cache.endpoint)

    def _start_executors(self) -> None:
        from ._executors import ExecutorManager
        from ._executors._hooks import ExecutorHooks

        assert self._state is not None and self._work_dir is not None and self._faults is not None
        manager = ExecutorManager(
            self._state,
            frontend_endpoint=self.endpoint,
            cache_endpoint=self.cache_endpoint,
            backend=self._backend,
            flmrun=self._flmrun,
            max_executors=self._max_executors,
            policies=self._policies,
            work_dir=self._work_dir,
            home=self._home,
            hooks=ExecutorHooks(self._faults, self._calls),
            fork_server=self._fork_server,
            instance_imports=self._instance_imports,
        )
        self._manager = manager  # before start(): a half-started manager is stopped too
        manager.start()

    def _stop_parts(self) -> None:
        # Order matters: wake every waiter in the state (long polls, watches), then kill the
        # instances, then close the ports, then join the RPC threads, then remove the files.
        errors: list[BaseException] = []
        if self._state is not None:
            _collect(errors, self._state.stop)
        if self._manager is not None:
            manager = self._manager
            _collect(errors, manager.stop)
            self._abandoned = tuple(manager.abandoned)
            self._manager = None
        if self._server is not None:
            server, self._server = self._server, None
            _collect(errors, lambda: server.stop(_STOP_GRACE).wait())
        if self._cache is not None:
            _collect(errors, self._cache.stop)
            self._cache = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            _collect(errors, lambda: pool.shutdown(wait=True))
        if self._work_dir is not None:
            work_dir, self._work_dir = self._work_dir, None
            shutil.rmtree(work_dir, ignore_errors=True)
        if errors:
            raise errors[0]

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

    @property
    def host(self) -> str:
        """The address the servers are bound to."""
        return self._host

    @property
    def port(self) -> int:
        """The session manager port (the bound one once started)."""
        self._require_running("port")
        return self._bound_port

    @property
    def endpoint(self) -> str:
        """The session manager URL, ``http://<host>:<port>`` (the value of ``FLAME_ENDPOINT``).

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("endpoint")
        return f"http://{_bracket(self._advertise)}:{self._bound_port}"

    @property
    def cache_endpoint(self) -> str:
        """The object cache URL, ``grpc://<host>:<port>`` (the value of ``FLAME_CACHE_ENDPOINT``).

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("cache_endpoint")
        assert self._cache_endpoint is not None
        return self._cache_endpoint

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
        self._require_running("home")
        assert self._home is not None
        return self._home

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
        from flamepy_runner._config import FlameConfig

        self._require_running("config")
        return FlameConfig(endpoint=self.endpoint, cache_endpoint=self.cache_endpoint)

    @property
    def state(self) -> ClusterState:
        """The cluster's state model, for white-box tests (raw protobuf values).

        Tests should prefer the typed records of :meth:`applications`, :meth:`sessions`,
        :meth:`tasks`, :meth:`executors` and :meth:`objects`.
        """
        self._require_running("state")
        assert self._state is not None
        return self._state

    @property
    def work_dir(self) -> Path:
        """The cluster's private working directory (removed by :meth:`stop`)."""
        self._require_running("work_dir")
        assert self._work_dir is not None
        return self._work_dir

    @property
    def options(self) -> Mapping[str, Any]:
        """The options the cluster was built with (for diagnostics)."""
        return {
            "host": self._host,
            "port": self._port,
            "cache_port": self._cache_port,
            **self._cluster_options.as_dict(),
            "work_dir": self._work_parent,
            "cache_storage_dir": self._cache_storage_dir,
            "advertise_host": self._advertise,
            "log_calls": self._log_calls,
        }

    # ------------------------------------------------------------------ introspection

    @property
    def calls(self) -> CallLog:
        """Every call the cluster served, oldest first: the last 10,000 (``MAX_CALLS``).

        Frontend RPCs, the executor manager's Backend calls (``BindExecutorCompleted``,
        ``LaunchTask``, ``CompleteTask``), its calls into instances (``flame.v1.Instance``:
        ``OnSessionEnter``, ``OnTaskInvoke``) and object cache (Flight) calls, each a
        :class:`CallRecord` (seq,
        service, method, status, duration, app, session_id, task_id, key).
        ``cluster.calls(method=..., service=..., status=..., where=...)`` filters;
        ``cluster.calls.clear()`` forgets them. Readable after :meth:`stop`.
        """
        return self._calls

    @property
    def faults(self) -> Faults:
        """The cluster's fault injection (see :class:`flamepy_fake.Faults`).

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("faults")
        assert self._faults is not None
        return self._faults

    def applications(self) -> list[AppInfo]:
        """Every registered application, by name.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import app_info

        self._require_running("applications()")
        assert self._state is not None
        return sorted((app_info(a) for a in self._state.list_applications()), key=lambda a: a.name)

    def sessions(self) -> list[SessionInfo]:
        """Every session (closed ones included) with its task counts, oldest first.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import session_info

        self._require_running("sessions()")
        assert self._state is not None
        return [session_info(s) for s in self._state.list_sessions()]

    def tasks(self, session_id: str) -> list[TaskInfo]:
        """The tasks of a session, by id.

        Raises:
            UsageError: the cluster is not running, or has no such session.
        """
        from ._control._state import StateError
        from ._toolkit._introspect import task_info

        self._require_running("tasks()")
        assert self._state is not None
        try:
            ids = sorted(t.id for t in self._state.list_tasks(session_id))  # ListTask's copies lack events
            return [task_info(self._state.get_task(session_id, str(tid))) for tid in ids]
        except StateError:
            raise UsageError(f"no session {session_id!r} on this FakeCluster") from None

    def objects(self) -> list[ObjectInfo]:
        """Every object of the object cache (evicted ones included), by key.

        Raises:
            UsageError: the cluster is not running.
        """
        from ._toolkit._introspect import ObjectInfo

        self._require_running("objects()")
        assert self._cache is not None
        return [ObjectInfo(*row) for row in self._cache.store.objects()]

    def executors(self) -> list[ExecutorInfo]:
        """The cluster's executors now: id, state, session, app, backend, pid, task_id.

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("executors()")
        assert self._manager is not None
        return self._manager.executors()

    def instance_logs(self, executor_id: str) -> str:
        """The stdout and stderr an instance wrote so far (also once its executor is gone).

        Thread instances have none (empty); so does an instance not started yet.

        Args:
            executor_id: the id from :meth:`executors` (also ``ListExecutor``).

        Raises:
            UsageError: the cluster is not running.
            KeyError: no executor with that id ever ran on this cluster.
        """
        self._require_running("instance_logs()")
        assert self._manager is not None
        return self._manager.instance_logs(executor_id)

    def executors_of(self, session_id: str) -> list[str]:
        """Ids of every executor started for ``session_id``, oldest first, gone ones included.

        Pass them to :meth:`instance_logs`, which keeps an instance's output after its
        executor is released, until the cluster stops.

        Raises:
            UsageError: the cluster is not running.
        """
        self._require_running("executors_of()")
        assert self._manager is not None
        return self._manager.executors_of(session_id)

    def session_events(self, session_id: str) -> list[EventRecord]:
        """The session's events (code, message, creation_time): 1001 per failed bind, then 1002.

        Real Flame keeps a session whose instances cannot start open with its tasks pending
        (as the fake does); these events, with :meth:`instance_logs` of :meth:`executors_of`,
        say why.

        Raises:
            UsageError: the cluster is not running, or has no such session.
        """
        from ._control._state import StateError

        self._require_running("session_events()")
        assert self._state is not None
        try:
            return list(self._state.get_session(session_id).events)
        except StateError:
            raise UsageError(f"no session {session_id!r} on this FakeCluster") from None

    @property
    def abandoned_instances(self) -> tuple[AbandonedInstance, ...]:
        """Thread instances that :meth:`stop` left running inside user code (readable after stop).

        A thread cannot be killed, so ``stop()`` does not wait for one: it renames the thread
        ``flamepy-fake-abandoned-<id>`` and lists it here. Process instances are always killed.
        """
        return self._abandoned

    def __repr__(self) -> str:
        # Safe on a half-built object (an __init__ that raised): pytest shows reprs of locals.
        lifecycle = getattr(self, "_lifecycle", None)
        if lifecycle is None:
            return "<FakeCluster (not initialised)>"
        if lifecycle is _Lifecycle.RUNNING:
            return f"<FakeCluster running endpoint={self.endpoint} cache_endpoint={self._cache_endpoint}>"
        return f"<FakeCluster {lifecycle.value}>"


def _check_port(name: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{name} must be an integer in 0..65535 (0 picks a free port); got {port!r}")


def _dialable(host: str) -> str:
    """The address clients should dial for a server bound to ``host``."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if addr.is_unspecified:
        return "127.0.0.1" if addr.version == 4 else "::1"
    return str(addr)


def _bracket(host: str) -> str:
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def _probe_port(host: str, port: int, what: str) -> None:
    """Fail fast with a readable message when ``host:port`` cannot be bound."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Like the servers themselves: a port in TIME_WAIT (a restart) is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bare, port))
    except OSError as exc:
        raise ClusterStartError(_bind_message(what, host, port, exc)) from exc


def _bind_message(what: str, host: str, port: int, exc: BaseException | None) -> str:
    reason = "address already in use" if _in_use(exc) else (str(exc) if exc else "bind failed")
    hint = "choose another port, or 0 for a free one" if port else "check the host address"
    return f"cannot bind the {what} to {_bracket(host)}:{port}: {reason} ({hint})"


def _in_use(exc: BaseException | None) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    return exc is not None and "in use" in str(exc).lower()


def _collect(errors: list[BaseException], fn: Any) -> None:
    try:
        fn()
    except Exception as exc:  # keep stopping the other parts; re-raise the first error after
        errors.append(exc)
