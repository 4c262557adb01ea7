"""Addresses and ports of the fake's servers: validation, probing, and the texts of bind errors.

The session manager (``FakeCluster``) and the object cache bind the same way and report a
taken port in the same words; both put brackets around IPv6 literals in URLs.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

from ._errors import ClusterStartError

__all__ = ["bind_message", "bracket", "check_port", "dialable", "outbound_address", "probe_port"]


def check_port(name: str, port: int) -> None:
    """Refuse a ``port`` option that is not an integer in 0..65535 (0: a free port)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"{name} must be an integer in 0..65535 (0 picks a free port); got {port!r}")


def dialable(host: str) -> str:
    """The address clients should dial for a server bound to ``host``."""
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if addr.is_unspecified:
        return "127.0.0.1" if addr.version == 4 else "::1"
    return str(addr)


def bracket(host: str) -> str:
    """``host`` as it goes before ``:port`` in a URL or a bind address (IPv6 in brackets)."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def probe_port(host: str, port: int, what: str) -> None:
    """Fail fast with a readable message when ``host:port`` cannot be bound."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # Like the servers themselves: a port in TIME_WAIT (a restart) is free, a listener is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bare, port))
    except OSError as exc:
        raise ClusterStartError(bind_message(what, host, port, exc)) from exc


def bind_message(what: str, host: str, port: int, exc: BaseException | None) -> str:
    """The text of a failed bind of the ``what`` server, with what to do about it."""
    reason = "address already in use" if _in_use(exc) else (str(exc) if exc else "bind failed")
    hint = "choose another port, or 0 for a free one" if port else "check the host address"
    return f"cannot bind the {what} to {bracket(host)}:{port}: {reason} ({hint})"


def _in_use(exc: BaseException | None) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    return exc is not None and "in use" in str(exc).lower()


def outbound_address() -> str:
    """An address other hosts can dial when the server listens on every interface."""
    # Connecting a UDP socket sends nothing; it only asks the kernel which local address routes out.
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.254.254.254", 1))
        address: str = probe.getsockname()[0]
        if address and address != "0.0.0.0":
            return address
    return "127.0.0.1"
