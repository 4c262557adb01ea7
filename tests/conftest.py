"""Shared test helpers: a resource snapshot to prove that something left nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import children_of

# A suite started in the background of a non-interactive shell (`cmd &`) inherits SIGINT
# ignored, and so would every pytest run and instance the signal tests start and then send
# SIGINT to: they would hang. Give this process (and so its children) SIGINT's default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _fds() -> dict[int, str]:
    fds: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed between listdir and readlink (or the listdir fd itself)
            continue
    return fds


def _children() -> set[int]:
    """Pids whose parent is this process (zombies included: an unreaped child is a leak too)."""
    return set(children_of(os.getpid()))


@dataclass
class ResourceSnapshot:
    """Threads, file descriptors and child processes of this process, and the temp dirs it makes.

    Use :func:`resources` (a fixture) rather than building one: it records every directory made
    with ``tempfile.mkdtemp`` while the test runs, which is precise under ``pytest -n 2`` where
    other workers create directories in the same /tmp.
    """

    threads: set[threading.Thread]
    fds: dict[int, str]
    children: set[int]
    created_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def take(cls) -> ResourceSnapshot:
        return cls(threads=set(threading.enumerate()), fds=_fds(), children=_children())

    def leaks(self) -> list[str]:
        """What exists now that did not exist at the snapshot (threads, fds, temp dirs)."""
        threads = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]
        problems = [f"thread {t.name!r}" for t in threads]
        now = _fds()
        problems += [f"fd {fd} -> {target}" for fd, target in now.items() if self.fds.get(fd) != target]
        problems += [f"directory {d}" for d in self.created_dirs if d.exists()]
        problems += [f"child process {pid}" for pid in sorted(_children() - self.children)]
        return problems

    def assert_clean(self, timeout: float = 10.0) -> None:
        """Fail unless nothing leaked; waits up to ``timeout`` for asynchronous closes to land."""
        deadline = time.monotonic() + timeout
        while True:
            problems = self.leaks()
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not problems, "left behind:\n" + "\n".join(f"  - {p}" for p in problems)


def _warm_up() -> None:
    # grpc and pyarrow open a few process-wide descriptors (epoll, eventfd, thread pools) the
    # first time they are used, and the first cluster starts the process's shared zygote: none
    # of them is a cluster's own, so they exist before the snapshot.
    from flamepy_fake import FakeCluster
    from flamepy_fake._executors import shared_fork_servers

    with FakeCluster():
        pass
    shared_fork_servers().wait_ready(60)


@pytest.fixture
def resources(monkeypatch: pytest.MonkeyPatch) -> Iterator[ResourceSnapshot]:
    """A snapshot taken after a warm-up cluster; ``created_dirs`` fills as ``mkdtemp`` runs."""
    _warm_up()
    snapshot = ResourceSnapshot.take()
    real_mkdtemp: Callable[..., Any] = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> Any:
        path = real_mkdtemp(*args, **kwargs)
        snapshot.created_dirs.append(Path(os.fsdecode(path)))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
    yield snapshot


@pytest.fixture(name="http_base")
def _http_base() -> Iterator[str]:
    """A real HTTP package store (``_http_storage_server.py``) in a child process on a free
    127.0.0.1 port: its base URL. Killed at teardown."""
    script = Path(__file__).with_name("_http_storage_server.py")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:"), base
        yield base
    finally:
        proc.kill()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
