"""Forgetting what flamepy caches process-wide, so its next call reaches the current cluster."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["reset_flamepy_clients"]


def reset_flamepy_clients() -> None:
    """Forget the connections and configuration that flamepy caches process-wide.

    flamepy keeps one frontend connection (``ConnectionInstance``), one ``FlameContext`` and
    one Flight client per cache endpoint for the life of the process, so a second cluster (or a
    changed ``FLAME_ENDPOINT``) would still reach the first. Does nothing when flamepy has not
    been imported.
    """
    client: Any = sys.modules.get("flamepy.core.client")
    holder = getattr(client, "ConnectionInstance", None)
    if holder is not None:
        with holder._lock:
            conn, holder._connection, holder._context = holder._connection, None, None
        if conn is not None:
            _close_without_waiting(conn)
    cache: Any = sys.modules.get("flamepy.core.cache")
    if cache is None:
        return
    if hasattr(cache, "_context_cache"):
        with cache._context_cache_lock:
            cache._context_cache = None
    pool = getattr(cache, "_client_pool", None)
    if pool is not None:
        with cache._client_pool_lock:
            clients = list(pool.values())
            pool.clear()
        for flight_client in clients:
            flight_client.close()
    objects = getattr(cache, "_object_cache", None)
    if objects is not None:
        with cache._cache_lock:
            objects.clear()


def _close_without_waiting(conn: Any) -> None:
    """Close a flamepy ``Connection`` without waiting for its in-flight work.

    ``Connection.close()`` joins its thread pool, which runs the watch of every task submitted
    with ``Session.run()``: a task that never ends would block forever. Closing the channel
    first ends those watches; the pool is then shut down without waiting.
    """
    channel = getattr(conn, "_channel", None)
    pool = getattr(conn, "_executor", None)
    if channel is None or pool is None:  # not the 0.6.0 layout: its own close() is all we have
        conn.close()
        return
    channel.close()
    pool.shutdown(wait=False, cancel_futures=True)
