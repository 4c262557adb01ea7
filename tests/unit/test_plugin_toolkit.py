"""The plugin's testing toolkit, through pytester: flame_config, flame_runner, autostart, backends,
ini settings and shared scopes.

Skip reasons and usage errors are API (users read them in CI logs), so they are pinned whole.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamepy_fake import FakeCluster
from flamepy_fake._toolkit._workset import snapshot

# A developer's flame.yaml that points somewhere else: the fixtures and autostart must never read it.
FOREIGN_FLAME_YAML = """\
current-context: elsewhere
contexts:
  - name: elsewhere
    cluster: {endpoint: "http://192.0.2.1:1"}
    cache: {endpoint: "grpc://192.0.2.1:2"}
"""

# The one text every former spelling of the instance mode warns with (after its spelling).
DEPRECATED = (
    "is deprecated: the instance mode is now executors (executors=..., --executors, "
    "--flame-executors, ini flame_executors; same values: auto, thread, process); backend names "
    "where clusters come from (fake, real, external)"
)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    home = pytester.path / "developer-home"
    (home / ".flame").mkdir(parents=True)
    (home / ".flame" / "flame.yaml").write_text(FOREIGN_FLAME_YAML)
    monkeypatch.setenv("HOME", str(home))
    for var in ("FLAME_ENDPOINT", "FLAME_CACHE_ENDPOINT", "FLAMEPY_FAKE_AUTOSTART"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeconftest("")
    return pytester


@pytest.fixture
def external(tmp_path: Path) -> Iterator[FakeCluster]:
    """A cluster the inner run uses as ``--flame-backend external``."""
    with FakeCluster(work_dir=tmp_path) as cluster:
        yield cluster


def _external_args(cluster: FakeCluster) -> tuple[str, ...]:
    return (
        "--flame-backend=external",
        f"--flame-endpoint={cluster.endpoint}",
        f"--flame-cache-endpoint={cluster.cache_endpoint}",
    )


# --------------------------------------------------------------------------- flame_config, flame_runner


def test_flame_config_is_the_clusters_config(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from flamepy_runner import FlameConfig

        def test_it(flame_config, flame_cluster):
            assert isinstance(flame_config, FlameConfig)
            assert flame_config == flame_cluster.config
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_flame_runner_runs_the_projects_code_and_closes_at_teardown(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        mathlib="""
        def square(x):
            return x * x
        """,
        test_runner="""
        import re
        from pathlib import Path
        from mathlib import square

        seen = {}

        def test_runs(flame_runner, flame_cluster, request):
            runner = flame_runner()
            assert re.fullmatch(r"test-[0-9a-f]{10}", runner.name)
            assert runner.project_dir == Path(request.config.rootpath)
            assert runner.config == flame_cluster.config
            assert runner.get([runner.service(square)(i) for i in range(3)]) == [0, 1, 4]
            other = flame_runner()
            assert other.name != runner.name
            service = other.service(square)   # left open on purpose: closed with its Runner
            assert service(5).get() == 25
            seen["runners"] = (runner, other)
            seen["cluster"] = flame_cluster

        def test_closed_after_the_test():
            for runner in seen["runners"]:
                assert runner._closed

        def test_name_project_dir_and_runner_kwargs(flame_runner, tmp_path):
            (tmp_path / "lib.py").write_text("def one():\\n    return 1\\n")
            runner = flame_runner("my-app", project_dir=tmp_path, close_timeout=5.0)
            assert (runner.name, runner.project_dir, runner.close_timeout) == ("my-app", tmp_path, 5.0)
        """,
    )
    inner.runpytest_subprocess().assert_outcomes(passed=3)


def test_flame_runner_works_on_an_external_cluster(inner: pytest.Pytester, external: FakeCluster) -> None:
    inner.makepyfile(
        mathlib="""
        def square(x):
            return x * x
        """,
        test_runner="""
        from mathlib import square

        def test_runs(flame_runner, flame_config):
            runner = flame_runner()
            assert runner.service(square)(7).get() == 49
        """,
    )
    inner.runpytest_subprocess(*_external_args(external)).assert_outcomes(passed=1)
    assert sorted(a.name for a in external.state.list_applications()) == ["flmexec", "flmping", "flmrun"]


# --------------------------------------------------------------------------- autostart

# A suite written for a real cluster: plain flamepy, no fixture of ours.
PLAIN_FLAMEPY_SUITE = """
import os
import flamepy
from flamepy.runner import Runner

def test_lists_the_default_applications():
    assert sorted(a.name for a in flamepy.list_applications()) == ["flmexec", "flmping", "flmrun"]

def test_flmping_session():
    session = flamepy.create_session("flmping")
    try:
        session.invoke(b"{}")
    finally:
        session.close()

def test_flamepy_runner(tmp_path, monkeypatch):
    # flamepy packages the working directory; pytester's own has a symlink out of the tree.
    (tmp_path / "mathlib.py").write_text("def double(x):\\n    return 2 * x\\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    from mathlib import double

    with Runner("autostarted-app") as runner:
        service = runner.service(double)
        assert service(21).get() == 42

def test_environment_names_the_cluster():
    assert os.environ["FLAME_ENDPOINT"].startswith("http://127.0.0.1:")
    assert os.environ["FLAME_CACHE_ENDPOINT"].startswith("grpc://127.0.0.1:")
    assert "192.0.2.1" not in open(os.path.expanduser("~/.flame/flame.yaml")).read()
"""


def test_autostart_runs_a_plain_flamepy_suite(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_plain=PLAIN_FLAMEPY_SUITE)
    inner.runpytest_subprocess("--flame-autostart").assert_outcomes(passed=4)


def test_autostart_from_the_environment_and_with_xdist_one_cluster_per_worker(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_plain=PLAIN_FLAMEPY_SUITE,
        test_workers="""
        import os

        def test_record(request):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            (request.config.rootpath / f"endpoint-{worker}").write_text(os.environ["FLAME_ENDPOINT"])
        """,
    )
    os.environ["FLAMEPY_FAKE_AUTOSTART"] = "1"
    try:
        result = inner.runpytest_subprocess("-n", "2", "-p", "xdist")
    finally:
        del os.environ["FLAMEPY_FAKE_AUTOSTART"]
    result.assert_outcomes(passed=5)
    endpoints = [p.read_text() for p in inner.path.glob("endpoint-*")]
    assert len(endpoints) == 1 or len(set(endpoints)) == len(endpoints)


def test_autostart_from_the_ini_file_takes_the_cluster_options(inner: pytest.Pytester) -> None:
    inner.makeini(
        """
        [pytest]
        flame_autostart = true
        flame_executors = process
        """
    )
    inner.makepyfile(
        """
        import flamepy

        def test_it():
            assert len(flamepy.list_applications()) == 3
        """
    )
    inner.runpytest_subprocess().assert_outcomes(passed=1)


def test_without_autostart_nothing_is_exported(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import os

        def test_it():
            assert "FLAME_ENDPOINT" not in os.environ
        """
    )
    inner.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_bad_autostart_value_is_a_usage_error(inner: pytest.Pytester) -> None:
    inner.makeini("[pytest]\nflame_autostart = maybe\n")
    result = inner.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: flame_autostart / FLAMEPY_FAKE_AUTOSTART: must be true or false; got 'maybe'"]
    )


# --------------------------------------------------------------------------- backends


def test_real_backend_without_docker_skips_with_the_reason(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = "/nonexistent-flamepy-fake-test/docker.sock"  # short: AF_UNIX paths are limited to 108 bytes
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    inner.makepyfile(
        """
        def test_one(flame_cluster):
            pass

        def test_two(flame_runner):
            pass

        def test_without_a_cluster():
            pass
        """
    )
    result = inner.runpytest("--flame-backend=real", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    reason = f"--flame-backend real: no Docker engine (DOCKER_HOST unix://{sock}: No such file or directory)"
    result.stdout.fnmatch_lines([f"SKIPPED [[]1[]] *.py:1: {reason}", f"SKIPPED [[]1[]] *.py:4: {reason}"])


def test_external_backend_hands_out_the_same_interface_and_cleans_up(
    inner: pytest.Pytester, external: FakeCluster
) -> None:
    inner.makepyfile(
        """
        import flamepy
        from flamepy_runner import CacheClient
        from flamepy_fake._plugin._remote import RemoteCluster

        def test_interface(flame_cluster, flame_env):
            assert isinstance(flame_cluster, RemoteCluster)
            assert (flame_cluster.endpoint, flame_cluster.cache_endpoint) == (@EP@, @CACHE@)
            assert flame_env == {"FLAME_ENDPOINT": @EP@, "FLAME_CACHE_ENDPOINT": @CACHE@}
            assert flame_cluster.config.endpoint == @EP@
            assert flame_cluster.client_env()["HOME"] == str(flame_cluster.home)
            flamepy.register_application("made-by-test", flamepy.ApplicationAttributes(command="x"))
            flamepy.create_session("flmping", session_id="left-open")
            with CacheClient(flame_cluster.config) as cache:
                cache.put_object("made-by-test/left-open", 1)

        def test_fake_only_feature(flame_cluster):
            flame_cluster.executors()
        """.replace("@EP@", repr(external.endpoint)).replace("@CACHE@", repr(external.cache_endpoint))
    )
    result = inner.runpytest_subprocess(*_external_args(external), "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: flame_cluster.executors is fake-only "
            f"(the backend is external: existing cluster at {external.endpoint})"
        ]
    )
    assert sorted(a.name for a in external.state.list_applications()) == ["flmexec", "flmping", "flmrun"]
    assert [s.id for s in external.state.list_sessions() if s.state == 0] == []  # none left open
    assert snapshot(external.config).keys == frozenset()


def test_fake_only_marker_options_skip_on_other_backends(
    inner: pytest.Pytester, external: FakeCluster
) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(executors="process", max_executors=2)
        def test_it(flame_cluster):
            pass

        @pytest.mark.flame(allow_open_sessions=True)
        def test_allowed_everywhere(flame_cluster):
            pass
        """
    )
    result = inner.runpytest(*_external_args(external), "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: @pytest.mark.flame(executors='process', max_executors=2): "
            "fake-only (the backend is external)"
        ]
    )


def test_markers_restrict_a_test_to_fake_or_real_backends(
    inner: pytest.Pytester, external: FakeCluster
) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame_fake_only
        def test_fake():
            pass

        @pytest.mark.flame_fake_only(reason="inspects executors")
        def test_fake_with_reason():
            pass

        @pytest.mark.flame_real_only
        def test_real():
            pass

        @pytest.mark.flame_real_only("timing of real containers")
        def test_real_with_reason():
            pass
        """
    )
    on_fake = inner.runpytest("-rs")
    on_fake.assert_outcomes(passed=2, skipped=2)
    on_fake.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: flame_real_only: needs a real Flame cluster (the backend is fake)",
            "SKIPPED [[]1[]] *: flame_real_only: timing of real containers (the backend is fake)",
        ]
    )
    on_external = inner.runpytest(*_external_args(external), "-rs")
    on_external.assert_outcomes(passed=2, skipped=2)
    on_external.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *: flame_fake_only: needs the fake cluster (the backend is external)",
            "SKIPPED [[]1[]] *: flame_fake_only: inspects executors (the backend is external)",
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--flame-backend=external"],
            "--flame-backend external needs --flame-endpoint and --flame-cache-endpoint "
            "(or the ini settings flame_endpoint / flame_cache_endpoint)",
        ),
        (
            ["--flame-backend=external", "--flame-endpoint=http://127.0.0.1:1"],
            "--flame-backend external needs --flame-cache-endpoint "
            "(or the ini settings flame_endpoint / flame_cache_endpoint)",
        ),
        (
            ["--flame-backend=real", "--flame-executors=process", "--flame-max-executors=2"],
            "--flame-executors, --flame-max-executors: fake-only, but the backend is real "
            "(a real cluster is configured by its own flame-cluster.yaml)",
        ),
        (
            ["--flame-backend=real", "--flame-scope=module"],
            "--flame-scope: fake-only, but the backend is real "
            "(a real cluster is always shared by the whole run)",
        ),
        (
            ["--flame-endpoint=http://127.0.0.1:1"],
            "--flame-endpoint is for --flame-backend external (the backend is fake)",
        ),
        (
            ["--flame-backend=real", "--flame-cache-endpoint=grpc://127.0.0.1:1"],
            "--flame-endpoint and --flame-cache-endpoint are for --flame-backend external",
        ),
    ],
)
def test_settings_that_do_not_fit_the_backend_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--flame-backend=k8s")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --flame-backend: must be one of fake, real, external; got 'k8s'"])


def test_the_former_executor_spelling_of_flame_backend_still_works_with_a_warning(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(
        """
        import pytest

        def test_it(flame_cluster):
            assert flame_cluster.options["executors"] == "thread"

        @pytest.mark.flame(backend="process")
        def test_marker(flame_cluster):
            assert flame_cluster.options["executors"] == "process"
        """
    )
    result = inner.runpytest("--flame-backend=thread")
    result.assert_outcomes(passed=2, warnings=2)
    result.stdout.fnmatch_lines(
        [
            f"*PytestDeprecationWarning: --flame-backend = thread {DEPRECATED}",
            f"*PytestDeprecationWarning: @pytest.mark.flame(backend='process') {DEPRECATED}",
        ]
    )


# --------------------------------------------------------------------------- ini settings


def test_every_option_has_an_ini_setting_and_the_command_line_wins(inner: pytest.Pytester) -> None:
    inner.makeini(
        """
        [pytest]
        flame_executors = process
        flame_flmrun = flamepy
        flame_max_executors = 3
        flame_retry_limit = 2
        flame_cache_max_memory = 512M
        """
    )
    inner.makepyfile(
        """
        def test_it(flame_cluster, request):
            options = flame_cluster.options
            expected = request.config.getoption("flame_retry_limit") or 2
            assert (options["executors"], options["flmrun"]) == ("process", "flamepy")
            assert options["max_executors"] == 3
            assert options["retry_limit"] == expected
            assert options["cache_max_memory"] == 512 * 2**20
        """
    )
    inner.runpytest().assert_outcomes(passed=1)
    inner.runpytest("--flame-retry-limit=4").assert_outcomes(passed=1)


def test_cache_max_memory_option(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_it(flame_cluster):
            assert flame_cluster.options["cache_max_memory"] == 2 * 2**30
        """
    )
    inner.runpytest("--flame-cache-max-memory=2G").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "flame_executors = fibers",
            "ini setting flame_executors: must be one of auto, thread, process; got 'fibers'",
        ),
        ("flame_max_executors = 0", "ini setting flame_max_executors: must be at least 1: 0"),
        (
            "flame_scope = class",
            "ini setting flame_scope: must be one of function, module, session; got 'class'",
        ),
    ],
)
def test_a_bad_ini_setting_is_a_usage_error_naming_it(
    pytester: pytest.Pytester, line: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{line}\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_new_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "*--flame-backend=fake|real|external*",
            "*--flame-executors=auto|thread|process*",
            "*--flame-cache-max-memory=SIZE*",
            "*--flame-scope=function|module|session*",
            "*--flame-endpoint=URL*",
            "*--flame-cache-endpoint=URL*",
            "*--flame-autostart*",
            "*flame_cache_max_memory (string):*",
            "*flame_scope (string):*",
        ]
    )


def test_every_cluster_option_is_a_flame_option_an_ini_setting_and_a_cli_flag(
    pytester: pytest.Pytester,
) -> None:
    from flamepy_fake._cli import build_parser
    from flamepy_fake._options import ClusterOptions

    names = ClusterOptions.names()
    assert names == (
        "executors",
        "flmrun",
        "fork_server",
        "instance_imports",
        "max_executors",
        "policies",
        "retry_limit",
        "default_resreq",
        "cache_max_memory",
    )
    result = pytester.runpytest("--help")
    for spec in ClusterOptions.specs():
        result.stdout.fnmatch_lines([f"*--flame-{spec.flag[2:]}={spec.metavar}*"])
        result.stdout.fnmatch_lines([f"*flame_{spec.name} (string):*"])
    assert result.stdout.str().count("fake only: ") == len(names)
    given = [
        *("--executors", "thread", "--flmrun", "flamepy", "--no-fork-server"),
        *("--instance-imports", "all", "--max-executors", "3", "--policies", "drf,gang"),
        *("--retry-limit", "2", "--default-resreq", "2,1M,0", "--cache-max-memory", "1G"),
    ]
    expected = {
        "executors": "thread",
        "flmrun": "flamepy",
        "fork_server": False,
        "instance_imports": "all",
        "max_executors": 3,
        "policies": ("drf", "gang"),
        "retry_limit": 2,
        "default_resreq": (2, 2**20, 0),
        "cache_max_memory": 2**30,
    }
    for command in (["serve"], ["run", "--", "true"]):
        args = vars(build_parser().parse_args([command[0], *given, *command[1:]]))
        assert {name: args[name] for name in names} == expected
        args = vars(build_parser().parse_args(command))
        assert {name: args[name] for name in names} == dict.fromkeys(names)  # absent: the default


@pytest.mark.parametrize("how", ["option", "ini"])
def test_fork_server_policies_and_default_resreq_are_settable_for_the_run(
    inner: pytest.Pytester, how: str
) -> None:
    values = {"fork_server": "false", "policies": "gang, drf,priority", "default_resreq": "2,4G,1"}
    if how == "ini":
        inner.makeini("[pytest]\n" + "".join(f"flame_{k} = {v}\n" for k, v in values.items()))
        args: list[str] = []
    else:
        args = [f"--flame-{k.replace('_', '-')}={v}" for k, v in values.items()]
    inner.makepyfile(
        """
        import pytest

        def test_run_wide(flame_cluster):
            options = flame_cluster.options
            assert options["fork_server"] is False
            assert options["policies"] == ("priority", "drf", "gang")
            assert options["default_resreq"] == (2, 4 * 2**30, 1)

        @pytest.mark.flame(fork_server=None, default_resreq=(1, 1, 0))
        def test_marker_wins(flame_cluster):
            assert flame_cluster.options["fork_server"] is None
            assert flame_cluster.options["default_resreq"] == (1, 1, 0)
            assert flame_cluster.options["policies"] == ("priority", "drf", "gang")
        """
    )
    inner.runpytest(*args).assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            "--flame-fork-server=sometimes",
            "argument --flame-fork-server: must be auto, true or false; got 'sometimes'",
        ),
        (
            "--flame-default-resreq=2,4G",
            "argument --flame-default-resreq: must be CPU,MEMORY,GPU: whole numbers, MEMORY in bytes "
            "or a size such as 2G; got '2,4G'",
        ),
        (
            "--flame-default-resreq=-1,4G,0",
            "argument --flame-default-resreq: must be CPU,MEMORY,GPU: whole numbers, MEMORY in bytes "
            "or a size such as 2G; got '-1,4G,0'",
        ),
        ("--flame-policies=priority", "argument --flame-policies: *gang*"),
    ],
)
def test_a_bad_cluster_option_value_is_a_usage_error(
    pytester: pytest.Pytester, arg: str, message: str
) -> None:
    result = pytester.runpytest(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*error: {message}"])


@pytest.mark.parametrize(("args", "prestarted"), [((), True), (("--flame-fork-server=false",), False)])
def test_fork_server_false_for_the_run_skips_the_zygote_prestart(
    inner: pytest.Pytester, args: tuple[str, ...], prestarted: bool
) -> None:
    inner.makepyfile(
        f"""
        from flamepy_fake import plugin

        def test_zygote(flame_cluster, request):
            assert flame_cluster._parts.manager.fork_server is {None if prestarted else False}
            assert (request.config.stash.get(plugin._PRESTART, None) is not None) is {prestarted}
        """
    )
    inner.runpytest_subprocess(*args).assert_outcomes(passed=1)


# --------------------------------------------------------------------------- scopes


@pytest.mark.parametrize("scope", ["module", "session"])
def test_a_shared_cluster_is_cleaned_between_tests(inner: pytest.Pytester, scope: str) -> None:
    inner.makepyfile(
        test_a="""
        import flamepy
        import pytest
        from flamepy_runner import CacheClient
        from flamepy_fake._toolkit._workset import snapshot

        from shop import double

        seen = []

        @pytest.mark.flame(allow_open_sessions=True)
        def test_creates(flame_env, flame_cluster, flame_runner):
            seen.append(flame_cluster)
            flamepy.register_application("made-by-test", flamepy.ApplicationAttributes(command="x"))
            flamepy.create_session("flmping", session_id="left-open")
            with CacheClient(flame_cluster.config) as cache:
                cache.put_object("made-by-test/left-open", 1)
            assert flame_runner().service(double)(2).get() == 4

        def test_sees_a_clean_cluster(flame_cluster):
            assert flame_cluster is seen[0] and flame_cluster.running
            assert sorted(a.name for a in flame_cluster.state.list_applications()) == [
                "flmexec", "flmping", "flmrun"
            ]
            assert [s.id for s in flame_cluster.state.list_sessions() if s.state == 0] == []
            assert snapshot(flame_cluster.config).keys == frozenset()
            seen.append(flame_cluster)

        def test_leftovers_are_still_reported(flame_env):
            flamepy.create_session("flmping", session_id="forgotten")
        """,
        test_b="""
        import test_a

        def test_other_module(flame_cluster):
            assert (flame_cluster is test_a.seen[0]) == (SCOPE == "session")
        """.replace("SCOPE", repr(scope)),
        # The service lives in the project's code: a test module imports pytest, which an
        # executor does not have.
        shop="""
        def double(x):
            return 2 * x
        """,
    )
    result = inner.runpytest_subprocess(f"--flame-scope={scope}")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*flame_cluster: the test left work behind on the fake Flame cluster",
            "*Sessions still open (close them, or allow with @pytest.mark.flame(allow_open_sessions=True)):",
            "*  - forgotten (application flmping: 0 pending, 0 running, 0 succeeded, 0 failed)",
        ]
    )


@pytest.mark.parametrize("scope", ["function", "module", "session"])
def test_a_module_global_set_remotely_by_one_test_is_unset_in_the_next(
    inner: pytest.Pytester, scope: str
) -> None:
    # Every cluster of the run forks from one shared zygote; what an instance changes must die
    # with it. The first test shows the global is really set (same instance, second call).
    inner.makepyfile(
        test_state="""
        import os

        FLAG = None
        pids = []

        def flag(value=None):
            global FLAG
            previous = FLAG
            if value is not None:
                FLAG = value
            return previous, os.getpid()

        def test_sets_it(flame_runner):
            service = flame_runner().service(flag)
            before, pid = service("set by the first test").get()
            assert before is None
            assert service().get() == ("set by the first test", pid)
            pids.append(pid)

        def test_does_not_see_it(flame_runner):
            previous, pid = flame_runner().service(flag)().get()
            assert (previous, FLAG) == (None, None)
            assert pid != pids[0]
            pids.append(pid)
        """,
        test_state_2="""
        import test_state

        def test_nor_does_another_module(flame_runner):
            previous, pid = flame_runner().service(test_state.flag)().get()
            assert previous is None
            assert pid not in test_state.pids
        """,
    )
    result = inner.runpytest_subprocess(f"--flame-scope={scope}")
    result.assert_outcomes(passed=3)


def test_flame_runner_packages_once_per_content_outside_the_project(inner: pytest.Pytester) -> None:
    # A project of its own: pytester's directory also holds the run's changing stdout file.
    # No metadata of its own: each test's Runner has its own name, the generated pyproject.toml
    # names the project, so the three Runners share one package until a file changes.
    project = inner.mkdir("proj")
    (project / "inner_tasks.py").write_text("def double(x):\n    return 2 * x\n")
    inner.makepyfile(
        test_packages=f"""
        import sys
        sys.path.insert(0, {str(project)!r})
        import inner_tasks

        PROJECT = {str(project)!r}
        seen = []

        def test_one(flame_runner):
            runner = flame_runner(project_dir=PROJECT)
            assert runner.service(inner_tasks.double)(2).get() == 4
            seen.append(runner.package.path)

        def test_two_reuses_it(flame_runner):
            assert flame_runner(project_dir=PROJECT).package.path == seen[0]

        def test_a_changed_file_is_packaged_anew(flame_runner):
            open(PROJECT + "/added.py", "w").close()
            path = flame_runner(project_dir=PROJECT).package.path
            assert path != seen[0] and path.parent == seen[0].parent
            print("PACKAGES", seen[0].parent)
        """
    )
    result = inner.runpytest_subprocess("-s")
    result.assert_outcomes(passed=3)
    (line,) = [line for line in result.outlines if "PACKAGES " in line]
    packages = Path(line.split("PACKAGES ", 1)[1].split()[0].removesuffix("."))
    assert packages.name.startswith("flamepy-runner-packages-")
    assert not packages.exists()  # removed when the run ended
    assert not (project / "dist").exists()  # never written into the project


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only")
@pytest.mark.parametrize(
    ("args", "uses_cluster", "started"),
    [((), True, True), (("--flame-executors=thread",), True, False), ((), False, False)],
    ids=["cluster-tests", "thread-executors", "no-cluster-tests"],
)
def test_the_zygote_starts_at_collection_only_when_tests_need_a_forking_cluster(
    inner: pytest.Pytester, args: tuple[str, ...], uses_cluster: bool, started: bool
) -> None:
    # The first test takes no fixture: a zygote it sees was started when collection finished.
    # Not started means no prestart thread ran and the pool module was never imported.
    inner.makepyfile(
        test_order=f"""
        import sys, threading, time

        def _pool():
            return sys.modules.get("flamepy_fake._executors._zygote_pool")

        def test_runs_first_with_no_fixture():
            if {started!r}:
                deadline = time.monotonic() + 30
                # _SHARED: set once the prestart thread has finished importing and asked the pool.
                while not getattr(_pool(), "_SHARED", None) or not _pool()._SHARED.servers():
                    assert time.monotonic() < deadline, "no zygote 30 s after collection"
                    time.sleep(0.01)
            else:
                assert [t for t in threading.enumerate() if t.name == "flamepy-fake-prestart"] == []
                assert _pool() is None

        def test_then_one_with_a_cluster({"flame_cluster" if uses_cluster else ""}):
            pass
        """
    )
    result = inner.runpytest_subprocess(*args)
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(
    ("how", "sees_all"),
    [("default", False), ("marker", True), ("option", True), ("ini", True), ("marker-over-ini", False)],
)
def test_instance_imports_from_marker_option_and_ini(
    inner: pytest.Pytester, how: str, sees_all: bool
) -> None:
    # numpy is installed here but declared by no project: hidden from instances by default, as
    # on an executor; instance_imports="all" shows the whole environment again.
    marker = {
        "marker": '@pytest.mark.flame(instance_imports="all")',
        "marker-over-ini": '@pytest.mark.flame(instance_imports="declared")',
    }.get(how, "")
    if how in ("ini", "marker-over-ini"):
        inner.makeini("[pytest]\nflame_instance_imports = all\n")
    inner.makepyfile(
        shop="""
        def numpy_sum(n):
            import numpy
            return int(numpy.arange(n).sum())
        """,
        test_it=f"""
        import pytest
        from flamepy_runner import RemoteError
        from shop import numpy_sum

        {marker}
        def test_numpy(flame_runner):
            svc = flame_runner().service(numpy_sum)
            if {sees_all!r}:
                assert svc(4).get() == 6
            else:
                with pytest.raises(RemoteError) as err:
                    svc(4).get()
                assert err.value.remote_message == "No module named 'numpy'"
        """,
    )
    args = ["--flame-instance-imports=all"] if how == "option" else []
    inner.runpytest_subprocess(*args).assert_outcomes(passed=1)


def test_a_bad_instance_imports_setting_names_the_choices(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(instance_imports="some")
        def test_marked(flame_cluster):
            pass
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E   ValueError: @pytest.mark.flame: instance_imports must be one of declared, all; got 'some'"]
    )
    result = inner.runpytest_subprocess("--flame-instance-imports=some")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*error: argument --flame-instance-imports: must be one of declared, all; got 'some'"]
    )


def test_the_failure_report_names_the_missing_declaration(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        shop="""
        def numpy_sum(n):
            import numpy
            return int(numpy.arange(n).sum())
        """,
        test_it="""
        from shop import numpy_sum

        def test_numpy(flame_runner):
            assert flame_runner("shop").service(numpy_sum)(4).get() == 6
        """,
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * flamepy_runner._exceptions.RemoteError(ModuleNotFoundError): task 1 of session 'shop-*' "
            "(application 'shop') failed: ModuleNotFoundError: No module named 'numpy'",
            "stderr of executor * of session shop-* (last 20 lines):",
        ]
    )
    hint = (
        "  flamepy-fake: module 'numpy' (distribution 'numpy', installed where the tests run) is "
        "hidden from this instance: application 'shop' does not declare it, and a Flame executor "
        "has only the standard library, flamepy 0.6.0 and flamepy-runner with their requirements, "
        "the package and the dependencies it declares. If the task needs it, declare it "
        "(Runner(..., dependencies=['numpy']) or [project] dependencies in the package's "
        "pyproject.toml), or let instances see the test's whole environment with the cluster "
        "option instance_imports='all'."
    )
    header = next(n for n, line in enumerate(result.outlines) if line.startswith("stderr of executor "))
    assert result.outlines[header + 1] == hint
