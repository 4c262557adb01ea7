"""Runner: package the project, register a temporary application, serve objects, clean up.

The lifecycle follows runner-wire.md: look up the application (reuse it, or refuse with
``fail_if_exists``), fetch the template (``flmrun`` unless ``runner.template`` says otherwise),
package the project into ``dist/<name>.tar.gz``, upload it to the package storage, register
``<name>`` cloned from the template with the package URL; on close, close the sessions,
unregister, delete ``<name>/*`` from the cache, the uploaded package and the local archive. A
Runner that found the application registered cleans none of that up.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from . import _sigterm
from ._application import application_spec, template_of
from ._cache import CacheClient
from ._cache_wire import ObjectRef
from ._config import FlameConfig
from ._exceptions import AlreadyExistsError, UsageError, WaitTimeoutError
from ._frontend import FrontendClient
from ._future import ObjectFuture
from ._packaging import DEFAULT_MAX_PACKAGE_SIZE, Package, PackageCache, build_package
from ._service import RunnerService
from ._storage import PackageStorage, open_storage
from ._tasks import TaskWatcher

__all__ = ["DEFAULT_CLOSE_TIMEOUT", "Runner"]

logger = logging.getLogger(__name__)

#: Seconds :meth:`Runner.close` waits for calls still in flight before closing their sessions.
DEFAULT_CLOSE_TIMEOUT = 30.0


class Runner:
    """Run Python functions, classes and instances of this project on a Flame cluster.

    Creating a Runner packages ``project_dir`` (the current directory by default) into
    ``dist/<name>.tar.gz``, uploads it to the package storage and registers the application
    ``name`` cloned from the ``flmrun`` template; :meth:`service` then exposes objects as
    remote services. Use it as a context manager, or call :meth:`close`.

    Args:
        name: the application and package name.
        fail_if_exists: raise :class:`AlreadyExistsError` when ``name`` is already registered;
            by default the existing application is reused: :meth:`close` then closes only
            the sessions this Runner opened and deletes only the objects it created (flamepy
            0.6.0 closes nothing, which leaves the owner unable to unregister).
        dependencies: pip requirements written into a generated ``pyproject.toml`` when the
            project has none.
        python_version: the executor's Python version (``FLAME_PYTHON_VERSION``).
        config: the cluster to use; :meth:`FlameConfig.load` (``~/.flame/flame.yaml`` and the
            environment) by default.
        project_dir: the directory to package; the current working directory by default.
        close_timeout: seconds :meth:`close` waits for calls in flight.
        max_package_size: largest package in bytes (100 MiB by default).
        package_cache: build the package through this :class:`PackageCache` instead: an
            unchanged project reuses the archive built before (in the cache's directory, not
            ``dist/``), which the cache owns; the upload is still this Runner's own.

    While a Runner is open in a program that leaves SIGTERM to Python's default (which would
    end the process without any cleanup), the first SIGTERM raises ``SystemExit(143)`` in the
    main thread instead, so ``with`` blocks unwind and the Runner cleans up; a second SIGTERM
    ends the process at once.

    Raises:
        AlreadyExistsError: ``name`` is registered and ``fail_if_exists`` is true.
        NotFoundError: the template application is not registered.
        ConfigError: no package storage is configured, or it is misconfigured.
        PackageError: the project cannot be packaged or the package cannot be stored.
        ClusterError: the cluster refused a request (the subclass says how).
    """

    def __init__(
        self,
        name: str,
        fail_if_exists: bool = False,
        dependencies: Sequence[str] | None = None,
        python_version: str | None = None,
        *,
        config: FlameConfig | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_package_size: int = DEFAULT_MAX_PACKAGE_SIZE,
        package_cache: PackageCache | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise UsageError(f"Runner name must be a non-empty string, got {name!r}")
        if close_timeout < 0:
            raise UsageError(f"close_timeout must be >= 0, got {close_timeout}")
        self.name = name
        self.config = FlameConfig.load() if config is None else config
        self.project_dir = Path(os.getcwd() if project_dir is None else project_dir)
        self.close_timeout = close_timeout
        self._fail_if_exists = fail_if_exists
        self._dependencies = list(dependencies) if dependencies is not None else None
        self._python_version = python_version
        self._max_package_size = max_package_size
        self._package_cache = package_cache
        self._lock = threading.Lock()
        self._closed = False
        self._registered = False
        self._services: list[RunnerService] = []
        self._put_keys: list[str] = []  # put_object's keys: what a reusing Runner deletes
        self._inflight: set[ObjectFuture] = set()
        self._watcher: TaskWatcher | None = None
        self._storage: PackageStorage | None = None
        self._package: Package | None = None
        self._holds_sigterm = False
        self.frontend = FrontendClient(self.config)
        self.cache = CacheClient(self.config)
        _sigterm.retain()
        self._holds_sigterm = True
        try:
            self._start()
        except BaseException:
            self._undo_start()
            self._release()
            self._closed = True
            raise

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("registered" if self._registered else "reusing")
        return f"<Runner {self.name!r} on {self.config.endpoint}: {state}, {len(self._services)} services>"

    # -- start -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self.frontend.get_application(self.name) is not None:
            if self._fail_if_exists:
                raise AlreadyExistsError(
                    f"Application '{self.name}' already exists. Set fail_if_exists=False to reuse it.",
                    endpoint=self.config.endpoint,
                )
            logger.info(
                "Runner %r: application already registered; reusing it (close() cleans up only "
                "this Runner's sessions and objects)",
                self.name,
            )
            return
        template = template_of(self.frontend, self.config)
        self._storage = open_storage(self.config, self.name, cache=self.cache)
        build = build_package if self._package_cache is None else self._package_cache.build
        self._package = build(
            self.name,
            self.project_dir,
            excludes=self.config.excludes,
            dependencies=self._dependencies,
            max_size=self._max_package_size,
        )
        url = self._storage.upload(self._package.path)
        try:
            self.frontend.register_application(
                self.name, application_spec(template, self.name, url, self._python_version)
            )
        except AlreadyExistsError:
            if self._fail_if_exists:
                raise
            # Registered by someone else between our lookup and now: theirs wins, ours is reused.
            logger.info("Runner %r: application registered concurrently; reusing it", self.name)
            self._storage.close()
            self._storage = None
            self._package = None
            return
        self._registered = True
        logger.info("Runner %r: registered with package %s", self.name, url)

    def _undo_start(self) -> None:
        """After a failed start: remove what this start created (best effort, logged)."""
        if self._storage is not None and self._package is not None:
            self._quietly("delete the uploaded package", self._storage.delete)
        self._remove_package_file()

    # -- services and calls ----------------------------------------------------------------------

    def service(
        self,
        execution_object: Any,
        stateful: bool | None = None,
        autoscale: bool | None = None,
        warmup: int = 0,
        resreq: Any = None,
    ) -> RunnerService:
        """Serve ``execution_object`` (a function, class or instance) in a new session.

        Defaults (the setup guide's table): functions autoscale, classes and instances run a
        fixed number of instances (``warmup``, at least one); nothing is stateful unless
        ``stateful=True``, which only an instance accepts: its changes are written back after
        every call and seen by the next call, on whichever instance it lands.

        Args:
            execution_object: the function, class or instance to serve.
            stateful: keep the instance's state across calls (instances only).
            autoscale: scale instances with the load; ``warmup`` is then the minimum.
            warmup: instances started with the session (fixed services: the count, at least 1).
            resreq: a :class:`ResourceRequirement` (ours or flamepy's) or ``"cpu=1,mem=1g"``.

        Raises:
            ValueError: an unsupported combination (``stateful=True`` on a class or function,
                a negative ``warmup``).
            UsageError: the Runner is closed, or the object cannot be pickled.
        """
        self._check_open(f"cannot create a service of {execution_object!r}")
        svc = RunnerService(
            self, execution_object, stateful=stateful, autoscale=autoscale, warmup=warmup, resreq=resreq
        )
        with self._lock:
            self._services.append(svc)
        return svc

    @property
    def services(self) -> list[RunnerService]:
        """The services created by this Runner, in order."""
        return list(self._services)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def package(self) -> Package | None:
        """The package this Runner built or took from its ``package_cache`` (None when it
        reused a registered application)."""
        return self._package

    @property
    def registered(self) -> bool:
        """Whether this Runner registered the application (and so cleans it up on close)."""
        return self._registered

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise UsageError(f"{what}: Runner '{self.name}' is closed")

    def _fetch(self, future: ObjectFuture, ref: ObjectRef) -> Any:
        if self._closed:
            raise UsageError(
                f"cannot fetch the result of task {future.task_id} of session '{future.session_id}': "
                f"Runner '{self.name}' is closed and its objects are deleted"
            )
        return self.cache.get_object(ref)

    def _track(self, future: ObjectFuture, on_done: Callable[[Any, BaseException | None], None]) -> None:
        with self._lock:
            if self._watcher is None:
                self._watcher = TaskWatcher(self.frontend)
            watcher = self._watcher
            self._inflight.add(future)

        def done(task: Any, error: BaseException | None) -> None:
            with self._lock:
                self._inflight.discard(future)
            on_done(task, error)

        assert future.task_id is not None
        watcher.track(future.session_id, future.task_id, done)

    # -- many futures at once --------------------------------------------------------------------

    def get(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> list[Any]:
        """The objects of ``futures``, in order (waiting up to ``timeout`` seconds in all)."""
        futures = list(futures)
        self._wait_all(futures, timeout)
        return [f.get(0) for f in futures]

    def ref(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> list[ObjectRef]:
        """The ObjectRefs of ``futures``, in order (waiting up to ``timeout`` seconds in all)."""
        futures = list(futures)
        self._wait_all(futures, timeout)
        return [f.ref(0) for f in futures]

    def wait(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> None:
        """Wait until every future is done; then raise the first failure, if any."""
        futures = list(futures)
        self._wait_all(futures, timeout)
        for f in futures:
            f.wait(0)

    def select(self, futures: Iterable[ObjectFuture], timeout: float | None = None) -> Iterator[ObjectFuture]:
        """Yield ``futures`` in the order they complete (failed ones too: ``get()`` raises).

        Raises:
            WaitTimeoutError: ``timeout`` seconds passed before all were done.
        """
        futures = list(futures)
        try:
            yield from concurrent.futures.as_completed(futures, timeout=timeout)  # type: ignore[misc]
        except concurrent.futures.TimeoutError:
            left = sum(1 for f in futures if not f.done())
            raise WaitTimeoutError(
                f"{left} of {len(futures)} futures were not done within {timeout} s"
            ) from None

    @staticmethod
    def _wait_all(futures: list[ObjectFuture], timeout: float | None) -> None:
        _, pending = concurrent.futures.wait(futures, timeout=timeout)
        if pending:
            raise WaitTimeoutError(
                f"{len(pending)} of {len(futures)} futures were not done within {timeout} s"
            )

    def put_object(self, obj: Any) -> ObjectRef:
        """Store ``obj`` under ``<name>/shared`` in the cache; pass the ref to any call."""
        self._check_open("cannot put an object")
        ref = self.cache.put_object(f"{self.name}/shared", obj)
        with self._lock:
            self._put_keys.append(ref.key)
        return ref

    # -- close -----------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Wait for calls in flight (up to ``timeout``, ``close_timeout`` by default), then
        clean up (idempotent).

        A Runner that registered the application closes its sessions, unregisters it, deletes
        ``<name>/*`` from the cache, the uploaded package and ``dist/<name>.tar.gz``. A Runner
        that reused it closes the sessions it opened and deletes their objects and the ones its
        :meth:`put_object` made, never the application or anyone else's. Cleanup
        failures are logged as warnings, never raised, so that a ``with`` block's own exception
        is the one that propagates. Leaving the ``with`` block because of SIGTERM (see the class
        docstring) does not wait for calls in flight.

        Raises:
            UsageError: ``timeout`` is negative.
        """
        if timeout is not None and timeout < 0:
            raise UsageError(f"close timeout must be >= 0, got {timeout}")
        self._close(wait=True, timeout=self.close_timeout if timeout is None else timeout)

    def _close(self, *, wait: bool, timeout: float = 0.0) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            inflight = list(self._inflight)
        if inflight and wait:
            _, pending = concurrent.futures.wait(inflight, timeout=timeout)
            if pending:
                logger.warning(
                    "Runner %r: %d calls still running after %.1f s; closing their sessions anyway",
                    self.name,
                    len(pending),
                    timeout,
                )
        # Calls still running fail now, with one clear reason, before their sessions go away.
        self._stop_watching()
        if self._registered:
            for svc in self._services:
                self._quietly(f"close session '{svc.session_id}'", svc.close)
            self._quietly(
                f"unregister application '{self.name}'", self.frontend.unregister_application, self.name
            )
            self._quietly(
                f"delete '{self.name}/*' from the cache", self.cache.delete_objects, f"{self.name}/*"
            )
            if self._storage is not None:
                self._quietly("delete the uploaded package", self._storage.delete)
            self._remove_package_file()
        else:
            # Someone else's application: clean up what this Runner made, and nothing else.
            for svc in self._services:
                self._quietly(f"close session '{svc.session_id}'", svc.close)
                where = f"{self.name}/{svc.session_id}"
                self._quietly(f"delete '{where}' from the cache", self.cache.delete_objects, where)
            for key in self._put_keys:
                self._quietly(f"delete '{key}' from the cache", self.cache.delete_objects, key)
        self._release()

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.close(
                UsageError(
                    f"Runner '{self.name}' was closed before the task finished "
                    f"(close() waits at most close_timeout={self.close_timeout} s for calls in flight)"
                )
            )

    def _release(self) -> None:
        if self._holds_sigterm:
            self._holds_sigterm = False
            _sigterm.release()
        self._stop_watching()
        for closer in (
            self._storage.close if self._storage is not None else None,
            self.cache.close,
            self.frontend.close,
        ):
            if closer is not None:
                self._quietly("release a connection", closer)

    def _remove_package_file(self) -> None:
        package = self._package
        if package is None or self._package_cache is not None:  # the cache's, not ours
            return
        with contextlib.suppress(FileNotFoundError):
            package.path.unlink()
        with contextlib.suppress(OSError):  # only when empty: it may hold the user's own files
            package.path.parent.rmdir()

    def _quietly(self, what: str, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            logger.warning("Runner %r: could not %s: %s", self.name, what, exc)

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close(wait=not isinstance(exc, _sigterm.Terminated), timeout=self.close_timeout)
