"""Exceptions raised by flamepy_runner.

The hierarchy says whose fault an error is::

    FlameError                      root of everything this library raises on purpose
    ├── ConfigError                 the configuration is missing or malformed (your setup)
    ├── UsageError                  the API was called wrongly (your code)
    ├── PackageError                the project could not be packaged, or its package stored or removed
    ├── ClusterError                the cluster refused or failed a request
    │   ├── NotFoundError           the named application, session, task or object does not exist
    │   ├── AlreadyExistsError      the name is taken
    │   ├── InvalidArgumentError    the cluster rejected a value (its message says which)
    │   ├── InvalidStateError       the object is in a state that forbids the request
    │   ├── UnavailableError        the endpoint did not answer (down, wrong address, network)
    │   ├── DeadlineExceededError   the call ran past its deadline
    │   └── InternalError           the cluster reported an internal failure
    ├── RemoteError                 user code raised inside a task; keeps the remote text
    └── WaitTimeoutError            a wait on futures ran out of time (also a TimeoutError)

Every error carries ``endpoint`` and, where known, ``session_id`` / ``task_id`` / ``key``.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any

__all__ = [
    "AlreadyExistsError",
    "ClusterError",
    "ConfigError",
    "DeadlineExceededError",
    "FlameError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "PackageError",
    "RemoteError",
    "UnavailableError",
    "UsageError",
    "WaitTimeoutError",
]


class FlameError(Exception):
    """Root of every error flamepy_runner raises on purpose.

    Args:
        message: what happened, and where possible what to do about it.
        endpoint: the endpoint that was called, if any.
        session_id: the session concerned, if any.
        task_id: the task concerned, if any.
        key: the object-cache key concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.session_id = session_id
        self.task_id = task_id
        self.key = key


class ConfigError(FlameError):
    """Raised when configuration is missing or malformed: fix flame.yaml, the environment or the arguments."""


class UsageError(FlameError):
    """Raised when the API is used wrongly (bad argument, closed object): a bug in the calling code."""


class PackageError(FlameError):
    """Raised when the project could not be packaged, or its package could not be stored or removed."""


class ClusterError(FlameError):
    """Raised when the cluster refuses or fails a request; the subclass says how."""


class NotFoundError(ClusterError):
    """Raised when the named application, session, task or cached object does not exist."""


class AlreadyExistsError(ClusterError):
    """Raised when creating something whose name is already taken."""


class InvalidArgumentError(ClusterError):
    """Raised when the cluster rejects a value in the request; the message names it."""


class InvalidStateError(ClusterError):
    """Raised when the target's state forbids the request (a closed session, for instance)."""


class UnavailableError(ClusterError):
    """Raised when the endpoint cannot be reached: the service is down or the address is wrong."""


class DeadlineExceededError(ClusterError):
    """Raised when a remote call does not finish before its deadline."""


class InternalError(ClusterError):
    """Raised when the cluster reports an internal failure (gRPC INTERNAL, UNKNOWN and the like)."""


class RemoteError(FlameError):
    """Raised when user code failed inside a task.

    When the remote exception's class is importable on the client (its module is imported
    here: nothing is imported for the sake of an error), ``get()`` raises an instance of a
    subclass of both ``RemoteError`` and that class, named ``RemoteError(PricingError)``, so
    ``except PricingError`` and ``pytest.raises(PricingError)`` catch it; the remote exception
    itself is ``remote_exception``, and attributes the error lacks are read from it (``err.code``).

    Args:
        message: the whole text: which task of which session failed, and the remote error.
        remote_message: the executor's failure text (``str(exception)`` on the executor).
        remote_type: the remote exception's class, ``module.QualName`` (the bare name for
            builtins), when the executor reports it.
        remote_traceback: the remote traceback text of the user's frames, when reported.
        remote_exception: the remote exception, when it could be sent and unpickled here.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_message: str = "",
        remote_type: str | None = None,
        remote_traceback: str | None = None,
        remote_exception: BaseException | None = None,
        **context: str | None,
    ) -> None:
        super().__init__(message, **context)
        self.remote_message = remote_message
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback
        self.remote_exception = remote_exception

    @classmethod
    def of_remote_class(
        cls, remote_class: type[BaseException] | None, message: str, **fields: Any
    ) -> RemoteError:
        """A ``RemoteError`` that is also an instance of ``remote_class`` when the two classes can
        be combined (a plain ``RemoteError`` otherwise, or when ``remote_class`` is None).

        Args:
            remote_class: the remote exception's class, found on the client.
            message: as for :class:`RemoteError`.
            fields: the keyword arguments of :class:`RemoteError`.
        """
        dual = None if remote_class is None else _dual_class(remote_class)
        if dual is None:
            return cls(message, **fields)
        try:
            error: RemoteError = dual.__new__(dual, message)
            _dual_init(error, message, **fields)
        except Exception:  # a class whose construction we cannot bypass
            return cls(message, **fields)
        return error


_DUALS: weakref.WeakKeyDictionary[type[BaseException], type[RemoteError] | None] = weakref.WeakKeyDictionary()
_DUALS_LOCK = threading.Lock()


def _dual_class(remote_class: type[BaseException]) -> type[RemoteError] | None:
    """``RemoteError(X)``: a subclass of RemoteError and ``X`` (made once per ``X``), or None when
    ``X`` cannot be a base (not an Exception subclass, final, or an incompatible layout)."""
    with _DUALS_LOCK:
        if remote_class in _DUALS:
            return _DUALS[remote_class]
        dual: type[RemoteError] | None = None
        if issubclass(remote_class, Exception) and not issubclass(remote_class, RemoteError):
            namespace = {
                "__module__": RemoteError.__module__,
                "__doc__": f"A RemoteError whose remote exception is a {remote_class.__qualname__}.",
                "__init__": _dual_init,
                # The whole text, as for any RemoteError (KeyError's own __str__ would quote it).
                "__str__": BaseException.__str__,
                "__repr__": _dual_repr,
                "__getattr__": _from_remote_exception,
                "__reduce__": _reduce_to_remote_error,
            }
            try:
                dual = type(
                    f"RemoteError({remote_class.__qualname__})", (RemoteError, remote_class), namespace
                )
            except TypeError:
                dual = None
        _DUALS[remote_class] = dual
        return dual


def _dual_init(
    self: RemoteError,
    message: str,
    *,
    remote_message: str = "",
    remote_type: str | None = None,
    remote_traceback: str | None = None,
    remote_exception: BaseException | None = None,
    endpoint: str | None = None,
    session_id: str | None = None,
    task_id: str | None = None,
    key: str | None = None,
) -> None:
    # Not through super(): the remote class's own __init__ may want other arguments.
    BaseException.__init__(self, message)
    self.message = message
    self.endpoint, self.session_id, self.task_id, self.key = endpoint, session_id, task_id, key
    self.remote_message = remote_message
    self.remote_type = remote_type
    self.remote_traceback = remote_traceback
    self.remote_exception = remote_exception


def _dual_repr(self: RemoteError) -> str:
    return f"{type(self).__name__}({self.message!r})"


def _from_remote_exception(self: RemoteError, name: str) -> Any:
    # Only called for attributes the error lacks: the remote exception's own fields (err.code).
    if name.startswith("__") or name == "remote_exception":
        raise AttributeError(name)
    remote = self.__dict__.get("remote_exception")
    if remote is None:
        raise AttributeError(name)
    return getattr(remote, name)


def _reduce_to_remote_error(self: RemoteError) -> Any:
    # Pickled (multiprocessing, xdist), the error becomes a plain RemoteError with its fields.
    fields: dict[str, Any] = {
        "remote_message": self.remote_message,
        "remote_type": self.remote_type,
        "remote_traceback": self.remote_traceback,
        "endpoint": self.endpoint,
        "session_id": self.session_id,
        "task_id": self.task_id,
        "key": self.key,
    }
    return (functools.partial(RemoteError, self.message, **fields), ())


class WaitTimeoutError(FlameError, TimeoutError):
    """Raised when a wait on futures runs out of time; the remote tasks themselves go on."""
