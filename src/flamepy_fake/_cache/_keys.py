"""Object-cache keys and tickets, parsed as the real cache does (A2, A5), and the neutral error.

Errors are :class:`StoreError` carrying the gRPC status name the real cache
(``object_cache/src/cache.rs``) answers with; :mod:`flamepy_fake._cache._server` turns them into
Flight statuses in one place.
"""

from __future__ import annotations

import dataclasses
import re

from .._errors import StoreError

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
    "utf8_error",
]

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"

WILDCARD = "*"

_DIGITS = re.compile(r"[0-9]+", re.ASCII)


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


_PATH_SHAPE = "expected '<app>/<ssn>' or '<app>/<ssn>/<uuid>'"
_KEY_SHAPE = "expected '<app>/<ssn>/<uuid>'"


def _component_error(part: str) -> str | None:
    """v0.6.0's component rule: non-empty, no ``..`` anywhere, no ``\\``."""
    if not part or ".." in part or "\\" in part:
        return f"Invalid key component: '{part}'"
    return None


def parse_path(text: str) -> ObjectPath:
    """Parse a put path, PATCH key or DELETE body: ``a/s``, ``a/s/id`` or ``a/*``.

    Args:
        text: the key text.

    Returns:
        The parsed path.

    Raises:
        ValueError: the text is malformed; the message is v0.6.0's text, e.g.
            ``Invalid key component: '..'``.
    """
    parts = text.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"Invalid path '{text}': {_PATH_SHAPE}")
    # v0.6.0 checks each part in turn, a wildcard anywhere but the session id's place included,
    # and only then the three-part shape: so ``a/s/*`` is "only allowed for session_id" (its
    # "not allowed for object_id" text is unreachable), as measured on a real cluster.
    for index, part in enumerate(parts):
        problem = _component_error(part)
        if problem:
            raise ValueError(problem)
        if part == WILDCARD and index != 1:
            raise ValueError("Wildcard '*' only allowed for session_id")
    if len(parts) == 3 and parts[1] == WILDCARD:
        raise ValueError("Wildcard session '*' cannot have object_id")
    return ObjectPath(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def parse_full_key(text: str) -> ObjectPath:
    """Parse a full key ``app/session/id`` (as DoGet, PATCH and GetFlightInfo do).

    Args:
        text: the key text.

    Returns:
        The parsed key (``*`` is not rejected here, as upstream).

    Raises:
        StoreError: INVALID_ARGUMENT with v0.6.0's text when the key is malformed.
    """
    parts = text.split("/")
    if len(parts) != 3:
        raise StoreError(INVALID_ARGUMENT, f"Invalid key '{text}': {_KEY_SHAPE}")
    for part in parts:
        problem = _component_error(part)
        if problem:
            raise StoreError(INVALID_ARGUMENT, problem)
    return ObjectPath(parts[0], parts[1], parts[2])


def utf8_error(exc: UnicodeDecodeError) -> str:
    """Rust's ``Utf8Error`` text for the first bad byte sequence Python found."""
    if exc.reason == "unexpected end of data":
        return f"incomplete utf-8 byte sequence from index {exc.start}"
    return f"invalid utf-8 sequence of {exc.end - exc.start} bytes from index {exc.start}"


def _parse_u64(text: str) -> int:
    """Rust's ``u64::from_str``: an optional ``+``, ASCII digits, in range; ValueError with its text."""
    if not text:
        raise ValueError("cannot parse integer from empty string")
    digits = text[1:] if text[0] == "+" else text
    if not digits or not _DIGITS.fullmatch(digits):
        raise ValueError("invalid digit found in string")
    value = int(digits)
    if value >= 2**64:
        raise ValueError("number too large to fit in target type")
    return value


def parse_ticket(raw: bytes) -> tuple[str, int]:
    """Split a DoGet ticket ``<key>[:<version>]`` at its first ``:``.

    Args:
        raw: the ticket bytes.

    Returns:
        The key text and the client's version (0 when absent).

    Raises:
        StoreError: INVALID_ARGUMENT for non-UTF-8 tickets and bad versions, with v0.6.0's text.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoreError(INVALID_ARGUMENT, f"Invalid ticket: {utf8_error(exc)}") from None
    key, sep, version = text.partition(":")
    if not sep:
        return key, 0
    try:
        return key, _parse_u64(version)
    except ValueError as exc:
        raise StoreError(INVALID_ARGUMENT, f"Invalid version: {exc}") from None
