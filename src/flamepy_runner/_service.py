"""RunnerService: one Flame session that serves a function, class or instance.

A service pickles its execution object once into the session's common data (a cached
``RunnerContext``), opens the session, and turns every call into a task whose input is a pickled
``RunnerRequest`` (see runner-wire.md). Calls return :class:`~flamepy_runner.ObjectFuture`\\ s
that the Runner's task watcher completes; nothing blocks while tasks run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import secrets
import string
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import cloudpickle

from . import _wire
from ._cache_wire import ObjectRef
from ._envelope import FAILURE_KEYWORD, enclose, new_failure_id, read_failure
from ._exceptions import RemoteError, UsageError
from ._future import ObjectFuture
from ._proto import pb
from ._reference import check_importable
from ._tasks import task_error_message
from ._types import ResourceRequirement, SessionContext

if TYPE_CHECKING:
    from pathlib import Path

    from ._cache import CacheClient
    from ._frontend import FrontendClient

__all__ = ["MAX_TASK_INPUT", "RunnerService", "ServiceKind", "ServiceOwner", "service_kind"]

logger = logging.getLogger(__name__)

#: Largest task input sent inline. Flame's Frontend refuses gRPC messages over 4 MiB; the rest
#: of the request (ids, framing) fits easily in the margin. Larger arguments travel by reference.
MAX_TASK_INPUT = 4 * 1024 * 1024 - 64 * 1024
_ID_ALPHABET = string.ascii_letters + string.digits
_FLAMEPY_SESSION_CONTEXT = ("flamepy.runner.types", "SessionContext")
_SUCCEED = pb.TaskState.Value("Succeed")


class ServiceOwner(Protocol):
    """What a service uses of the :class:`~flamepy_runner.Runner` that made it (named here, so
    this module does not import the Runner's)."""

    name: str
    project_dir: Path
    frontend: FrontendClient
    cache: CacheClient

    @property
    def registered(self) -> bool: ...

    def _check_open(self, what: str) -> None: ...

    def _fetch(self, future: ObjectFuture, ref: ObjectRef) -> Any: ...

    def _track(self, future: ObjectFuture, on_done: Callable[[Any, BaseException | None], None]) -> None: ...


_FAILED = pb.TaskState.Value("Failed")


class ServiceKind:
    """What an execution object is, which decides the defaults (the guide's table)."""

    FUNCTION = "function"
    CLASS = "class"
    INSTANCE = "instance"


def service_kind(obj: Any) -> str:
    """``function`` for any non-class callable, ``class`` for a class, ``instance`` otherwise."""
    if inspect.isclass(obj):
        return ServiceKind.CLASS
    if callable(obj):
        return ServiceKind.FUNCTION
    return ServiceKind.INSTANCE


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{service_kind(obj)} {name}"


def _decide(
    obj: Any, stateful: bool | None, autoscale: bool | None, warmup: int
) -> tuple[bool, bool, int, int | None]:
    """(stateful, autoscale, min_instances, max_instances) per the guide's defaults table."""
    kind = service_kind(obj)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    for name, value in (("stateful", stateful), ("autoscale", autoscale)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be True, False or None, got {value!r}")
    if stateful and kind == ServiceKind.CLASS:
        raise ValueError(
            f"stateful=True is not supported for a class ({_describe(obj)}): each instance of a class "
            "service is built fresh by the executor, so there is no state to keep. Pass an instance "
            "instead, e.g. runner.service(MyClass(), stateful=True)."
        )
    if stateful and kind == ServiceKind.FUNCTION:
        raise ValueError(
            f"stateful=True is not supported for a function ({_describe(obj)}): only an instance has "
            "state to keep. Pass an instance instead."
        )
    is_stateful = bool(stateful)
    scales = (kind == ServiceKind.FUNCTION) if autoscale is None else autoscale
    if scales:
        return is_stateful, True, warmup, None
    fixed = max(warmup, 1)
    return is_stateful, False, fixed, fixed


def _session_id_for(app: str, obj: Any) -> str:
    ctx = getattr(obj, "_session_context", None)
    if ctx is None:
        return f"{app}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    is_flamepy = (type(ctx).__module__, type(ctx).__qualname__) == _FLAMEPY_SESSION_CONTEXT
    if isinstance(ctx, SessionContext) or is_flamepy:
        if ctx.application_name:
            logger.debug("SessionContext application_name: %s", ctx.application_name)
        if ctx.session_id:
            return str(ctx.session_id)
    else:
        logger.warning(
            "_session_context of %s is a %s, not a SessionContext; ignoring it",
            _describe(obj),
            type(ctx).__name__,
        )
    return f"{app}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))


def _remote_class(type_name: str) -> type[BaseException] | None:
    """The exception class ``module.QualName`` (a bare name: builtins, then ``__main__``) when its
    module is imported here; nothing is imported for the sake of an error."""
    candidates = [("builtins", type_name), ("__main__", type_name)] if "." not in type_name else []
    module_name, _, qualname = type_name.rpartition(".")
    while module_name:  # the longest imported module prefix: a.b.Outer.Inner
        candidates.append((module_name, qualname))
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
    for module_name, qualname in candidates:
        found: Any = sys.modules.get(module_name)
        for part in qualname.split(".") if found is not None else ():
            found = getattr(found, part, None)
        if isinstance(found, type) and issubclass(found, BaseException):
            return found
    return None


def _unpickled(pickled: bytes | None) -> BaseException | None:
    """The remote exception itself, when it was sent and unpickles here."""
    if pickled is None:
        return None
    try:
        exc = _wire.loads(pickled)
    except Exception:
        return None
    return exc if isinstance(exc, BaseException) else None


def _pickle(value: Any, what: str) -> bytes:
    try:
        data: bytes = cloudpickle.dumps(value, protocol=5)
    except Exception as exc:
        raise UsageError(f"{what} cannot be sent to the cluster: it cannot be pickled: {exc}") from exc
    return data


def _signature(obj: Any, name: str | None) -> inspect.Signature | None:
    """The signature a caller sees: bound methods and classes' methods lose ``self``."""
    try:
        if name is None:
            return inspect.signature(obj)
        if inspect.isclass(obj):
            raw = inspect.getattr_static(obj, name)
            sig = inspect.signature(getattr(obj, name))
            if isinstance(raw, (staticmethod, classmethod)):
                return sig
            params = list(sig.parameters.values())[1:]
            return sig.replace(parameters=params)
        return inspect.signature(getattr(obj, name))
    except (TypeError, ValueError):  # builtins without a signature
        return None


class RunnerService:
    """A function, class or instance served by one Flame session of a :class:`Runner`.

    Function services are called directly (``svc(1, 2)``); class and instance services have one
    method per public method of the object (``svc.add(1)``), with the original signature and
    docstring. Every call returns an :class:`ObjectFuture` at once. Calls are thread-safe.

    Created by :meth:`Runner.service`; ``session_id`` names the session.
    """

    def __init__(
        self,
        runner: ServiceOwner,
        execution_object: Any,
        *,
        stateful: bool | None = None,
        autoscale: bool | None = None,
        warmup: int = 0,
        resreq: Any = None,
    ) -> None:
        self._runner = runner
        self._app = runner.name
        self._object = execution_object
        self.kind = service_kind(execution_object)
        self.stateful, self.autoscale, self.min_instances, self.max_instances = _decide(
            execution_object, stateful, autoscale, warmup
        )
        self.warmup = warmup
        self.resreq = None if resreq is None else ResourceRequirement.coerce(resreq)
        if runner.registered:  # a reused application's package is someone else's: not known
            check_importable(execution_object, runner.project_dir, _describe(execution_object))
        self.session_id = _session_id_for(self._app, execution_object)
        self._closed = False
        self._lock = threading.Lock()
        self._function: Callable[..., ObjectFuture] | None = None
        self._signature: inspect.Signature | None = None
        context = _wire.RunnerContext(
            # In its envelope, so that a failed call reports its exception in full through any
            # flmrun program (see _envelope).
            execution_object=enclose(
                execution_object, runner.cache.endpoint, f"{self._app}/{self.session_id}"
            ),
            stateful=self.stateful,
            autoscale=self.autoscale,
            # flamepy's executor rebuilds a stateful instance's context through its validating
            # constructor, which only accepts warmup 0 or 1 for instances.
            warmup=min(warmup, 1) if self.stateful else warmup,
            min_instances=self.min_instances,
            max_instances=self.max_instances,
        )
        try:
            payload = _wire.dumps(context)
        except Exception as exc:
            raise UsageError(
                f"the execution object ({_describe(execution_object)}) cannot be sent to the cluster: "
                f"it cannot be pickled: {exc}"
            ) from exc
        ref = runner.cache.put_object(f"{self._app}/{self.session_id}", payload)
        spec = pb.SessionSpec(
            application=self._app,
            common_data=ref.encode(),
            min_instances=self.min_instances,
            batch_size=1,
        )
        if self.max_instances is not None:
            spec.max_instances = self.max_instances
        if self.resreq is not None:
            spec.resreq.CopyFrom(self.resreq.to_pb())
        runner.frontend.open_session(self.session_id, spec)
        self._make_wrappers()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<RunnerService {_describe(self._object)} session={self.session_id!r} {state}>"

    # -- wrappers --------------------------------------------------------------------------------

    def _make_wrappers(self) -> None:
        if self.kind == ServiceKind.FUNCTION:
            self._signature = _signature(self._object, None)
            self.__doc__ = getattr(self._object, "__doc__", None)
            if self._signature is not None:
                self.__signature__ = self._signature
            return
        for name in dir(self._object):
            if name.startswith("_"):
                continue
            try:
                attr = getattr(self._object, name)
            except Exception:
                continue
            if not callable(attr):
                continue
            if hasattr(type(self), name) or name in self.__dict__:
                logger.warning(
                    "%s: method %r is not exposed: it clashes with RunnerService.%s",
                    _describe(self._object),
                    name,
                    name,
                )
                continue
            setattr(self, name, self._method_wrapper(name, attr))

    def _method_wrapper(self, name: str, attr: Any) -> Callable[..., ObjectFuture]:
        sig = _signature(self._object, name)

        def call(*args: Any, **kwargs: Any) -> ObjectFuture:
            return self._submit(name, sig, args, kwargs)

        functools.update_wrapper(call, attr)
        if sig is not None:
            call.__signature__ = sig  # type: ignore[attr-defined]
        return call

    def __call__(self, *args: Any, **kwargs: Any) -> ObjectFuture:
        """Call a function service remotely; returns its :class:`ObjectFuture`.

        Raises:
            TypeError: the service serves a class or an instance (call its methods instead), or
                the arguments do not fit the function's signature.
        """
        if self.kind != ServiceKind.FUNCTION:
            raise TypeError(
                f"RunnerService of {_describe(self._object)} in application '{self._app}' is not callable: "
                "call one of its methods instead"
            )
        return self._submit(None, self._signature, args, kwargs)

    # -- calls -----------------------------------------------------------------------------------

    def _submit(
        self, method: str | None, sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ObjectFuture:
        label = f"{_describe(self._object)}" + (f".{method}" if method else "")
        if self._closed:
            raise UsageError(f"cannot call {label}: the service (session '{self.session_id}') is closed")
        self._runner._check_open(f"cannot call {label}")
        if sig is not None:
            try:
                sig.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{label}{sig}: {exc}") from None
        args = tuple(self._by_ref(a) for a in args)
        kwargs = {k: self._by_ref(v) for k, v in kwargs.items()}
        failure_id = new_failure_id()
        data = self._request_bytes(method, args, kwargs, label, failure_id)
        if len(data) > MAX_TASK_INPUT:
            args, kwargs = self._offload(args, kwargs, label)
            data = self._request_bytes(method, args, kwargs, label, failure_id)
        future = ObjectFuture(self._runner._fetch, application=self._app, session_id=self.session_id)
        future._failure_id = failure_id
        task = self._runner.frontend.create_task(self.session_id, data)
        future.task_id = task.metadata.id
        self._runner._track(future, functools.partial(self._complete, future))
        return future

    @staticmethod
    def _by_ref(value: Any) -> Any:
        """ObjectFutures and ObjectRefs travel as the BSON bytes of the ref (both executors resolve them)."""
        if isinstance(value, ObjectFuture):
            return value.ref().encode()
        if isinstance(value, ObjectRef):
            return value.encode()
        if _wire.is_object_ref(value):
            return ObjectRef(value.endpoint, value.key, int(value.version)).encode()
        return value

    @staticmethod
    def _request_bytes(
        method: str | None, args: tuple[Any, ...], kwargs: dict[str, Any], label: str, failure_id: str
    ) -> bytes:
        # The envelope (or our worker) takes the failure record's id out before the call.
        request = _wire.RunnerRequest(
            method=method, args=args or None, kwargs={**kwargs, FAILURE_KEYWORD: failure_id}
        )
        try:
            return _wire.dumps(request)
        except Exception as exc:
            # Name the culprit: pickle each argument on its own (only on this failure path).
            for i, value in enumerate(args):
                _pickle(value, f"argument {i} ({type(value).__name__}) of {label}")
            for name, value in kwargs.items():
                _pickle(value, f"keyword argument {name!r} ({type(value).__name__}) of {label}")
            raise UsageError(f"the call to {label} cannot be sent to the cluster: {exc}") from exc

    def _offload(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], label: str
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Put the largest arguments in the cache until the request fits in one message."""
        sized: list[tuple[int, int | str]] = []
        for i, value in enumerate(args):
            sized.append((len(_pickle(value, f"argument {i} of {label}")), i))
        for name, value in kwargs.items():
            sized.append((len(_pickle(value, f"keyword argument {name!r} of {label}")), name))
        sized.sort(key=lambda item: item[0], reverse=True)
        new_args, new_kwargs = list(args), dict(kwargs)
        total = sum(size for size, _ in sized)
        prefix = f"{self._app}/{self.session_id}"
        for size, slot in sized:
            if total <= MAX_TASK_INPUT // 2:
                break
            value = new_args[slot] if isinstance(slot, int) else new_kwargs[slot]
            ref = self._runner.cache.put_object(prefix, value).encode()
            logger.debug("%s: argument %s (%d bytes) passed by reference %s", label, slot, size, prefix)
            if isinstance(slot, int):
                new_args[slot] = ref
            else:
                new_kwargs[slot] = ref
            total -= size
        return tuple(new_args), new_kwargs

    def _complete(self, future: ObjectFuture, task: Any, error: BaseException | None) -> None:
        if error is not None:
            future.set_exception(error)
            return
        state = task.status.state
        if state == _SUCCEED:
            if not task.spec.HasField("output"):
                future.set_exception(
                    RemoteError(
                        f"task {future.task_id} of session '{self.session_id}' (application '{self._app}') "
                        "succeeded without output: its executor does not follow the flmrun contract",
                        session_id=self.session_id,
                        task_id=future.task_id,
                    )
                )
                return
            try:
                future.set_result(ObjectRef.decode(task.spec.output))
            except Exception as exc:
                future.set_exception(
                    RemoteError(
                        f"task {future.task_id} of session '{self.session_id}' (application '{self._app}') "
                        f"returned an output that is not an ObjectRef: {exc}",
                        session_id=self.session_id,
                        task_id=future.task_id,
                    )
                )
            return
        future.set_exception(self._remote_error(future, task))

    def _remote_error(self, future: ObjectFuture, task: Any) -> RemoteError:
        where = f"task {future.task_id} of session '{self.session_id}' (application '{self._app}')"
        message = task_error_message(task)
        if task.status.state != _FAILED:
            return RemoteError(
                f"{where} was cancelled: {message}",
                remote_message=message,
                session_id=self.session_id,
                task_id=future.task_id,
            )
        failure = _wire.decode_failure(task.spec.output) if task.spec.HasField("output") else None
        if failure is None and future._failure_id is not None:
            failure = self._read_failure(future._failure_id)
        if failure is None:
            return RemoteError(
                f"{where} failed: {message}",
                remote_message=message,
                session_id=self.session_id,
                task_id=future.task_id,
            )
        remote_class = _remote_class(failure.type_name)
        remote_exception = None if remote_class is None else _unpickled(failure.exception)
        return RemoteError.of_remote_class(
            remote_class,
            f"{where} failed: {failure.type_name}: {failure.message}\n\n{failure.traceback.rstrip()}",
            remote_message=failure.message,
            remote_type=failure.type_name,
            remote_traceback=failure.traceback,
            remote_exception=remote_exception,
            session_id=self.session_id,
            task_id=future.task_id,
        )

    def _read_failure(self, failure_id: str) -> _wire.RemoteFailure | None:
        """The envelope's failure record of a call (stock runpy's failed tasks have no output)."""
        try:
            return read_failure(self._runner.cache, f"{self._app}/{self.session_id}", failure_id)
        except Exception as exc:  # the message alone still says what failed
            logger.debug("session %s: no failure record %s: %s", self.session_id, failure_id, exc)
            return None

    # -- lifetime --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def close(self) -> None:
        """Close the service's session (idempotent). Its pending tasks are cancelled by the cluster."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._runner.frontend.close_session(self.session_id)
