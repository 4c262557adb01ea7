"""The running parts of one FakeCluster, started and stopped in their order.

:class:`~flamepy_fake.FakeCluster` owns a lifecycle (new, starting, running, stopped, and the
retirement the plugin runs off the test's path); :class:`ClusterParts` is what runs while it is
started: the state model, the session manager's gRPC server and its thread pool, the object
cache, the executor manager, the work directory and the HOME instances get. Start order: work
directory, state, session manager, cache, home, executors. Stop order: wake every waiter in the
state (long polls, watches), kill the instances, close the ports, join the RPC threads, remove
the files.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._addresses import bind_message, bracket, probe_port
from ._errors import ClusterStartError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from ._cache._server import FakeObjectCache
    from ._control._state import ClusterState
    from ._executors import ExecutorManager
    from ._options import ClusterOptions
    from ._toolkit._calls import CallLog
    from ._toolkit._faults import Faults
    from ._toolkit._introspect import AbandonedInstance

__all__ = ["ClusterParts", "Placement"]

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


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a cluster serves and keeps its files: ``FakeCluster``'s arguments besides its options."""

    host: str
    port: int
    cache_port: int
    advertise: str
    work_parent: Path | None
    cache_storage_dir: Path | None
    log_calls: bool


class ClusterParts:
    """What one started cluster runs; :meth:`start` builds it, :meth:`stop` tears it down.

    A part is ``None`` until started and again once stopped; the state, faults and home stay
    readable after :meth:`stop` (the cluster refuses their use by its lifecycle).
    """

    def __init__(self, placement: Placement, options: ClusterOptions, calls: CallLog) -> None:
        self.placement = placement
        self.options = options
        self.calls = calls
        self.state: ClusterState | None = None
        self.faults: Faults | None = None
        self.server: grpc.Server | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.cache: FakeObjectCache | None = None
        self.manager: ExecutorManager | None = None
        self.work_dir: Path | None = None
        self.home: Path | None = None
        self.bound_port = 0
        self.cache_endpoint: str | None = None
        self.abandoned: tuple[AbandonedInstance, ...] = ()

    @property
    def endpoint(self) -> str:
        """The session manager URL, once its server is bound."""
        return f"http://{bracket(self.placement.advertise)}:{self.bound_port}"

    def start(self) -> None:
        """Start every part in order; on an error the caller must :meth:`stop` what started.

        Raises:
            ClusterStartError: a port is taken, the work directory cannot be made, a part failed.
        """
        from flamepy_runner._for_fake import pb

        from ._control._state import ClusterState
        from ._home import make_home
        from ._toolkit._faults import Faults

        where = self.placement
        # Check the host and explicit ports before building anything: a clear message beats
        # grpc's (which also logs its own lines on stderr).
        for what, port in (("session manager", where.port), ("object cache", where.cache_port)):
            probe_port(where.host, port, what)
        storage = where.cache_storage_dir
        if storage is not None and storage.exists() and not storage.is_dir():
            raise ClusterStartError(
                f"cannot store cached objects in {storage}: it is a file, not a directory"
            )
        try:
            self.work_dir = Path(tempfile.mkdtemp(prefix="flamepy-fake-", dir=where.work_parent))
        except OSError as exc:
            parent = where.work_parent or tempfile.gettempdir()
            raise ClusterStartError(f"cannot create the cluster's work directory in {parent}: {exc}") from exc
        state_kwargs: dict[str, Any] = {"retry_limit": self.options.retry_limit}
        if self.options.default_resreq is not None:
            state_kwargs["default_resreq"] = self.options.default_resreq
        self.state = ClusterState(**state_kwargs)
        self.faults = Faults([m.name for m in pb.FRONTEND_SERVICE.methods])
        self._start_session_manager(self.state, self.faults)
        self.cache_endpoint = self._start_cache(self.faults)
        self.home = make_home(self.work_dir / "home", self.endpoint, self.cache_endpoint)
        self._start_executors(self.state, self.faults, self.work_dir, self.cache_endpoint)

    def _start_session_manager(self, state: ClusterState, faults: Faults) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        from flamepy_runner._for_fake import pb, rpc

        from ._control._frontend import FrontendServicer
        from ._limits import limit_requests
        from ._toolkit._intercept import intercepted

        where = self.placement
        self.pool = ThreadPoolExecutor(max_workers=_SERVER_THREADS, thread_name_prefix="flamepy-fake-rpc")
        interceptors = []
        if where.log_calls:
            from ._toolkit._calllog import GrpcCallLog

            interceptors.append(GrpcCallLog())
        self.server = grpc.server(self.pool, options=list(_GRPC_OPTIONS), interceptors=interceptors)
        servicer = intercepted(FrontendServicer(state), pb.FRONTEND_SERVICE, self.calls, faults)
        handler = rpc.generic_handler(pb.FRONTEND_SERVICE, servicer, wrap_unary_request=limit_requests)
        self.server.add_generic_rpc_handlers((handler,))
        try:
            bound = self.server.add_insecure_port(f"{bracket(where.host)}:{where.port}")
        except RuntimeError as exc:  # grpc raises instead of returning 0 in recent versions
            raise ClusterStartError(bind_message("session manager", where.host, where.port, exc)) from exc
        if not bound:
            raise ClusterStartError(bind_message("session manager", where.host, where.port, None))
        self.bound_port = bound
        self.server.start()

    def _start_cache(self, faults: Faults) -> str:
        from ._cache._server import FakeObjectCache

        where = self.placement
        cache = FakeObjectCache(
            where.host,
            where.cache_port,
            advertise_host=where.advertise,
            storage_dir=where.cache_storage_dir,
            max_memory=self.options.cache_max_memory,
            log_calls=where.log_calls,
            calls=self.calls,
            faults=faults,
        )
        try:
            cache.start()
        except Exception as exc:
            cache.stop()
            raise ClusterStartError(bind_message("object cache", where.host, where.cache_port, exc)) from exc
        self.cache = cache
        return str(cache.endpoint)

    def _start_executors(
        self, state: ClusterState, faults: Faults, work_dir: Path, cache_endpoint: str
    ) -> None:
        from ._executors import ExecutorManager
        from ._executors._hooks import ExecutorHooks

        options = self.options
        manager = ExecutorManager(
            state,
            frontend_endpoint=self.endpoint,
            cache_endpoint=cache_endpoint,
            executors=options.executors,
            flmrun=options.flmrun,
            max_executors=options.max_executors,
            policies=options.policies,
            work_dir=work_dir,
            home=self.home,
            hooks=ExecutorHooks(faults, self.calls),
            fork_server=options.fork_server,
            instance_imports=options.instance_imports,
        )
        self.manager = manager  # before start(): a half-started manager is stopped too
        manager.start()

    def stop(self) -> None:
        """Stop what was started, in order; every part is tried, the first error is raised after."""
        errors: list[BaseException] = []
        if self.state is not None:
            _collect(errors, self.state.stop)
        if self.manager is not None:
            manager = self.manager
            _collect(errors, manager.stop)
            self.abandoned = tuple(manager.abandoned)
            self.manager = None
        if self.server is not None:
            server, self.server = self.server, None
            _collect(errors, lambda: server.stop(_STOP_GRACE).wait())
        if self.cache is not None:
            _collect(errors, self.cache.stop)
            self.cache = None
        if self.pool is not None:
            pool, self.pool = self.pool, None
            _collect(errors, lambda: pool.shutdown(wait=True))
        if self.work_dir is not None:
            work_dir, self.work_dir = self.work_dir, None
            shutil.rmtree(work_dir, ignore_errors=True)
        if errors:
            raise errors[0]


def _collect(errors: list[BaseException], fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # keep stopping the other parts; re-raise the first error after
        errors.append(exc)
