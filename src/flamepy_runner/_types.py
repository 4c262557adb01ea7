"""Small value types of the Runner API: :class:`SessionContext` and :class:`ResourceRequirement`."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ._proto import pb

__all__ = ["MAX_SESSION_ID_LENGTH", "ResourceRequirement", "SessionContext"]

#: Longest session id a SessionContext accepts (as flamepy 0.6.0).
MAX_SESSION_ID_LENGTH = 128

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "ki": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_MEMORY = re.compile(r"^(\d+)\s*([a-z]*)$")


@dataclasses.dataclass(frozen=True)
class SessionContext:
    """Chooses the session a Runner service opens: set it as ``_session_context`` on the object.

    Args:
        session_id: the session id to open (1 to 128 characters); None picks
            ``<app>-<6 random letters/digits>``.
        application_name: informational only (logged), as in flamepy.

    Raises:
        ValueError: ``session_id`` is not a string of 1 to 128 characters, or
            ``application_name`` is not a string.
    """

    session_id: str | None = None
    application_name: str | None = None

    def __post_init__(self) -> None:
        sid = self.session_id
        if sid is not None:
            if not isinstance(sid, str):
                raise ValueError(f"session_id must be a string, got {type(sid).__name__}")
            if not sid:
                raise ValueError("session_id cannot be an empty string")
            if len(sid) > MAX_SESSION_ID_LENGTH:
                raise ValueError(
                    f"session_id is too long ({len(sid)} characters, at most {MAX_SESSION_ID_LENGTH})"
                )
        if self.application_name is not None and not isinstance(self.application_name, str):
            raise ValueError(f"application_name must be a string, got {type(self.application_name).__name__}")


@dataclasses.dataclass(frozen=True)
class ResourceRequirement:
    """What each instance of a session needs: CPUs, memory in bytes and GPUs.

    flamepy's ``ResourceRequirement`` is accepted wherever this one is.

    Args:
        cpu: CPU count.
        memory: memory in bytes.
        gpu: GPU count.
    """

    cpu: int = 0
    memory: int = 0
    gpu: int = 0

    def __post_init__(self) -> None:
        for name in ("cpu", "memory", "gpu"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ResourceRequirement.{name} must be a non-negative integer, got {value!r}")

    @classmethod
    def from_string(cls, text: str) -> ResourceRequirement:
        """Parse ``cpu=N,mem=SIZE,gpu=N`` (``mem``/``memory`` take ``512m``, ``1g``, ``2Gi``...).

        Raises:
            ValueError: an empty string, an unknown key, or a value that is not a count or size.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("resource requirement cannot be empty")
        values = {"cpu": 0, "memory": 0, "gpu": 0}
        for part in text.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or not key or not value:
                raise ValueError(
                    f"invalid resource requirement entry {part.strip()!r} in {text!r}, expected key=value"
                )
            key = key.lower()
            if key in ("mem", "memory"):
                values["memory"] = _parse_memory(value, text)
            elif key in ("cpu", "gpu"):
                if not value.isdigit():
                    raise ValueError(f"invalid {key} count {value!r} in {text!r}, expected a whole number")
                values[key] = int(value)
            else:
                raise ValueError(
                    f"unknown resource requirement key {key!r} in {text!r} (known: cpu, mem, gpu)"
                )
        return cls(**values)

    def to_pb(self) -> Any:
        """The ``flame.v1.ResourceRequirement`` message."""
        return pb.ResourceRequirement(cpu=self.cpu, memory=self.memory, gpu=self.gpu)

    @classmethod
    def coerce(cls, value: Any) -> ResourceRequirement:
        """Accept ours, flamepy's (anything with ``cpu``/``memory``/``gpu``) or a string.

        Raises:
            TypeError: any other value.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls.from_string(value)
        if all(hasattr(value, name) for name in ("cpu", "memory", "gpu")):
            return cls(cpu=int(value.cpu), memory=int(value.memory), gpu=int(value.gpu))
        raise TypeError(
            f"resreq must be a ResourceRequirement (ours or flamepy's) or a 'cpu=N,mem=SIZE' string, "
            f"got {type(value).__name__}"
        )


def _parse_memory(value: str, text: str) -> int:
    match = _MEMORY.match(value.lower())
    if match is None or match.group(2) not in _MEMORY_UNITS:
        raise ValueError(f"invalid memory size {value!r} in {text!r}, expected e.g. 512m or 2g")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
