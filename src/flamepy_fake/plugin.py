"""pytest plugin: a fresh fake Flame cluster per test (registered as the ``flamepy_fake`` pytest11 entry).

The plugin stays inert until a test asks for one of its fixtures:

- ``flame_cluster``: a started :class:`~flamepy_fake.FakeCluster`, stopped after the test;
- ``flame_env``: the same cluster, with ``FLAME_ENDPOINT`` / ``FLAME_CACHE_ENDPOINT`` set in
  ``os.environ`` and flamepy's process-wide cached connections reset, so ``flamepy.*`` calls
  reach this cluster.

Options come from ``@pytest.mark.flame(...)`` (keyword-only; the marker closest to the test
wins) over the ``--flame-*`` command-line options. At teardown the fixture fails the test if it
left sessions open or tasks unfinished, unless the marker allows it; the check is skipped when
the test already failed. A failed test's report shows the bind failures (events 1001/1002) of
its sessions and the tail of the last instance's stderr. The fixtures isolate the test from the
developer's Flame configuration (HOME and ``FLAME_*``), and SIGTERM ends the run like Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from ._cli import parse_size, positive_int
from ._policies import DEFAULT_POLICIES, check_policies

if TYPE_CHECKING:
    from ._cluster import FakeCluster

__all__ = ["FlameOptions", "reset_flamepy_clients"]

_MARKER = "flame"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_CLUSTER = pytest.StashKey["FakeCluster"]()
_BIND_EVENTS = (1001, 1002)  # SESSION_BIND_FAILED, SESSION_RETRY_LIMIT_REACHED
_STDERR_LINES = 20
_BACKENDS = ("auto", "thread", "process")
_FLMRUN_MODES = ("builtin", "flamepy")


class FlameOptions:
    """The options of one ``flame_cluster``, validated (what ``@pytest.mark.flame`` accepts).

    Args:
        backend: ``auto``, ``thread`` or ``process`` (see ``FakeCluster``).
        flmrun: ``builtin`` or ``flamepy``.
        max_executors: the fake's own cap on concurrent instances (``None``: none, as v0.6.0).
        policies: the scheduling policies (default ``("priority", "gang")``, as upstream's images).
        retry_limit: failed bindings of a session before event 1002.
        default_resreq: ``(cpu, memory, gpu)`` for sessions that name none.
        cache_max_memory: object cache memory limit: bytes, or a size as the CLI takes it
            (``"512M"``, ``"2G"``).
        allow_open_sessions: do not fail the test when sessions are still open at teardown.
        allow_unfinished_tasks: do not fail the test when tasks are pending or running at teardown.
        fork_server: fork instance processes from the cluster's zygote (``None``: where
            supported; ``False``: spawn each one), see ``FakeCluster``.

    Raises:
        TypeError: an option has the wrong type, or a positional argument was given.
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        backend: str = "auto",
        flmrun: str = "builtin",
        max_executors: int | None = None,
        policies: Sequence[str] = DEFAULT_POLICIES,
        retry_limit: int = 5,
        default_resreq: tuple[int, int, int] | None = None,
        cache_max_memory: int | str | None = None,
        allow_open_sessions: bool = False,
        allow_unfinished_tasks: bool = False,
        fork_server: bool | None = None,
    ) -> None:
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(_BACKENDS)}; got {backend!r}")
        if flmrun not in _FLMRUN_MODES:
            raise ValueError(f"flmrun must be one of {', '.join(_FLMRUN_MODES)}; got {flmrun!r}")
        for name, value in (("max_executors", max_executors), ("retry_limit", retry_limit)):
            if name == "max_executors" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name, flag in (
            ("allow_open_sessions", allow_open_sessions),
            ("allow_unfinished_tasks", allow_unfinished_tasks),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        if fork_server is not None and not isinstance(fork_server, bool):
            raise TypeError(f"fork_server must be True, False or None; got {fork_server!r}")
        self.fork_server = fork_server
        self.backend = backend
        self.flmrun = flmrun
        self.max_executors = max_executors
        self.policies = check_policies(policies)
        self.retry_limit = retry_limit
        self.default_resreq = default_resreq
        self.cache_max_memory = _size(cache_max_memory)
        self.allow_open_sessions = allow_open_sessions
        self.allow_unfinished_tasks = allow_unfinished_tasks

    def cluster_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``FakeCluster`` (the ``allow_*`` flags are the fixture's)."""
        return {
            "backend": self.backend,
            "flmrun": self.flmrun,
            "max_executors": self.max_executors,
            "policies": self.policies,
            "retry_limit": self.retry_limit,
            "default_resreq": self.default_resreq,
            "cache_max_memory": self.cache_max_memory,
            "fork_server": self.fork_server,
        }


def _size(value: int | str | None) -> int | None:
    """``cache_max_memory`` in bytes: a positive int, or a size string such as ``512M``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_size(value)
        except argparse.ArgumentTypeError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f"cache_max_memory must be a positive number of bytes or a size such as 512M or 2G; got {value!r}"
    )


_OPTION_NAMES = (
    "backend",
    "flmrun",
    "max_executors",
    "policies",
    "retry_limit",
    "default_resreq",
    "cache_max_memory",
    "allow_open_sessions",
    "allow_unfinished_tasks",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("flame", "fake Flame cluster (flamepy_fake)")
    group.addoption(
        "--flame-backend",
        choices=_BACKENDS,
        default=None,
        help="default backend of flame_cluster: auto (default), thread or process",
    )
    group.addoption(
        "--flame-flmrun",
        choices=_FLMRUN_MODES,
        default=None,
        help="default flmrun of flame_cluster: builtin (default) or flamepy",
    )
    group.addoption(
        "--flame-max-executors",
        type=positive_int,
        default=None,
        metavar="N",
        help="default cap on instances of flame_cluster, a fake-only limit (default: none, as Flame v0.6.0)",
    )
    group.addoption(
        "--flame-retry-limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="default bind retry limit of flame_cluster (default: 5)",
    )


_SIGTERM_HANDLER = pytest.StashKey[Any]()


class _SigtermAsInterrupt:
    """SIGTERM ends the run like Ctrl-C: pytest tears fixtures down, clusters stop cleanly.

    An xdist controller first passes the signal on to its workers (which handle it the same
    way), since ``timeout`` and CI runners often signal only the process they started.
    """

    def __init__(self, xdist_controller: bool) -> None:
        self.xdist_controller = xdist_controller

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.xdist_controller:
            _forward_to_workers(signum)
        raise KeyboardInterrupt(f"flamepy_fake: received {signal.Signals(signum).name}")


def _forward_to_workers(signum: int) -> None:
    """Pass the signal on to this process's children (xdist workers), so each cleans up."""
    for pid in _child_pids():
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def _child_pids() -> list[int]:
    me, found = os.getpid(), []
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(int(entry))
    return found


def _install_sigterm_handler(config: pytest.Config) -> None:
    # Only where nobody else handles SIGTERM, and only from the main thread (Python's rule).
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    controller = (
        bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ
    )
    handler = _SigtermAsInterrupt(xdist_controller=controller)
    signal.signal(signal.SIGTERM, handler)
    config.stash[_SIGTERM_HANDLER] = handler


def pytest_unconfigure(config: pytest.Config) -> None:
    handler = config.stash.get(_SIGTERM_HANDLER, None)
    if handler is not None and signal.getsignal(signal.SIGTERM) is handler:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_configure(config: pytest.Config) -> None:
    _install_sigterm_handler(config)
    config.addinivalue_line(
        "markers",
        "flame(*, backend='auto', flmrun='builtin', max_executors=None, policies=('priority', 'gang'), "
        "retry_limit=5, default_resreq=None, "
        "cache_max_memory=None, allow_open_sessions=False, allow_unfinished_tasks=False, "
        "fork_server=None): "
        "options of the flame_cluster fixture (the closest marker wins)",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report so the fixture's teardown knows whether the test failed.
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    cluster = item.stash.get(_CLUSTER, None)
    if report.failed and report.when == "call" and cluster is not None and cluster.running:
        for title, text in _bind_failures(cluster):
            report.sections.append((title, text))
    return report


def _bind_failures(cluster: FakeCluster) -> list[tuple[str, str]]:
    """Report sections for sessions that got event 1001/1002: the events, the last instance's stderr."""
    sections = []
    for ssn in cluster.state.list_sessions():
        events = [e for e in cluster.session_events(ssn.id) if e.code in _BIND_EVENTS]
        if not events:
            continue
        lines = [f"event {e.code}: {e.message}" for e in events]
        executor_ids = cluster.executors_of(ssn.id)
        if executor_ids:
            last = executor_ids[-1]
            tail = _stderr(cluster.instance_logs(last)).splitlines()[-_STDERR_LINES:]
            if tail:
                lines.append(f"stderr of the last instance, executor {last} (last {_STDERR_LINES} lines):")
                lines += [f"  {line}" for line in tail]
        sections.append((f"flame_cluster: session {ssn.id} could not start an instance", "\n".join(lines)))
    return sections


def _stderr(logs: str) -> str:
    marker = "--- stderr ---\n"  # the layout of FakeCluster.instance_logs()
    return logs.split(marker, 1)[1] if marker in logs else ""


def _options(request: pytest.FixtureRequest) -> FlameOptions:
    __tracebackhide__ = True
    config = request.config
    kwargs: dict[str, Any] = {}
    for name in ("backend", "flmrun", "max_executors", "retry_limit"):
        value = config.getoption(f"flame_{name}", None)
        if value is not None:
            kwargs[name] = value
    # iter_markers yields the closest marker first; apply the farthest first so the closest wins.
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        if marker.args:
            raise TypeError(f"@pytest.mark.flame takes keyword arguments only; got {marker.args!r}")
        unknown = sorted(set(marker.kwargs) - set(_OPTION_NAMES))
        if unknown:
            raise TypeError(
                f"@pytest.mark.flame got unknown option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(_OPTION_NAMES)}"
            )
        kwargs.update(marker.kwargs)
    try:
        return FlameOptions(**kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"@pytest.mark.flame: {exc}") from None


def _test_failed(item: pytest.Item) -> bool:
    reports = item.stash.get(_REPORTS, {})
    return any(rep.failed for rep in reports.values())


def _leftovers(cluster: FakeCluster, options: FlameOptions) -> list[str]:
    from flamepy_runner._proto import pb

    state = cluster.state
    open_sessions: list[str] = []
    unfinished: list[str] = []
    for ssn in state.list_sessions():
        if ssn.state == pb.Open:
            open_sessions.append(
                f"  - {ssn.id} (application {ssn.application}: {ssn.pending} pending, "
                f"{ssn.running} running, {ssn.succeed} succeeded, {ssn.failed} failed)"
            )
        for task in state.list_tasks(ssn.id):
            if task.state in (pb.Pending, pb.Running):
                unfinished.append(f"  - task {task.id} of session {ssn.id}: {pb.TaskState.Name(task.state)}")
    sections: list[str] = []
    if open_sessions and not options.allow_open_sessions:
        sections += [
            "Sessions still open (close them, or allow with @pytest.mark.flame(allow_open_sessions=True)):",
            *open_sessions,
        ]
    if unfinished and not options.allow_unfinished_tasks:
        sections += [
            "Tasks not finished (wait for them, "
            "or allow with @pytest.mark.flame(allow_unfinished_tasks=True)):",
            *unfinished,
        ]
    return sections


def _abandoned(cluster: FakeCluster) -> list[str]:
    if not cluster.abandoned_instances:
        return []
    return [
        "Thread instances abandoned by stop() (a thread cannot be killed: its code keeps running "
        "in this process):",
        *(f"  - {entry.describe()}" for entry in cluster.abandoned_instances),
    ]


def _left_behind(own_dir: Path, pids: list[int]) -> list[str]:
    """What the cluster itself failed to clean up in stop(): never the test's fault."""
    items = [f"  - directory {own_dir}"] if own_dir.exists() else []
    for pid in pids:
        try:
            os.kill(pid, 0)  # succeeds for a live or an unreaped (zombie) child
        except ProcessLookupError:
            continue
        except PermissionError:  # the pid was reused by someone else's process
            continue
        items.append(f"  - instance process {pid}")
    if not items:
        return []
    return ["flame_cluster: left behind after stop() (a flamepy_fake bug, please report it):", *items]


# What a developer's environment may hold that would lead code under test off the fake.
_FOREIGN_ENV = ("FLAME_ENDPOINT", "FLAME_CACHE_ENDPOINT", "FLAME_CA_FILE", "FLAME_CACHE_STORAGE")


@pytest.fixture(name="flame_cluster")
def _flame_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeCluster]:
    """A started fake Flame cluster for this test, stopped (and checked for leftovers) after it.

    Offline means offline: while the test runs, ``HOME`` is the cluster's own (its
    ``.flame/flame.yaml`` names only this cluster) and the developer's ``FLAME_*`` variables are
    unset, so neither flamepy nor ``FlameConfig.load()`` can reach another cluster.
    """
    __tracebackhide__ = True
    from ._cluster import FakeCluster

    options = _options(request)
    work_dir: Path = tmp_path_factory.mktemp("flame")
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    cluster = FakeCluster(work_dir=work_dir, **options.cluster_kwargs())
    cluster.start()
    monkeypatch.setenv("HOME", str(cluster.home))
    request.node.stash[_CLUSTER] = cluster
    own_dir = cluster.work_dir
    sections: list[str] = []
    pids: list[int] = []
    try:
        yield cluster
        if cluster.running:  # the test may have stopped it itself
            pids = [e.pid for e in cluster.executors() if e.pid]
            if not _test_failed(request.node):
                sections = _leftovers(cluster, options)
    finally:
        cluster.stop()
        del request.node.stash[_CLUSTER]
    if sections:
        sections.insert(0, "flame_cluster: the test left work behind on the fake Flame cluster")
        sections += _abandoned(cluster)
    elif cluster.abandoned_instances:
        warnings.warn(pytest.PytestWarning("\n".join(_abandoned(cluster))), stacklevel=1)
    if not _test_failed(request.node):
        sections += _left_behind(own_dir, pids)
    if sections:
        pytest.fail("\n".join(sections), pytrace=False)


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


@pytest.fixture(name="flame_env")
def _flame_env(flame_cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``flame_cluster``'s environment set in ``os.environ``, flamepy's cached clients reset.

    Like ``flame_cluster``, ``HOME`` is the cluster's own (its flame.yaml names only this
    cluster) and the developer's other ``FLAME_*`` variables are unset while the test runs.

    Yields:
        The ``FLAME_ENDPOINT`` / ``FLAME_CACHE_ENDPOINT`` mapping that was set.
    """
    env = flame_cluster.env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_flamepy_clients()
    try:
        yield env
    finally:
        reset_flamepy_clients()
