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

    Args:
        message: the whole text: which task of which session failed, and the remote error.
        remote_message: the executor's failure text (``str(exception)`` on the executor).
        remote_type: the remote exception's class name, when the executor reports it (our
            worker does; flamepy's stock ``runpy`` reports only the message).
        remote_traceback: the remote traceback text, when the executor reports it.
    """

    def __init__(
        self,
        message: str,
        *,
        remote_message: str = "",
        remote_type: str | None = None,
        remote_traceback: str | None = None,
        **context: str | None,
    ) -> None:
        super().__init__(message, **context)
        self.remote_message = remote_message
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class WaitTimeoutError(FlameError, TimeoutError):
    """Raised when a wait on futures runs out of time; the remote tasks themselves go on."""
