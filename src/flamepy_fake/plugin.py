"""pytest plugin: Flame clusters for tests (registered as the ``flamepy_fake`` pytest11 entry).

The plugin stays inert until a test asks for one of its fixtures (or ``--flame-autostart``):

- ``flame_cluster``: a started :class:`~flamepy_fake.FakeCluster` (one per test by default), or a
  cluster-like handle on ``--flame-backend real|external``;
- ``flame_env``: the same cluster, with ``FLAME_ENDPOINT`` / ``FLAME_CACHE_ENDPOINT`` set in
  ``os.environ`` and flamepy's process-wide cached connections reset, so ``flamepy.*`` calls
  reach this cluster;
- ``flame_config``: the cluster's :class:`flamepy_runner.FlameConfig`;
- ``flame_runner``: a factory of started :class:`flamepy_runner.Runner` objects on the cluster,
  closed after the test.

Options come from ``@pytest.mark.flame(...)`` (keyword-only; the marker closest to the test
wins) over the ``--flame-*`` command-line options over their ``flame_*`` ini settings. At
teardown the fixture fails the test if it left sessions open or tasks unfinished, unless the
marker allows it; the check is skipped when the test already failed. A failed test's report
shows the bind failures (events 1001/1002) of its sessions and the tail of the last instance's
stderr. The fixtures isolate the test from the developer's Flame configuration (HOME and
``FLAME_*``), and SIGTERM ends the run like Ctrl-C.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._options import deprecated_backend_text
from ._plugin._flamepy_reset import reset_flamepy_clients
from ._plugin._interrupts import install_signal_handlers, restore_signal_handlers, signals_received
from ._plugin._leftovers import LEFT_BEHIND, abandoned, cleanup_warning, left_behind, leftovers
from ._plugin._options import _OPTION_NAMES, FlameOptions
from ._plugin._settings import FAKE_ONLY, Settings, add_options, read_settings

if TYPE_CHECKING:
    from flamepy_runner import FlameConfig, PackageCache, Runner

    from ._cluster import FakeCluster
    from ._plugin._autostart import Autostart  # noqa: F401  (named in a StashKey string)
    from ._plugin._pool import ClusterPool
    from ._plugin._remote import RemoteCluster
    from ._plugin._retire import Retirement

    AnyCluster = FakeCluster | RemoteCluster

__all__ = ["FlameOptions", "reset_flamepy_clients"]

_MARKER = "flame"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_CLUSTER = pytest.StashKey["FakeCluster"]()
_SETTINGS = pytest.StashKey[Settings]()
_AUTOSTART = pytest.StashKey["Autostart"]()
_PACKAGES = pytest.StashKey["PackageCache"]()
_FIXTURE_CLOSE_GRACE = 1.0  # seconds flame_runner's teardown waits for calls in flight
_PRESTART = pytest.StashKey[threading.Thread]()
_FAKE_ONLY_MARKER = "flame_fake_only"
_REAL_ONLY_MARKER = "flame_real_only"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# The pytest runs alive in this process (a pytester inline run nests one in another): the
# shared zygotes are stopped when the outermost one ends, not when a nested one does.
_LIVE_CONFIGS: set[int] = set()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # Before an xdist worker reports that it finished: its controller may end it right after.
    _stop_autostart(session.config)


def _stop_autostart(config: pytest.Config) -> None:
    autostart = config.stash.get(_AUTOSTART, None)
    if autostart is not None:
        del config.stash[_AUTOSTART]
        autostart.stop()


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_autostart(config)
    prestart = config.stash.get(_PRESTART, None)
    if prestart is not None:
        del config.stash[_PRESTART]
        prestart.join(timeout=60)  # imports only: then the zygote is the pool's to stop
    packages = config.stash.get(_PACKAGES, None)
    if packages is not None:
        del config.stash[_PACKAGES]
        packages.close()
    _LIVE_CONFIGS.discard(id(config))
    if not _LIVE_CONFIGS:
        _stop_shared_start_up()
    restore_signal_handlers(config)


def _stop_shared_start_up() -> None:
    # The clusters of this process share warm zygotes (``_executors._zygote_pool``) and
    # installed packages (``_install.shared_release_store``); the run is over, so they go now
    # rather than at interpreter exit (an xdist worker may never get there). Only if a cluster
    # ever made them: the plugin stays inert otherwise.
    pool = sys.modules.get("flamepy_fake._executors._zygote_pool")
    if pool is not None:
        pool.stop_shared_fork_servers()
    install = sys.modules.get("flamepy_fake._install")
    if install is not None:
        install.close_shared_release_store()


def pytest_configure(config: pytest.Config) -> None:
    _LIVE_CONFIGS.add(id(config))
    install_signal_handlers(config)
    config.addinivalue_line(
        "markers",
        "flame(*, executors='auto', flmrun='builtin', max_executors=None, policies=('priority', 'gang'), "
        "retry_limit=5, default_resreq=None, "
        "cache_max_memory=None, allow_open_sessions=False, allow_unfinished_tasks=False, "
        "fork_server=None, instance_imports='declared'): "
        "options of the flame_cluster fixture (the closest marker wins)",
    )
    config.addinivalue_line(
        "markers", f"{_FAKE_ONLY_MARKER}(reason=None): run only on --flame-backend fake (skip otherwise)"
    )
    config.addinivalue_line(
        "markers",
        f"{_REAL_ONLY_MARKER}(reason=None): run only on --flame-backend real or external (skip on fake)",
    )
    settings = read_settings(config)
    config.stash[_SETTINGS] = settings
    if settings.autostart and not _xdist_controller(config):
        _autostart(config, settings)


# Fixtures whose tests start a fake cluster (on --flame-backend fake).
_CLUSTER_FIXTURES = frozenset({"flame_cluster", "flame_env", "flame_config", "flame_runner"})


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the zygote in the background when the collected tests will need a cluster, so its
    imports overlap the first cluster's start rather than delay its first instance."""
    config = session.config
    settings = config.stash.get(_SETTINGS, None)
    if (
        settings is None
        or settings.backend != "fake"
        or settings.cluster.get("executors") == "thread"
        or settings.cluster.get("fork_server") is False
        or config.option.collectonly
        or _xdist_controller(config)
        or not any(_CLUSTER_FIXTURES.intersection(getattr(i, "fixturenames", ())) for i in session.items)
    ):
        return
    thread = threading.Thread(
        target=_prestart,
        args=(
            settings.cluster.get("flmrun", "builtin"),
            settings.cluster.get("instance_imports", "declared"),
        ),
        name="flamepy-fake-prestart",
        daemon=True,
    )
    thread.start()
    config.stash[_PRESTART] = thread


def _prestart(flmrun: str, instance_imports: str) -> None:
    try:
        from ._executors._zygote_pool import prestart_fork_server

        prestart_fork_server(flmrun=flmrun, instance_imports=instance_imports)
    except Exception:  # an optimisation only: the first cluster starts the zygote anyway
        pass


def _xdist_controller(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and "PYTEST_XDIST_WORKER" not in os.environ


def _autostart(config: pytest.Config, settings: Settings) -> None:
    from ._plugin._autostart import Autostart

    try:
        kwargs = FlameOptions(**settings.fake_defaults()).cluster_kwargs()
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"--flame-autostart: {exc}") from None
    autostart = Autostart(settings, kwargs)
    autostart.start()
    config.stash[_AUTOSTART] = autostart


def _settings(config: pytest.Config) -> Settings:
    return config.stash[_SETTINGS]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before fixtures are set up, so a skipped test never starts a cluster.
    backend = _settings(item.config).backend
    for name, wanted, default in (
        (_FAKE_ONLY_MARKER, backend == "fake", "needs the fake cluster"),
        (_REAL_ONLY_MARKER, backend != "fake", "needs a real Flame cluster"),
    ):
        marker = item.get_closest_marker(name)
        if marker is not None and not wanted:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None) or default
            pytest.skip(f"{name}: {reason} (the backend is {backend})")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report so the fixture's teardown knows whether the test failed.
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    cluster = item.stash.get(_CLUSTER, None)
    if report.failed and report.when == "call" and cluster is not None and cluster.running:
        from ._toolkit._report import failure_sections

        report.sections += failure_sections(cluster)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Faults end with the test that set them, before any fixture's teardown runs, so cleanup
    # code (closing Runners, deleting sessions) is not hit by them.
    cluster = item.stash.get(_CLUSTER, None)
    if cluster is not None and cluster.running:
        cluster.faults.clear()


def _marker_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The options the test's ``flame`` markers give (closest wins), ``backend=`` renamed."""
    __tracebackhide__ = True
    kwargs: dict[str, Any] = {}
    # iter_markers yields the closest marker first; apply the farthest first so the closest wins.
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        if marker.args:
            raise TypeError(f"@pytest.mark.flame takes keyword arguments only; got {marker.args!r}")
        unknown = sorted(set(marker.kwargs) - {*_OPTION_NAMES, "backend"})  # backend: deprecated
        if unknown:
            raise TypeError(
                f"@pytest.mark.flame got unknown option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(_OPTION_NAMES)}"
            )
        given = dict(marker.kwargs)
        if "backend" in given:
            if "executors" in given:
                raise TypeError("@pytest.mark.flame: give executors or its former name backend, not both")
            warnings.warn(
                pytest.PytestDeprecationWarning(
                    deprecated_backend_text(f"@pytest.mark.flame(backend={given['backend']!r})")
                ),
                stacklevel=1,
            )
            given["executors"] = given.pop("backend")
        kwargs.update(given)
    return kwargs


def _options(request: pytest.FixtureRequest, marked: dict[str, Any]) -> FlameOptions:
    __tracebackhide__ = True
    kwargs = {**_settings(request.config).fake_defaults(), **marked}
    try:
        return FlameOptions(**kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"@pytest.mark.flame: {exc}") from None


def _test_failed(item: pytest.Item) -> bool:
    """Whether the test failed, or the run was interrupted (Ctrl-C, SIGTERM): an interrupted
    test is a failed one, and the leftover checks would only add noise to pytest's exit."""
    if _interrupted(item):
        return True
    reports = item.stash.get(_REPORTS, {})
    return any(rep.failed for rep in reports.values())


def _interrupted(item: pytest.Item) -> bool:
    # pytest sets it before tearing the interrupted run's fixtures down (in sessionfinish),
    # unless a second signal cut its handler short: the count covers that.
    if signals_received(item.config):
        return True
    return bool(getattr(item.session, "exitstatus", None) == pytest.ExitCode.INTERRUPTED)


# What a developer's environment may hold that would lead code under test off the fake.
_FOREIGN_ENV = ("FLAME_ENDPOINT", "FLAME_CACHE_ENDPOINT", "FLAME_CA_FILE", "FLAME_CACHE_STORAGE")


@pytest.fixture(name="flame_cluster")
def _flame_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AnyCluster]:
    """The test's Flame cluster: a started ``FakeCluster`` (or a handle on a real/external one).

    With ``--flame-scope function`` (the default) each test gets a fresh fake cluster, stopped
    (and checked for leftovers) after it; with ``module`` or ``session`` the cluster is shared
    and what the test created is removed after it. Offline means offline: while the test runs,
    ``HOME`` is the cluster's own (its ``.flame/flame.yaml`` names only this cluster) and the
    developer's ``FLAME_*`` variables are unset, so neither flamepy nor ``FlameConfig.load()``
    can reach another cluster.
    """
    __tracebackhide__ = True
    settings = _settings(request.config)
    marked = _marker_options(request)
    for name in _FOREIGN_ENV:
        monkeypatch.delenv(name, raising=False)
    if settings.backend != "fake":
        yield from _remote_cluster(request, tmp_path_factory, monkeypatch, settings, marked)
    elif settings.scope == "function":
        yield from _own_cluster(request, tmp_path_factory, monkeypatch, _options(request, marked))
    else:
        yield from _shared_cluster(request, monkeypatch, settings.scope, _options(request, marked))


def _own_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    options: FlameOptions,
) -> Iterator[FakeCluster]:
    __tracebackhide__ = True
    from ._cluster import FakeCluster

    retirement: Retirement = request.getfixturevalue("_flame_retirement")
    work_dir: Path = tmp_path_factory.mktemp("flame")
    cluster = FakeCluster(work_dir=work_dir, **options.cluster_kwargs())
    cluster.start()
    monkeypatch.setenv("HOME", str(cluster.home))
    request.node.stash[_CLUSTER] = cluster
    own_dir = cluster.work_dir
    sections: list[str] = []
    pids: list[int] = []
    retired = False
    try:
        yield cluster
        if cluster.running:  # the test may have stopped it itself
            pids = [e.pid for e in cluster.executors() if e.pid]
            if not _test_failed(request.node):
                sections = leftovers(cluster, options)
            # Instances in processes cannot touch the next test: their cluster is stopped in
            # the background (see _plugin/_retire.py). Thread instances run in this process,
            # work left behind may keep a stop busy, and an interrupted run must end now: those
            # stop here.
            retired = options.executors != "thread" and not sections and not _interrupted(request.node)
    finally:
        if retired:
            finish = cluster._retire()
        else:
            cluster.stop()
        del request.node.stash[_CLUSTER]
    if retired:
        check = (lambda: []) if _test_failed(request.node) else (lambda: left_behind(own_dir, pids))
        retirement.retire(finish, check, request.node.nodeid)
        return
    if sections:
        sections.insert(0, "flame_cluster: the test left work behind on the fake Flame cluster")
        sections += abandoned(cluster)
    elif cluster.abandoned_instances:
        warnings.warn(pytest.PytestWarning("\n".join(abandoned(cluster))), stacklevel=1)
    if not _test_failed(request.node):
        left = left_behind(own_dir, pids)
        if left:
            sections += [LEFT_BEHIND, *(f"  {item}" for item in left)]
    if sections:
        pytest.fail("\n".join(sections), pytrace=False)


@pytest.fixture(name="_flame_retirement", scope="session")
def _flame_retirement() -> Iterator[Retirement]:
    """The run's clusters being stopped in the background; at the end, what they left behind."""
    from ._plugin._retire import Retirement

    retirement = Retirement()
    yield retirement
    problems = retirement.wait()
    if problems:
        pytest.fail("\n".join([LEFT_BEHIND, *problems]), pytrace=False)


def _shared_cluster(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, scope: str, options: FlameOptions
) -> Iterator[FakeCluster]:
    __tracebackhide__ = True
    from ._toolkit._workset import cleanup, snapshot

    pool: ClusterPool = request.getfixturevalue(f"_flame_{scope}_pool")
    cluster = pool.fake(options.cluster_kwargs())
    monkeypatch.setenv("HOME", str(cluster.home))
    before = snapshot(cluster.config)
    request.node.stash[_CLUSTER] = cluster
    sections: list[str] = []
    try:
        yield cluster
        if cluster.running and not _test_failed(request.node):
            sections = leftovers(cluster, options, earlier=before.sessions)
    finally:
        del request.node.stash[_CLUSTER]
        if cluster.running:
            problems = cleanup(cluster.config, before)
            if problems and not sections:
                warnings.warn(cleanup_warning(problems), stacklevel=1)
    if sections:
        sections.insert(0, "flame_cluster: the test left work behind on the fake Flame cluster")
        pytest.fail("\n".join(sections), pytrace=False)


def _remote_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    marked: dict[str, Any],
) -> Iterator[RemoteCluster]:
    __tracebackhide__ = True
    fake_only = [name for name in FAKE_ONLY if name in marked]
    if fake_only:
        given = ", ".join(f"{name}={marked[name]!r}" for name in fake_only)
        pytest.skip(f"@pytest.mark.flame({given}): fake-only (the backend is {settings.backend})")
    from ._errors import Unavailable
    from ._plugin._remote import RemoteCluster
    from ._toolkit._workset import cleanup, snapshot

    pool: ClusterPool = request.getfixturevalue("_flame_session_pool")
    try:
        backend = pool.remote(settings)
    except Unavailable as exc:
        pytest.skip(f"--flame-backend {settings.backend}: {exc}")
    cluster = RemoteCluster(settings.backend, backend.config, tmp_path_factory.mktemp("home"), backend.origin)
    monkeypatch.setenv("HOME", str(cluster.home))
    before = snapshot(cluster.config)
    try:
        yield cluster
    finally:
        problems = cleanup(cluster.config, before)
        if problems:
            warnings.warn(cleanup_warning(problems), stacklevel=1)


@pytest.fixture(name="_flame_session_pool", scope="session")
def _flame_session_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """The clusters shared by the whole run (``--flame-scope session``, real and external)."""
    from ._plugin._pool import ClusterPool

    pool = ClusterPool(tmp_path_factory.mktemp("flame-session"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(name="_flame_module_pool", scope="module")
def _flame_module_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """The fake clusters shared by one module's tests (``--flame-scope module``)."""
    from ._plugin._pool import ClusterPool

    pool = ClusterPool(tmp_path_factory.mktemp("flame-module"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(name="flame_config")
def _flame_config(flame_cluster: AnyCluster) -> FlameConfig:
    """The :class:`flamepy_runner.FlameConfig` of the test's cluster (reads no file)."""
    return flame_cluster.config


def _package_cache(config: pytest.Config) -> PackageCache:
    """The run's package cache, made on first use and closed when the run ends."""
    cache = config.stash.get(_PACKAGES, None)
    if cache is None:
        from flamepy_runner import PackageCache

        cache = config.stash[_PACKAGES] = PackageCache()
    return cache


@pytest.fixture(name="flame_runner")
def _flame_runner(
    flame_config: FlameConfig, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Runner]]:
    """A factory of started :class:`flamepy_runner.Runner` objects on the test's cluster.

    ``flame_runner(name=None, *, project_dir=None, **runner_kwargs)`` returns a started Runner
    with ``config=`` the cluster's :class:`FlameConfig`; ``name`` defaults to a unique
    ``test-<10 hex digits>``; ``project_dir`` (the directory packaged) defaults to pytest's
    rootdir (``request.config.rootpath``). Packages are built once per content for the whole
    run (a :class:`flamepy_runner.PackageCache` of the run, outside the project; pass
    ``package_cache=`` to use another). Every Runner is closed after the test, before the
    cluster's leftover check, waiting at most 1 s for calls still in flight (none when the
    run was interrupted), whatever its ``close_timeout``.
    """
    from flamepy_runner import Runner

    runners: list[Runner] = []

    def make(
        name: str | None = None, *, project_dir: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> Runner:
        kwargs.setdefault("package_cache", _package_cache(request.config))
        runner = Runner(
            name if name is not None else f"test-{uuid.uuid4().hex[:10]}",
            config=flame_config,
            project_dir=request.config.rootpath if project_dir is None else project_dir,
            **kwargs,
        )
        runners.append(runner)
        return runner

    try:
        yield make
    finally:
        # Calls still running when the test ends get a short grace, not the Runner's
        # close_timeout (30 s): the test is over, and the leftover check reports what is left.
        # None at all when the run was interrupted.
        grace = 0.0 if _interrupted(request.node) else _FIXTURE_CLOSE_GRACE
        for runner in reversed(runners):
            runner.close(timeout=min(grace, runner.close_timeout))


@pytest.fixture(name="flame_env")
def _flame_env(flame_cluster: AnyCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
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
