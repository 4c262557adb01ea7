"""Client for Flame's session manager (the ``flame.v1.Frontend`` gRPC service).

:class:`FrontendClient` owns one channel to one session manager, configured by a
:class:`~flamepy_runner.FlameConfig` (no process-wide connection), and gives every unary call the
configuration's deadline. :func:`rpc_errors` is the one place where gRPC failures become
flamepy_runner exceptions; callers say what they were doing so that the message names the
application, session or task concerned.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc

from ._config import FlameConfig
from ._exceptions import (
    AlreadyExistsError,
    ClusterError,
    ConfigError,
    DeadlineExceededError,
    FlameError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from ._proto import pb, rpc

__all__ = ["FrontendClient", "channel_target", "rpc_errors"]

#: gRPC status code -> the exception a caller sees.
_STATUS_ERRORS: dict[grpc.StatusCode, type[ClusterError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidStateError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}
# Real Flame answers some refusals with gRPC OK and Result{return_code=-1, message}.
_ALREADY_EXISTS_SUFFIX = "already exists"


def channel_target(endpoint: str) -> tuple[str, bool]:
    """Split a session-manager URL into the gRPC target and whether it uses TLS.

    Args:
        endpoint: ``http://host:port`` or ``https://host:port``.

    Raises:
        ConfigError: another scheme, or no host.
    """
    parsed = urllib.parse.urlsplit(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"session manager endpoint {endpoint!r} is not an http://host:port or https://host:port URL"
        )
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}", parsed.scheme == "https"


def _raise_mapped(exc: grpc.RpcError, what: str, endpoint: str, context: dict[str, Any]) -> NoReturn:
    # Sync calls raise grpc.Call errors, grpc.aio raises AioRpcError: both have code()/details().
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = (exc.details() if callable(getattr(exc, "details", None)) else None) or str(exc)
    cls = _STATUS_ERRORS.get(code, InternalError) if code is not None else InternalError
    if cls is UnavailableError:
        details = f"session manager {endpoint} is unreachable: {details}"
    elif cls is DeadlineExceededError:
        details = f"no answer from session manager {endpoint} in time: {details}"
    raise cls(f"{what}: {details}", endpoint=endpoint, **context) from exc


@contextlib.contextmanager
def rpc_errors(what: str, endpoint: str, **context: Any) -> Iterator[None]:
    """The one place where gRPC errors from the session manager become flamepy_runner errors.

    Args:
        what: what the caller was doing, e.g. ``"cannot open session 'ssn-1'"``; it starts
            the message, followed by the server's own text.
        endpoint: the session manager called.
        **context: ``session_id``, ``task_id`` or ``key`` for the error's attributes.
    """
    try:
        yield
    except FlameError:
        raise
    except grpc.RpcError as exc:
        _raise_mapped(exc, what, endpoint, context)


class FrontendClient:
    """A thread-safe client of one Flame session manager.

    Args:
        config: the session manager's ``endpoint``, its CA (``ca_file``) and the deadline of
            each unary call (``timeout``).
    """

    def __init__(self, config: FlameConfig) -> None:
        self.config = config
        self.endpoint = config.endpoint
        self.target, self.tls = channel_target(config.endpoint)
        self._lock = threading.Lock()
        self._closed = False
        self._channel = self._open_channel()
        self._stub = rpc.Stub(self._channel, pb.FRONTEND_SERVICE)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for this endpoint (None for plain ``http://``)."""
        if not self.tls:
            return None
        roots = None
        if self.config.ca_file:
            try:
                roots = Path(self.config.ca_file).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read CA file {self.config.ca_file}: {exc}") from exc
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def _open_channel(self) -> grpc.Channel:
        creds = self.credentials()
        if creds is None:
            return grpc.insecure_channel(self.target)
        return grpc.secure_channel(self.target, creds)

    def close(self) -> None:
        """Close the channel (idempotent); later calls raise :class:`UsageError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._channel.close()

    def __enter__(self) -> FrontendClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, request: Any, what: str, **context: Any) -> Any:
        if self._closed:
            raise UsageError(f"{what}: the client of {self.endpoint} is closed")
        with rpc_errors(what, self.endpoint, **context):
            return getattr(self._stub, method)(request, timeout=self.config.timeout)

    @staticmethod
    def _check_result(result: Any, what: str, endpoint: str) -> None:
        if result.return_code == 0:
            return
        message = result.message if result.HasField("message") else f"return code {result.return_code}"
        cls: type[ClusterError] = (
            AlreadyExistsError if message.endswith(_ALREADY_EXISTS_SUFFIX) else InvalidArgumentError
        )
        raise cls(f"{what}: {message}", endpoint=endpoint)

    # -- applications ----------------------------------------------------------------------------

    def get_application(self, name: str) -> Any | None:
        """The application ``name`` (a ``flame.v1.Application``), or None when it is not registered."""
        try:
            return self._call(
                "GetApplication", pb.GetApplicationRequest(name=name), f"cannot get application '{name}'"
            )
        except NotFoundError:
            return None

    def register_application(self, name: str, spec: Any) -> None:
        """Register ``name`` with the ``flame.v1.ApplicationSpec`` ``spec``."""
        what = f"cannot register application '{name}'"
        request = pb.RegisterApplicationRequest(name=name, application=spec)
        self._check_result(self._call("RegisterApplication", request, what), what, self.endpoint)

    def unregister_application(self, name: str) -> None:
        """Unregister ``name``."""
        what = f"cannot unregister application '{name}'"
        request = pb.UnregisterApplicationRequest(name=name)
        self._check_result(self._call("UnregisterApplication", request, what), what, self.endpoint)

    # -- sessions --------------------------------------------------------------------------------

    def open_session(self, session_id: str, spec: Any) -> Any:
        """Open (get or create) the session ``session_id`` with ``spec``; returns the Session."""
        request = pb.OpenSessionRequest(session_id=session_id, session=spec)
        return self._call(
            "OpenSession",
            request,
            f"cannot open session '{session_id}' of application '{spec.application}'",
            session_id=session_id,
        )

    def close_session(self, session_id: str) -> Any:
        """Close the session; its pending tasks are cancelled. Returns the Session."""
        request = pb.CloseSessionRequest(session_id=session_id)
        return self._call(
            "CloseSession", request, f"cannot close session '{session_id}'", session_id=session_id
        )

    def get_session(self, session_id: str) -> Any:
        """The Session with its session-level events."""
        request = pb.GetSessionRequest(session_id=session_id)
        return self._call("GetSession", request, f"cannot get session '{session_id}'", session_id=session_id)

    # -- tasks -----------------------------------------------------------------------------------

    def create_task(self, session_id: str, data: bytes) -> Any:
        """Create a task with input ``data`` in the session; returns the Task."""
        request = pb.CreateTaskRequest(task=pb.TaskSpec(session_id=session_id, input=data))
        return self._call(
            "CreateTask", request, f"cannot create a task in session '{session_id}'", session_id=session_id
        )

    def get_task(self, session_id: str, task_id: str) -> Any:
        """The Task with its full event list."""
        request = pb.GetTaskRequest(session_id=session_id, task_id=task_id)
        return self._call(
            "GetTask",
            request,
            f"cannot get task {task_id} of session '{session_id}'",
            session_id=session_id,
            task_id=task_id,
        )
