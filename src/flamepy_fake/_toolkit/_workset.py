"""What one test created on a shared cluster, found through the wire, and its removal.

A cluster shared by several tests (``--flame-scope module|session``, or any real or external
cluster) is cleaned between tests: :func:`snapshot` lists its applications, sessions and cache
keys before the test, :func:`cleanup` closes the sessions and unregisters the applications that
appeared since, and deletes the new cache keys. Only the wire is used, so it works the same on
every backend.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc

from flamepy_runner import FlameConfig

__all__ = ["Snapshot", "cleanup", "close_session_patiently", "open_channel", "snapshot"]

_CALL_TIMEOUT = 10.0
# How long cleanup waits for a test's running tasks before giving up on closing its sessions.
_CLOSE_DEADLINE = 5.0


def open_channel(config: FlameConfig) -> grpc.Channel:
    """A gRPC channel to ``config.endpoint`` (TLS with ``config.ca_file`` for ``https://``)."""
    url = urlsplit(config.endpoint)
    if url.scheme not in ("http", "https") or not url.hostname or not url.port:
        raise ValueError(f"endpoint must look like http(s)://host:port; got {config.endpoint!r}")
    target = f"{url.hostname}:{url.port}"
    if url.scheme == "http":
        return grpc.insecure_channel(target)
    roots = Path(config.ca_file).read_bytes() if config.ca_file else None
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots))


@dataclass(frozen=True)
class Snapshot:
    """The names present on a cluster at one moment."""

    applications: frozenset[str]
    sessions: frozenset[str]
    keys: frozenset[str]


def snapshot(config: FlameConfig) -> Snapshot:
    """The applications, sessions and cache keys on the cluster of ``config`` now."""
    from flamepy_runner._for_fake import pb

    with open_channel(config) as channel:
        stub = _stub(channel)
        apps = stub.ListApplication(pb.ListApplicationRequest(), timeout=_CALL_TIMEOUT).applications
        sessions = stub.ListSession(pb.ListSessionRequest(), timeout=_CALL_TIMEOUT).sessions
    return Snapshot(
        applications=frozenset(a.metadata.name for a in apps),
        sessions=frozenset(s.metadata.id for s in sessions),
        keys=frozenset(_keys(config)),
    )


def cleanup(config: FlameConfig, before: Snapshot) -> list[str]:
    """Remove what appeared on the cluster since ``before``; return what could not be removed."""
    import grpc

    from flamepy_runner._for_fake import pb

    problems: list[str] = []
    deadline = time.monotonic() + _CLOSE_DEADLINE
    with open_channel(config) as channel:
        stub = _stub(channel)
        for ssn in stub.ListSession(pb.ListSessionRequest(), timeout=_CALL_TIMEOUT).sessions:
            if ssn.metadata.id in before.sessions or ssn.status.state != pb.SessionState.Value("Open"):
                continue
            refusal = close_session_patiently(stub, ssn.metadata.id, deadline)
            if refusal is not None:
                problems.append(f"session {ssn.metadata.id}: {refusal}")
        for app in stub.ListApplication(pb.ListApplicationRequest(), timeout=_CALL_TIMEOUT).applications:
            name = app.metadata.name
            if name in before.applications:
                continue
            try:
                stub.UnregisterApplication(pb.UnregisterApplicationRequest(name=name), timeout=10)
            except grpc.RpcError as exc:
                problems.append(f"application {name}: {exc.code().name}: {exc.details()}")
    new_keys = sorted(set(_keys(config)) - before.keys)
    if new_keys:
        from flamepy_runner import CacheClient

        with CacheClient(config) as cache:
            for key in new_keys:
                try:
                    cache.delete_objects(key)
                except Exception as exc:  # reported, never raised: cleanup goes on
                    problems.append(f"cache key {key}: {exc}")
    return problems


def close_session_patiently(stub: Any, session_id: str, deadline: float) -> str | None:
    """Close a session, waiting (until ``deadline``, a monotonic time) for its running tasks.

    Returns:
        None once closed, else ``"<STATUS>: <details>"`` of the last refusal.
    """
    import grpc

    from flamepy_runner._for_fake import pb

    while True:
        try:
            stub.CloseSession(pb.CloseSessionRequest(session_id=session_id), timeout=_CALL_TIMEOUT)
            return None
        except grpc.RpcError as exc:
            # INTERNAL while a task still runs: wait for it (bounded).
            if exc.code() != grpc.StatusCode.INTERNAL or time.monotonic() > deadline:
                return f"{exc.code().name}: {exc.details()}"
            time.sleep(0.05)


def _stub(channel: Any) -> Any:
    from flamepy_runner._for_fake import pb, rpc

    return rpc.Stub(channel, pb.FRONTEND_SERVICE)


def _keys(config: FlameConfig) -> list[str]:
    """The object cache's keys; none when the cache's listing cannot be read (v0.6.0's, see README)."""
    from pyarrow import flight

    client = flight.FlightClient(config.cache_endpoint.replace("grpcs://", "grpc+tls://"))
    keys: list[str] = []
    with contextlib.closing(client):
        try:
            for info in client.list_flights(options=flight.FlightCallOptions(timeout=_CALL_TIMEOUT)):
                path = info.descriptor.path if info.descriptor is not None else None
                if path:
                    keys.append(path[0].decode())
        except (flight.FlightError, OSError, ValueError):
            return []
    return keys
