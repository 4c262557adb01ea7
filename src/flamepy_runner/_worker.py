"""Our implementation of the ``flmrun`` executor contract (what ``flamepy.runner.runpy`` does).

An instance serves one session binding through three hooks, driven by the ``flame.v1.Instance``
service: enter once, run tasks one at a time, leave once. :class:`RunnerWorker` implements
the hooks for Runner sessions (payloads in :mod:`flamepy_runner._wire`); :class:`InstanceServicer`
turns any such hook object into the gRPC servicer, with flamepy's error convention (every
exception becomes ``return_code -1`` with ``str(exc)`` as the message, the gRPC status stays
OK).

Two ways to run it:

* in-process (the fake cluster's thread backend): build ``RunnerWorker(cache)`` and call the
  servicer methods directly, one worker per executor;
* as a program: ``python -m flamepy_runner._worker`` serves on ``unix://$FLAME_INSTANCE_ENDPOINT``
  with the cache and cluster taken from the environment (``FLAME_CACHE_ENDPOINT``,
  ``FLAME_ENDPOINT``, see :meth:`FlameConfig.load`).

While a hook runs, :func:`current_config` returns the configuration of the cluster that runs
it, so code inside a task (a nested Runner, say) can reach its own cluster even when several
fake clusters share one process. The value is a context variable: threads the task starts
itself do not inherit it.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import faulthandler
import inspect
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import bson
import grpc

from . import _wire
from ._cache import CacheClient, ObjectRef
from ._config import FlameConfig
from ._proto import pb, rpc

__all__ = [
    "InstanceService",
    "InstanceServicer",
    "RunnerWorker",
    "current_config",
    "main",
    "serve",
]

logger = logging.getLogger(__name__)

#: References resolved concurrently per task, as flamepy's executor does.
MAX_PARALLEL_RESOLVE = 8
_REF_KEYS = frozenset({"endpoint", "key", "version"})
#: Seconds the program may take to exit once asked to stop, before it forces its exit.
_EXIT_DEADLINE = 10.0
_WAIT_SLICE = 0.5  # seconds the main thread waits at a time for SIGTERM or SIGINT

_current: contextvars.ContextVar[FlameConfig | None] = contextvars.ContextVar(
    "flamepy_runner_current_config", default=None
)


def current_config() -> FlameConfig | None:
    """The configuration of the cluster running the current task, or None outside a task.

    Returns:
        The :class:`FlameConfig` the executing instance was given, while one of its hooks runs
        on this thread; ``None`` elsewhere.
    """
    return _current.get()


@contextlib.contextmanager
def _running_under(config: FlameConfig | None) -> Iterator[None]:
    token = _current.set(config)
    try:
        yield
    finally:
        _current.reset(token)


class InstanceService(Protocol):
    """The three hooks of an instance (what a FlameService implements)."""

    def on_session_enter(self, context: pb.SessionContext) -> None:
        """Start serving a session; raise to fail the bind."""

    def on_task_invoke(self, context: pb.TaskContext) -> bytes | None:
        """Run one task and return its output; raise to fail the task."""

    def on_session_leave(self) -> None:
        """Stop serving the session."""


class InstanceServicer:
    """The ``flame.v1.Instance`` servicer over an :class:`InstanceService`.

    Args:
        service: the hooks to call.
        config: the cluster configuration exposed through :func:`current_config` while a
            hook runs.
        log_failures: log each failing hook with its traceback at WARNING (the program does;
            in-process instances only log at DEBUG, the caller gets the message anyway).
    """

    def __init__(
        self, service: InstanceService, config: FlameConfig | None = None, *, log_failures: bool = False
    ) -> None:
        self.service = service
        self.config = config
        self._level = logging.WARNING if log_failures else logging.DEBUG

    def _failed(self, what: str, exc: BaseException) -> None:
        logger.log(self._level, "%s failed: %s", what, exc, exc_info=True)

    def OnSessionEnter(self, request: pb.SessionContext, context: Any = None) -> pb.Result:
        """Call ``on_session_enter``; any exception becomes ``Result{-1, str(exc)}``."""
        try:
            with _running_under(self.config):
                self.service.on_session_enter(request)
        except Exception as exc:
            self._failed("OnSessionEnter", exc)
            return pb.Result(return_code=-1, message=str(exc))
        return pb.Result(return_code=0)

    def OnTaskInvoke(self, request: pb.TaskContext, context: Any = None) -> pb.TaskResult:
        """Call ``on_task_invoke``; output stays unset for None, exceptions give ``-1``."""
        try:
            with _running_under(self.config):
                output = self.service.on_task_invoke(request)
        except Exception as exc:
            self._failed(f"task {request.task_id}", exc)
            details = getattr(self.service, "failure_output", None)
            output = None if details is None else details(exc)
            if output is None:
                return pb.TaskResult(return_code=-1, message=str(exc))
            return pb.TaskResult(return_code=-1, message=str(exc), output=output)
        if output is None:
            return pb.TaskResult(return_code=0)
        return pb.TaskResult(return_code=0, output=output)

    def OnSessionLeave(self, request: pb.EmptyRequest, context: Any = None) -> pb.Result:
        """Call ``on_session_leave``; any exception becomes ``Result{-1, str(exc)}``."""
        try:
            with _running_under(self.config):
                self.service.on_session_leave()
        except Exception as exc:
            self._failed("OnSessionLeave", exc)
            return pb.Result(return_code=-1, message=str(exc))
        return pb.Result(return_code=0)


def _as_ref(value: Any) -> ObjectRef | None:
    """The ObjectRef ``value`` stands for (an instance, ours or flamepy's, or BSON bytes), else None."""
    if isinstance(value, ObjectRef):
        return value
    if _wire.is_object_ref(value):
        return ObjectRef(value.endpoint, value.key, int(value.version))
    if isinstance(value, (bytes, bytearray)) and len(value) >= 5:
        # Same acceptance as flamepy: a BSON document whose fields fit an ObjectRef.
        try:
            doc = bson.decode(bytes(value))
        except Exception:
            return None
        if not {"endpoint", "key"} <= doc.keys() or not doc.keys() <= _REF_KEYS:
            return None
        if not isinstance(doc["endpoint"], str) or not isinstance(doc["key"], str):
            return None
        return ObjectRef(doc["endpoint"], doc["key"], int(doc.get("version", 0)))
    return None


class RunnerWorker:
    """The Runner executor: loads the session's execution object and runs RunnerRequests.

    Behaviour (the ``flmrun`` contract, see runner-wire.md):

    * enter: ``common_data`` is the BSON ObjectRef of a cached, cloudpickled RunnerContext; the
      execution object is instantiated when it is a class;
    * task: the input is a pickled RunnerRequest; ObjectRef arguments (instances or BSON bytes)
      are fetched from the cache, up to 8 at a time; the result is put under
      ``<app>/<session_id>`` and the task output is that ObjectRef's BSON; a stateful context is
      re-read before and written back (``update_object``) after each task;
    * leave: forgets the session.

    Args:
        cache: the object cache client (shared, thread-safe; the worker does not close it).
    """

    def __init__(self, cache: CacheClient) -> None:
        self._cache = cache
        self._app: str | None = None
        self._session_id: str | None = None
        self._common_ref: ObjectRef | None = None
        self._context: Any = None
        self._target: Any = None
        self._lock = threading.Lock()  # tasks are sequential; this guards misuse, not contention
        self._call_failure: BaseException | None = None  # what the last call raised, if it did

    def failure_output(self, exc: BaseException) -> bytes | None:
        """A failed task's output: the type, text and traceback (``_wire.encode_failure``) of an
        exception the execution object raised; None for any other failure (bad input, an
        argument that cannot be loaded), which stock runpy too reports by its message alone."""
        if exc is not self._call_failure:
            return None
        self._call_failure = None
        return _wire.encode_failure(exc)

    # -- hooks ----------------------------------------------------------------------------------

    def on_session_enter(self, context: pb.SessionContext) -> None:
        """Load the RunnerContext named by ``common_data`` and prepare the execution object.

        Raises:
            ValueError: no common data, or it does not hold a RunnerContext.
        """
        with self._lock:
            if not context.HasField("common_data"):
                raise ValueError("Common data is None in session context")
            ref = _as_ref(context.common_data)
            if ref is None:
                raise ValueError("common data is not the BSON ObjectRef of a RunnerContext")
            self._app = context.application.name
            self._session_id = context.session_id
            self._common_ref = ref
            self._install(self._load_context())

    def on_task_invoke(self, context: pb.TaskContext) -> bytes:
        """Run one RunnerRequest and return the BSON ObjectRef of its cached result.

        Raises:
            ValueError: bad input, unknown method, or an argument reference that cannot be read.
            Exception: whatever the invoked code raises.
        """
        with self._lock:
            if self._common_ref is None or self._target is None:
                raise ValueError("no session: OnSessionEnter has not succeeded on this instance")
            if not context.HasField("input"):
                raise ValueError("Task input is None")
            if self._context.stateful:
                self._install(self._load_context())
            request = _wire.loads(context.input, prefer_ours=True)
            if not _wire.is_runner_request(request):
                raise ValueError(f"task input is not a RunnerRequest but {type(request).__name__}")
            method, args, kwargs = self._check_request(request)
            # A Runner call names its failure record for the envelope (stock runpy writes it to
            # the cache); here the failure goes into the task's output, so the envelope is told
            # nothing and writes nothing.
            kwargs.pop(_wire.FAILURE_KEYWORD, None)
            args, kwargs = self._resolve(args, kwargs)
            result = self._call(method, args, kwargs)
            if self._context.stateful:
                self._save_state()
            ref = self._cache.put_object(f"{self._app}/{self._session_id}", result)
            return ref.encode()

    def on_session_leave(self) -> None:
        """Drop the session's objects."""
        with self._lock:
            self._app = self._session_id = None
            self._common_ref = None
            self._context = self._target = None

    # -- helpers --------------------------------------------------------------------------------

    def _load_context(self) -> Any:
        assert self._common_ref is not None
        payload = self._cache.get_object(self._common_ref)
        if not isinstance(payload, (bytes, bytearray)):
            raise ValueError(
                f"common data object holds {type(payload).__name__}, not a pickled RunnerContext"
            )
        ctx = _wire.loads(bytes(payload), prefer_ours=True)
        if not _wire.is_runner_context(ctx):
            raise ValueError(f"common data holds {type(ctx).__name__}, not a RunnerContext")
        return ctx

    def _install(self, ctx: Any) -> None:
        target = ctx.execution_object
        if target is None:
            raise ValueError("the RunnerContext has no execution object")
        if inspect.isclass(target):
            target = target()
        self._context = ctx
        self._target = target

    @staticmethod
    def _check_request(request: Any) -> tuple[str | None, tuple[Any, ...], dict[str, Any]]:
        method, args, kwargs = request.method, request.args, request.kwargs
        if method is not None and not isinstance(method, str):
            raise ValueError(f"RunnerRequest.method must be a string or None, got {type(method).__name__}")
        if args is not None and not isinstance(args, (tuple, list)):
            raise ValueError(f"RunnerRequest.args must be a tuple or list, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ValueError(f"RunnerRequest.kwargs must be a dict, got {type(kwargs).__name__}")
        return method, tuple(args or ()), dict(kwargs or {})

    def _resolve(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        wanted: dict[int | str, ObjectRef] = {}
        for i, value in enumerate(args):
            ref = _as_ref(value)
            if ref is not None:
                wanted[i] = ref
        for name, value in kwargs.items():
            ref = _as_ref(value)
            if ref is not None:
                wanted[name] = ref
        if not wanted:
            return args, kwargs
        found: dict[int | str, Any] = {}
        if len(wanted) == 1:
            ((slot, ref),) = wanted.items()
            found[slot] = self._fetch(slot, ref)
        else:
            with ThreadPoolExecutor(min(len(wanted), MAX_PARALLEL_RESOLVE)) as pool:
                futures = {slot: pool.submit(self._fetch, slot, ref) for slot, ref in wanted.items()}
                for slot, future in futures.items():
                    found[slot] = future.result()
        new_args = tuple(found.get(i, v) for i, v in enumerate(args))
        new_kwargs = {k: found.get(k, v) for k, v in kwargs.items()}
        return new_args, new_kwargs

    def _fetch(self, slot: int | str, ref: ObjectRef) -> Any:
        try:
            return self._cache.get_object(ref)
        except Exception as exc:
            where = f"argument {slot}" if isinstance(slot, int) else f"keyword argument {slot!r}"
            raise ValueError(f"cannot fetch {where} ({ref.key}) from the cache: {exc}") from exc

    def _call(self, method: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = self._target
        if method is None:
            if not callable(target):
                raise ValueError(f"the execution object ({type(target).__name__}) is not callable")
            func = target
        else:
            func = getattr(target, method, None)
            if func is None:
                raise ValueError(f"the execution object ({type(target).__name__}) has no method {method!r}")
            if not callable(func):
                raise ValueError(f"attribute {method!r} of the execution object is not callable")
        self._call_failure = None
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            self._call_failure = exc  # the failure the envelope reports under stock runpy
            raise

    def _save_state(self) -> None:
        assert self._common_ref is not None
        ctx = self._context
        updated = _wire.RunnerContext(
            execution_object=self._target,
            stateful=ctx.stateful,
            autoscale=ctx.autoscale,
            warmup=ctx.warmup,
            min_instances=getattr(ctx, "min_instances", 0),
            max_instances=getattr(ctx, "max_instances", None),
        )
        self._cache.update_object(self._common_ref, _wire.dumps(updated))
        self._context = updated


# -- the program --------------------------------------------------------------------------------


def serve(
    service: InstanceService,
    endpoint: str,
    *,
    config: FlameConfig | None = None,
    when_listening: Callable[[], object] | None = None,
) -> None:
    """Serve ``flame.v1.Instance`` on the unix socket ``endpoint`` until SIGTERM or SIGINT.

    Args:
        service: the hooks to serve.
        endpoint: the socket path (the bare path, as in ``FLAME_INSTANCE_ENDPOINT``).
        config: exposed through :func:`current_config` while hooks run.
        when_listening: run in a daemon thread once the socket accepts connections.

    Raises:
        RuntimeError: the socket cannot be bound.
    """
    stop = threading.Event()
    server = grpc.server(ThreadPoolExecutor(max_workers=10, thread_name_prefix="instance"))
    server.add_generic_rpc_handlers(
        (rpc.generic_handler(pb.INSTANCE_SERVICE, InstanceServicer(service, config, log_failures=True)),)
    )
    if server.add_insecure_port(f"unix://{endpoint}") == 0:
        raise RuntimeError(f"cannot listen on unix socket {endpoint}")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # The kernel may deliver SIGTERM to any thread (one of gRPC's, say); Python runs the handler
    # only when the main thread next runs bytecode. The C-level handler also writes to this
    # pipe whichever thread it ran on, so the main thread, selecting on it, wakes at once.
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    previous_wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    server.start()
    if when_listening is not None:
        threading.Thread(target=when_listening, name="instance-warm-up", daemon=True).start()
    try:
        while not stop.is_set():
            # In slices all the same: a signal that came before the handler was set, or a pipe
            # that filled up, still gets seen.
            select.select([wake_read], [], [], _WAIT_SLICE)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 512)
    finally:
        signal.set_wakeup_fd(previous_wakeup)
        os.close(wake_read)
        os.close(wake_write)
        # Being told to stop must end the process even if a hook, a gRPC thread or interpreter
        # shutdown hangs: a daemon timer forces the exit (after dumping every thread's stack,
        # so the hang can be diagnosed from the instance log).
        watchdog = threading.Timer(_EXIT_DEADLINE, _force_exit)
        watchdog.daemon = True
        watchdog.start()
        server.stop(grace=1).wait()


def _force_exit() -> None:
    logger.error("shutdown took longer than %.0f s; forcing the exit", _EXIT_DEADLINE)
    faulthandler.dump_traceback(all_threads=True)
    os._exit(0)


def _log_level(text: str | None) -> int:
    levels = {
        "DEBUG": logging.DEBUG,
        "INFO": logging.INFO,
        "WARN": logging.WARNING,
        "WARNING": logging.WARNING,
        "ERROR": logging.ERROR,
        "CRITICAL": logging.CRITICAL,
    }
    return levels.get((text or "").strip().upper(), logging.INFO)


def main() -> int:
    """Entry point of ``python -m flamepy_runner._worker``.

    Returns:
        The exit status (2 when ``FLAME_INSTANCE_ENDPOINT`` is missing).
    """
    logging.basicConfig(
        level=_log_level(os.environ.get("FLAME_LOG")),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    endpoint = os.environ.get("FLAME_INSTANCE_ENDPOINT")
    if not endpoint:
        logger.error("FLAME_INSTANCE_ENDPOINT is not set; nothing to serve on")
        return 2
    config = FlameConfig.load()
    with CacheClient(config) as cache:
        # Connect to the cache while the executor connects to us (not before we listen: that
        # would slow the start by as much): OnSessionEnter's first download then finds the
        # connection open or opening.
        serve(RunnerWorker(cache), endpoint, config=config, when_listening=cache.warm_up)
    return 0


def exit_now(code: int) -> None:
    """End the instance process once it has served: flush, run ``atexit`` handlers, ``_exit``.

    Told to stop, the instance has nothing left to do, and interpreter finalization (tearing
    down gRPC's core, pyarrow and every module) costs ~45 ms of CPU per instance, paid on the
    cluster's machine while the next test starts. Skipping it loses nothing a task can rely
    on: output is flushed and ``atexit`` handlers (``logging.shutdown``, ``weakref.finalize``)
    still run, as on a normal exit.
    """
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    # Run main() of the module under its real name: task code imports
    # ``flamepy_runner._worker`` and must see the same current_config() as the server.
    from flamepy_runner._worker import exit_now as _exit_now
    from flamepy_runner._worker import main as _main

    _exit_now(_main())
