"""Object-cache keys and tickets, parsed as the real cache does (A2, A5), and the neutral error.

Errors are :class:`StoreError` carrying the gRPC status name the real cache
(``object_cache/src/cache.rs``) answers with; :mod:`flamepy_fake._cache_server` turns them into
Flight statuses in one place.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "INTERNAL",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "WILDCARD",
    "ObjectPath",
    "StoreError",
    "parse_full_key",
    "parse_path",
    "parse_ticket",
]

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"

WILDCARD = "*"

_DIGITS = re.compile(r"[0-9]+")


class StoreError(Exception):
    """A refusal, with the gRPC status the real cache would answer.

    Args:
        code: ``"INVALID_ARGUMENT"``, ``"NOT_FOUND"`` or ``"INTERNAL"``.
        message: the text the client sees.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------- keys


@dataclasses.dataclass(frozen=True)
class ObjectPath:
    """A parsed key: ``app/session/id``, a prefix ``app/session``, or ``app/*``.

    Attributes:
        app: the application component.
        session: the session component (``*`` for every session of the app).
        object_id: the object id, or None for a prefix.
    """

    app: str
    session: str
    object_id: str | None = None

    @property
    def is_wildcard(self) -> bool:
        """True for ``app/*``."""
        return self.session == WILDCARD

    @property
    def key(self) -> str:
        """The key as text (full key or prefix)."""
        base = f"{self.app}/{self.session}"
        return base if self.object_id is None else f"{base}/{self.object_id}"

    def covers(self, key: str) -> bool:
        """Tell whether this path names ``key`` or a prefix of it (the DELETE rule).

        Args:
            key: a full key.

        Returns:
            True when a DELETE of this path removes ``key``.
        """
        app, session, _ = key.split("/", 2)
        if app != self.app:
            return False
        if self.is_wildcard:
            return True
        if session != self.session:
            return False
        return self.object_id is None or key == self.key


def _component_problem(part: str) -> str | None:
    if not part:
        return "empty component"
    if ".." in part:
        return "'..' is not allowed"
    if "\\" in part:
        return "'\\' is not allowed"
    return None


def parse_path(text: str) -> ObjectPath:
    """Parse a put path, PATCH key or DELETE body: ``a/s``, ``a/s/id`` or ``a/*``.

    Args:
        text: the key text.

    Returns:
        The parsed path.

    Raises:
        ValueError: the text is malformed; the message says why.
    """
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected '<app>/<ssn>' or '<app>/<ssn>/<id>', got {len(parts)} components")
    for part in parts:
        problem = _component_problem(part)
        if problem:
            raise ValueError(problem)
    if parts[0] == WILDCARD:
        raise ValueError("'*' is not allowed as the application")
    if len(parts) == 3 and WILDCARD in (parts[1], parts[2]):
        raise ValueError("'*' is only allowed as the session of '<app>/*'")
    return ObjectPath(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def parse_full_key(text: str) -> ObjectPath:
    """Parse a full key ``app/session/id`` (as DoGet and GetFlightInfo do).

    Args:
        text: the key text.

    Returns:
        The parsed key.

    Raises:
        StoreError: INVALID_ARGUMENT when the key is malformed.
    """
    parts = text.split("/")
    if len(parts) != 3:
        raise StoreError(INVALID_ARGUMENT, f"Invalid key '{text}': expected '<app>/<ssn>/<uuid>'")
    for part in parts:
        problem = _component_problem(part)
        if problem:
            raise StoreError(INVALID_ARGUMENT, f"Invalid key '{text}': {problem}")
    return ObjectPath(parts[0], parts[1], parts[2])


def parse_ticket(raw: bytes) -> tuple[str, int]:
    """Split a DoGet ticket ``<key>[:<version>]`` at its first ``:``.

    Args:
        raw: the ticket bytes.

    Returns:
        The key text and the client's version (0 when absent).

    Raises:
        StoreError: INVALID_ARGUMENT for non-UTF-8 tickets and non-integer versions.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(INVALID_ARGUMENT, f"Invalid ticket: {exc}") from exc
    key, sep, version = text.partition(":")
    if not sep:
        return key, 0
    if not _DIGITS.fullmatch(version) or int(version) >= 2**64:
        raise StoreError(INVALID_ARGUMENT, f"Invalid version: '{version}' is not an unsigned integer")
    return key, int(version)
