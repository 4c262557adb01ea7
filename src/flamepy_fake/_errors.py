"""Exceptions of the fake cluster, in one place.

The hierarchy says which part refused, and what the caller sees of it::

    FakeError                   root of every error the fake raises on purpose
    ├── ClusterStartError       a part of FakeCluster cannot start (a taken port); also a RuntimeError
    ├── FaultError              a fault the fake cannot apply; also a ValueError
    ├── StateError              the state model refused a request: ``code`` (a grpc.StatusCode
    │   │                       name) and ``message`` (upstream's exact text); the servicer sends them
    │   └── ResultError         ... one that upstream reports in-band, Result{-1, message} with OK
    ├── StoreError              the object cache refused a request: ``code`` and ``message``, as
    │                           the real cache answers (the Flight adapter maps it to a status)
    ├── InstallError            an application could not be installed (bind failure code 10)
    ├── ShimError               an instance could not be created (bind failure code 11)
    ├── InstanceCrashed         an instance died or was stopped while running a task
    └── Unavailable             the real or external backend cannot be had; the message is the
                                skip reason

Only ``ClusterStartError`` and ``FaultError`` are public (``flamepy_fake.ClusterStartError``);
the others stay inside the fake, where one boundary turns each into what Flame v0.6.0 answers
(a gRPC status, a bind failure event, a failed task, a skipped test). The module uses the
standard library only, so the state model and the cache store import it freely.
"""

from __future__ import annotations

__all__ = [
    "ClusterStartError",
    "FakeError",
    "FaultError",
    "InstallError",
    "InstanceCrashed",
    "ResultError",
    "ShimError",
    "StateError",
    "StoreError",
    "Unavailable",
]


class FakeError(Exception):
    """Root of every error the fake cluster raises on purpose."""


class ClusterStartError(FakeError, RuntimeError):
    """Raised by :meth:`FakeCluster.start` when a part cannot start (typically a taken port).

    Nothing of the cluster is left running when it is raised.
    """


class FaultError(FakeError, ValueError):
    """A fault the fake cannot apply (unknown method, a status the transport cannot send, ...)."""


class StateError(FakeError):
    """A request the state refused, with the gRPC status code upstream answers with.

    Args:
        code: name of a ``grpc.StatusCode`` member, e.g. ``"NOT_FOUND"``.
        message: the exact status message upstream sends.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ResultError(StateError):
    """A refusal that upstream reports in-band as ``Result{return_code: -1, message}`` with status OK.

    Raised only by the application RPCs past their pre-checks (name validation, duplicates,
    unknown apps, open sessions); the transport turns it into a Result instead of a status.
    """


class StoreError(FakeError):
    """An object cache refusal, with the gRPC status the real cache would answer.

    Args:
        code: ``"INVALID_ARGUMENT"``, ``"NOT_FOUND"`` or ``"INTERNAL"``.
        message: the text the client sees.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InstallError(FakeError):
    """Installing an application failed; the message says why (bind code 10)."""


class ShimError(FakeError):
    """The instance could not be created (bind code 11)."""


class InstanceCrashed(FakeError):
    """The instance died (or was stopped) while running a task; the message says how."""


class Unavailable(FakeError):
    """The real backend cannot run here; the message is the skip reason."""
