"""Helpers for tests that drive the fake Frontend service alone (no cluster, no executors).

``frontend_server`` serves a :class:`FrontendServicer` on a free loopback port;
``flamepy_client`` points the real ``flamepy`` 0.6.0 client at it. flamepy caches one connection
per process in ``flamepy.core.client.ConnectionInstance`` (built from ``FLAME_ENDPOINT`` on first
use), so the helper drops that cache on entry and closes the connection on exit: every test gets
a client for its own server, also under xdist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from flamepy_fake._control._frontend import FrontendServicer
from flamepy_fake._control._state import ClusterState
from flamepy_fake.plugin import reset_flamepy_clients
from flamepy_runner._proto import pb, rpc


@contextlib.contextmanager
def frontend_server(state: ClusterState, *, workers: int = 16) -> Iterator[str]:
    """Serve the Frontend over ``state`` on 127.0.0.1; yield ``host:port``.

    On exit the state is stopped first (so open WatchTask streams end), then the server and its
    thread pool, so no thread or socket outlives the block.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sm-test")
    server = grpc.server(pool)
    server.add_generic_rpc_handlers((rpc.generic_handler(pb.FRONTEND_SERVICE, FrontendServicer(state)),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        state.stop()
        server.stop(grace=None).wait()
        pool.shutdown(wait=True)


@contextlib.contextmanager
def flamepy_client(monkeypatch: pytest.MonkeyPatch, address: str) -> Iterator[None]:
    """Make ``flamepy``'s module-level functions talk to ``address`` for the block's duration.

    Uses the plugin's ``reset_flamepy_clients`` (the one place that knows flamepy's caches) on
    entry, so no connection to an earlier server is reused, and on exit, so none outlives it.
    """
    monkeypatch.setenv("FLAME_ENDPOINT", f"http://{address}")
    reset_flamepy_clients()
    try:
        yield
    finally:
        reset_flamepy_clients()


def raw_stub(address: str) -> tuple[grpc.Channel, rpc.Stub]:
    """Open a plain channel and a Frontend stub on it (the caller closes the channel)."""
    channel = grpc.insecure_channel(address)
    return channel, rpc.Stub(channel, pb.FRONTEND_SERVICE)
