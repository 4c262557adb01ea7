"""The pytest plugin, driven through pytester: fixtures, marker validation, teardown failure texts.

The failure texts are API (users read them in CI logs), so they are pinned line by line.
"""

from __future__ import annotations

import pytest

from flamepy_fake.plugin import FlameOptions

# Inner test files talk to the cluster with our own stubs (cheap and independent of flamepy).
HELPERS = """
import grpc
import pytest
from flamepy_runner._proto import pb, rpc

def frontend(cluster):
    channel = grpc.insecure_channel(cluster.endpoint.removeprefix("http://"))
    return channel, rpc.Stub(channel, pb.FRONTEND_SERVICE)

def open_wasm_session(cluster, session_id, tasks=0):
    # Wasm applications are never scheduled, so their tasks stay pending.
    channel, stub = frontend(cluster)
    with channel:
        spec = pb.ApplicationSpec(shim=pb.Wasm, command="app.wasm")
        stub.RegisterApplication(pb.RegisterApplicationRequest(name="wasm", application=spec), timeout=10)
        session = pb.SessionSpec(application="wasm")
        stub.CreateSession(pb.CreateSessionRequest(session_id=session_id, session=session), timeout=10)
        for _ in range(tasks):
            stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id=session_id)), timeout=10)
"""


UNFINISHED_HEADING = (
    "Tasks not finished (wait for them, or allow with @pytest.mark.flame(allow_unfinished_tasks=True)):"
)


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("")
    pytester.makepyfile(helpers=HELPERS)
    return pytester


def test_flame_cluster_is_a_started_fake_cluster(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from flamepy_fake import FakeCluster
        from helpers import frontend, pb

        def test_it(flame_cluster):
            assert isinstance(flame_cluster, FakeCluster) and flame_cluster.running
            channel, stub = frontend(flame_cluster)
            with channel:
                apps = stub.ListApplication(pb.ListApplicationRequest(), timeout=10)
            assert sorted(a.metadata.name for a in apps.applications) == ["flmexec", "flmping", "flmrun"]
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_each_test_gets_its_own_cluster_stopped_after_it(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        seen = []

        def test_one(flame_cluster):
            seen.append(flame_cluster)

        def test_two(flame_cluster):
            seen.append(flame_cluster)
            assert seen[0] is not flame_cluster
            assert not seen[0].running
            assert seen[0].options["work_dir"] != flame_cluster.options["work_dir"]
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_marker_options_reach_the_cluster_closest_wins(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.flame(executors="process", max_executors=3)

        def test_module_level(flame_cluster):
            assert flame_cluster.options["executors"] == "process"
            assert flame_cluster.options["max_executors"] == 3

        @pytest.mark.flame(max_executors=7, retry_limit=2)
        class TestClass:
            @pytest.mark.flame(executors="thread")
            def test_closest(self, flame_cluster):
                options = flame_cluster.options
                assert options["executors"] == "thread"
                assert (options["max_executors"], options["retry_limit"]) == (7, 2)
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_command_line_options_are_defaults_under_the_marker(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        def test_default(flame_cluster):
            assert flame_cluster.options["executors"] == "thread"
            assert flame_cluster.options["max_executors"] == 4

        @pytest.mark.flame(executors="process")
        def test_marker_wins(flame_cluster):
            assert flame_cluster.options["executors"] == "process"
        """
    )
    inner.runpytest("--flame-executors=thread", "--flame-max-executors=4").assert_outcomes(passed=2)


def test_flame_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "fake Flame cluster (flamepy_fake):",
            "*--flame-backend=*",
            "*--flame-flmrun=*",
            "*--flame-max-executors=N*",
            "*--flame-retry-limit=N*",
        ]
    )


def test_bad_command_line_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--flame-max-executors=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --flame-max-executors: must be at least 1: 0"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.flame([*], executors='auto', flmrun='builtin', *"])


def test_unknown_marker_option_names_the_valid_ones(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(bakend="thread")
        def test_typo(flame_cluster):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   TypeError: @pytest.mark.flame got unknown option(s) bakend; valid options: executors, "
            "flmrun, fork_server, instance_imports, max_executors, policies, retry_limit, "
            "default_resreq, cache_max_memory, allow_open_sessions, allow_unfinished_tasks",
        ]
    )
    # __tracebackhide__ keeps the plugin's frames out of the report.
    assert "plugin.py" not in result.stdout.str()


def test_the_marker_accepts_fork_server(inner: pytest.Pytester) -> None:
    # Offered by the marker's signature, FlameOptions and the README, once refused as unknown.
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(fork_server=False)
        def test_spawned(flame_cluster):
            assert flame_cluster._parts.manager.fork_server is False
            assert flame_cluster._parts.manager._zygote is None

        @pytest.mark.flame(fork_server=True)
        def test_forked(flame_cluster):
            assert flame_cluster._parts.manager.fork_server is True
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=2)


def test_positional_marker_arguments_are_refused(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame("thread")
        def test_positional(flame_cluster):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E   TypeError: @pytest.mark.flame takes keyword arguments only; got ('thread',)"]
    )


def test_bad_marker_value_is_reported_with_the_marker_name(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(max_executors=0)
        def test_bad(flame_cluster):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["E   ValueError: @pytest.mark.flame: max_executors must be a positive integer or None; got 0"]
    )


def test_open_sessions_and_unfinished_tasks_fail_the_test_at_teardown(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from helpers import open_wasm_session

        def test_leaves_work(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-a", tasks=2)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "flame_cluster: the test left work behind on the fake Flame cluster",
            "Sessions still open (close them, or allow with @pytest.mark.flame(allow_open_sessions=True)):",
            "  - ssn-a (application wasm: 2 pending, 0 running, 0 succeeded, 0 failed)",
            UNFINISHED_HEADING,
            "  - task 1 of session ssn-a: Pending",
            "  - task 2 of session ssn-a: Pending",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        ["ERROR test_open_sessions_and_unfinished_tasks_fail_the_test_at_teardown.py::*"]
    )


def test_each_allow_option_silences_its_own_list(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest
        from helpers import open_wasm_session

        @pytest.mark.flame(allow_open_sessions=True)
        def test_sessions_allowed(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-b", tasks=1)

        @pytest.mark.flame(allow_open_sessions=True, allow_unfinished_tasks=True)
        def test_both_allowed(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-c", tasks=1)
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "flame_cluster: the test left work behind on the fake Flame cluster",
            UNFINISHED_HEADING,
            "  - task 1 of session ssn-b: Pending",
        ],
        consecutive=True,
    )
    assert "Sessions still open" not in result.stdout.str()
    assert "ssn-c" not in result.stdout.str()


def test_closed_sessions_are_not_leftovers(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from helpers import frontend, open_wasm_session, pb

        def test_closes(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-d", tasks=1)
            channel, stub = frontend(flame_cluster)
            with channel:
                stub.CloseSession(pb.CloseSessionRequest(session_id="ssn-d"), timeout=10)
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_a_failed_test_is_not_also_blamed_for_leftovers(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from helpers import open_wasm_session

        def test_fails(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-e", tasks=1)
            assert False, "the real problem"
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(failed=1)
    assert "left work behind" not in result.stdout.str()


def test_a_test_may_stop_the_cluster_itself(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from helpers import open_wasm_session

        def test_stops(flame_cluster):
            open_wasm_session(flame_cluster, "ssn-f", tasks=1)
            flame_cluster.stop()
        """
    )
    inner.runpytest().assert_outcomes(passed=1)


def test_what_the_cluster_fails_to_clean_up_is_reported_as_its_bug(inner: pytest.Pytester) -> None:
    # Simulate a bug in stop(): the work directory is not removed. A subprocess, so the patch
    # does not reach this process.
    inner.makeconftest(
        """
        import flamepy_fake._parts as parts_module

        class _NoRmtree:
            @staticmethod
            def rmtree(path, ignore_errors=False):
                pass

        parts_module.shutil = _NoRmtree
        """
    )
    inner.makepyfile(
        """
        import pytest

        def test_clean(flame_cluster):
            pass

        @pytest.mark.flame(executors="thread")
        def test_threads(flame_cluster):
            pass

        def test_last(flame_cluster):
            pass
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    # A cluster with thread instances is stopped in its test's teardown, and fails that test;
    # the others are stopped in the background, and the run's last teardown reports them,
    # naming each test.
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_threads _*",
            "flame_cluster: left behind after stop() (a flamepy_fake bug, please report it):",
            "  - directory */flame1/flamepy-fake-*",
        ],
        consecutive=True,
    )
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_last _*",
            "flame_cluster: left behind after stop() (a flamepy_fake bug, please report it):",
            "  test_what_the_cluster_fails_to_clean_up_is_reported_as_its_bug.py::test_clean:",
            "    - directory */flame0/flamepy-fake-*",
            "  test_what_the_cluster_fails_to_clean_up_is_reported_as_its_bug.py::test_last:",
            "    - directory */flame2/flamepy-fake-*",
            "*= short test summary info =*",
        ],
        consecutive=True,
    )
    assert "the test left work behind" not in result.stdout.str()


def test_a_process_clusters_stop_runs_while_the_next_test_does(inner: pytest.Pytester) -> None:
    # stop() of a cluster whose instances are processes is held until the next test releases
    # it: if the teardown waited for it, test_second would start only after the 30 s hold.
    # Thread instances run in this process: their cluster stops in the teardown itself.
    inner.makeconftest(
        """
        import threading
        import flamepy_fake._cluster as cluster_module

        RELEASE = threading.Event()
        STOPS = []
        real_stop = cluster_module.FakeCluster.stop

        def held_stop(self):
            STOPS.append((self.options["work_dir"].name, threading.current_thread().name))
            if threading.current_thread() is not threading.main_thread():
                RELEASE.wait(30)
            real_stop(self)

        cluster_module.FakeCluster.stop = held_stop
        """
    )
    inner.makepyfile(
        """
        import threading, time
        import pytest
        import conftest

        def test_first(flame_runner):
            assert flame_runner().service(sum)([1, 2]).get() == 3

        def test_second(flame_cluster):
            assert conftest.STOPS == [("flame0", "flamepy-fake-retire-1")]
            assert not conftest.RELEASE.is_set()
            conftest.RELEASE.set()

        @pytest.mark.flame(executors="thread")
        def test_third(flame_cluster):
            pass

        def test_last():
            deadline = time.monotonic() + 30
            while len(conftest.STOPS) < 3:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert sorted(conftest.STOPS) == [  # flame1's thread and test_third's teardown race
                ("flame0", "flamepy-fake-retire-1"),
                ("flame1", "flamepy-fake-retire-2"),
                ("flame2", "MainThread"),
            ]
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)


def test_flame_env_points_flamepy_at_the_cluster(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import os
        import flamepy

        def test_first(flame_env, flame_cluster):
            assert os.environ["FLAME_ENDPOINT"] == flame_cluster.endpoint == flame_env["FLAME_ENDPOINT"]
            assert os.environ["FLAME_CACHE_ENDPOINT"] == flame_cluster.cache_endpoint
            names = sorted(a.name for a in flamepy.list_applications())
            assert names == ["flmexec", "flmping", "flmrun"]
            flamepy.register_application("only-in-first", {"command": "/bin/true"})

        def test_second_reaches_its_own_cluster(flame_env):
            # flamepy caches its connection per process; flame_env resets it for every test.
            names = sorted(a.name for a in flamepy.list_applications())
            assert names == ["flmexec", "flmping", "flmrun"]
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_flame_env_points_flamepy_cache_calls_at_each_cluster(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import flamepy

        def test_first(flame_env):
            ref = flamepy.put_object("app/ssn", {"n": 1})
            assert ref.endpoint == flame_env["FLAME_CACHE_ENDPOINT"]
            assert flamepy.get_object(ref) == {"n": 1}

        def test_second(flame_env):
            # flamepy caches its FlameContext (and so the cache endpoint) per process.
            ref = flamepy.put_object("app/ssn", [2])
            assert ref.endpoint == flame_env["FLAME_CACHE_ENDPOINT"]
            assert flamepy.get_object(ref) == [2]
        """
    )
    inner.runpytest().assert_outcomes(passed=2)


def test_plugin_is_inert_without_its_fixtures(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import sys

        def test_plain():
            assert "flamepy_fake.plugin" in sys.modules  # loaded through the pytest11 entry point
            heavy = {"grpc", "pyarrow", "flamepy_fake._control._state", "flamepy_fake._control._records"}
            heavy |= {"flamepy_fake._executors", "yaml"}  # PyYAML: only once a flame.yaml is read
            heavy &= set(sys.modules)
            assert not heavy
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(passed=1)


def test_flame_options_validate_keywords() -> None:
    with pytest.raises(TypeError):
        FlameOptions("thread")  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"^executors must be one of auto, thread, process; got 'k8s'$"):
        FlameOptions(executors="k8s")
    with pytest.raises(ValueError, match=r"^executors must be one of auto, thread, process; got 'k8s'$"):
        FlameOptions(backend="k8s")
    with pytest.raises(TypeError, match=r"^give executors or its former name backend, not both$"):
        FlameOptions(executors="thread", backend="thread")
    assert FlameOptions(backend="process").cluster_kwargs()["executors"] == "process"
    assert FlameOptions(executors="process").cluster_kwargs()["executors"] == "process"
    with pytest.raises(TypeError, match="allow_open_sessions must be True or False; got 1"):
        FlameOptions(allow_open_sessions=1)  # type: ignore[arg-type]
    assert FlameOptions(max_executors=2).cluster_kwargs()["max_executors"] == 2
    assert FlameOptions().cluster_kwargs()["max_executors"] is None
    assert FlameOptions().cluster_kwargs()["policies"] == ("priority", "gang")
    assert FlameOptions(policies=["drf", "gang"]).cluster_kwargs()["policies"] == ("drf", "gang")
    with pytest.raises(ValueError, match=r"^policies \['drf'\] lack 'gang': "):
        FlameOptions(policies=["drf"])


# ---------------------------------------------------------------------------- teardown is bounded

# Times the teardown of each test (the bound: under 2 s with an endless task running).
TIMING_CONFTEST = """
import time
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    start = time.monotonic()
    try:
        return (yield)
    finally:
        with open("teardown-seconds.txt", "a") as f:
            f.write(f"{item.name} {time.monotonic() - start:.3f}\\n")
"""

ENDLESS_SERVICE = """
import signal, time
import flamepy
from flamepy import FlameService

signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops this instance

class Endless(FlameService):
    def on_session_enter(self, context):
        pass

    def on_task_invoke(self, context):
        print("endless task started", flush=True)
        while True:
            time.sleep(0.05)

    def on_session_leave(self):
        pass

flamepy.run(Endless())
"""


def _teardown_seconds(pytester: pytest.Pytester) -> dict[str, float]:
    lines = (pytester.path / "teardown-seconds.txt").read_text().splitlines()
    return {name: float(seconds) for name, seconds in (line.split() for line in lines)}


def test_teardown_with_an_endless_process_task_is_bounded_and_kills_it(inner: pytest.Pytester) -> None:
    inner.makeconftest(TIMING_CONFTEST)
    inner.makepyfile(endless_service=ENDLESS_SERVICE)
    inner.makepyfile(
        """
        import os, sys, time
        import flamepy

        def test_returns_while_a_task_runs(flame_env, flame_cluster):
            script = os.path.abspath("endless_service.py")
            flamepy.register_application("endless", {"command": sys.executable, "arguments": [script]})
            session = flamepy.create_session("endless", session_id="ssn-endless")
            session.run(b"forever")  # a future, never awaited: flamepy watches the task meanwhile
            deadline = time.monotonic() + 60
            while "endless task started" not in "".join(
                flame_cluster.instance_logs(e.id) for e in flame_cluster.executors()
            ):
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.05)
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "flame_cluster: the test left work behind on the fake Flame cluster",
            "Sessions still open (close them, or allow with @pytest.mark.flame(allow_open_sessions=True)):",
            "  - ssn-endless (application endless: 0 pending, 1 running, 0 succeeded, 0 failed)",
            UNFINISHED_HEADING,
            "  - task 1 of session ssn-endless: Running",
        ],
        consecutive=True,
    )
    assert "left behind after stop()" not in result.stdout.str()  # the instance process is gone
    assert _teardown_seconds(inner)["test_returns_while_a_task_runs"] < 2.0


def test_teardown_with_an_endless_thread_task_abandons_the_thread_and_says_so(
    inner: pytest.Pytester,
) -> None:
    inner.makeconftest(TIMING_CONFTEST)
    inner.makepyfile(
        """
        import threading, time
        import pytest
        from flamepy.runner.runner import Runner

        # Only thread instances can be abandoned (processes are killed); auto isolates.
        pytestmark = pytest.mark.flame(executors="thread")

        def forever(x):
            import time
            while True:
                time.sleep(0.05)

        def test_returns_while_a_task_runs(flame_env, flame_cluster, monkeypatch):
            monkeypatch.chdir("project")  # what Runner packages (not pytest's basetemp)
            runner = Runner("endless")
            runner.__enter__()  # never closed: the test returns with the task running
            runner.service(forever)(1)
            deadline = time.monotonic() + 60
            while not any(s.running for s in flame_cluster.state.list_sessions()):
                assert time.monotonic() < deadline, "the task never started"
                time.sleep(0.05)

        def test_next(flame_cluster):
            names = [t.name for t in threading.enumerate()]
            assert [n for n in names if n.startswith("flamepy-fake-abandoned-")], names

        @pytest.mark.flame(allow_open_sessions=True, allow_unfinished_tasks=True)
        def test_allowed(flame_env, flame_cluster, monkeypatch):
            test_returns_while_a_task_runs(flame_env, flame_cluster, monkeypatch)
        """
    )
    (inner.path / "project").mkdir()
    (inner.path / "project" / "README.md").write_text("endless\n")
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=3, errors=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            UNFINISHED_HEADING,
            "  - task 1 of session endless-*: Running",
            "Thread instances abandoned by stop() (a thread cannot be killed: its code keeps running "
            "in this process):",
            "  - executor * (thread flamepy-fake-abandoned-*) running task 1 of session endless-*",
        ],
        consecutive=True,
    )
    # Allowed unfinished work does not fail the test, but the abandoned thread is still said.
    result.stdout.fnmatch_lines(
        [
            "*PytestWarning: Thread instances abandoned by stop() (a thread cannot be killed: its code "
            "keeps running in this process):",
            "    - executor * (thread flamepy-fake-abandoned-*) running task 1 of session endless-*",
        ]
    )
    assert _teardown_seconds(inner)["test_returns_while_a_task_runs"] < 2.0


def test_reset_flamepy_clients_does_not_wait_for_in_flight_work(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import time
        import flamepy
        import pytest
        from flamepy_fake.plugin import reset_flamepy_clients
        from helpers import open_wasm_session

        @pytest.mark.flame(allow_open_sessions=True, allow_unfinished_tasks=True)
        def test_reset(flame_env, flame_cluster):
            open_wasm_session(flame_cluster, "ssn-w")
            future = flamepy.open_session("ssn-w").run(b"never scheduled")
            start = time.monotonic()
            reset_flamepy_clients()
            assert time.monotonic() - start < 2.0
            assert not future.done() or future.exception() is not None
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1)


# ---------------------------------------------------------------------------- offline means offline

# A developer's real configuration: none of it may reach code under test on the fake.
DEVELOPER_FLAME_YAML = """
current-context: work
contexts:
  - name: work
    cluster:
      endpoint: http://flame.example.invalid:8080
      tls:
        ca_file: /nonexistent/ca.pem
    cache:
      endpoint: grpcs://cache.example.invalid:9090
      storage: /nonexistent/cache
    package:
      storage: http://packages.example.invalid/upload
"""

OFFLINE_CHECK = """
import os
import flamepy
from flamepy_runner import FlameConfig

def what_code_under_test_sees(cluster):
    ctx = flamepy.FlameContext()
    ours = FlameConfig.load()
    return {
        "flamepy": (ctx.endpoint, ctx.cache.endpoint, ctx.package, ctx._cluster_tls, ctx.cache.tls),
        "ours": (ours.endpoint, ours.cache_endpoint, ours.package_storage, ours.ca_file, ours.cache_storage),
        "env": {k: v for k, v in os.environ.items() if k.startswith("FLAME_")},
    }

def expected(cluster):
    return {
        "flamepy": (cluster.endpoint, cluster.cache_endpoint, None, None, None),
        "ours": (cluster.endpoint, cluster.cache_endpoint, None, None, None),
        "env": cluster.env,
    }
"""


def test_fixtures_never_see_the_developers_flame_config(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    (inner.path / ".flame").mkdir()
    (inner.path / ".flame" / "flame.yaml").write_text(DEVELOPER_FLAME_YAML)  # pytester's HOME
    monkeypatch.setenv("FLAME_ENDPOINT", "http://flame.example.invalid:8080")
    monkeypatch.setenv("FLAME_CACHE_ENDPOINT", "grpcs://cache.example.invalid:9090")
    monkeypatch.setenv("FLAME_CA_FILE", "/nonexistent/ca.pem")
    monkeypatch.setenv("FLAME_CACHE_STORAGE", "/nonexistent/cache")
    inner.makepyfile(offline=OFFLINE_CHECK)
    inner.makepyfile(
        """
        import os
        from offline import expected, what_code_under_test_sees

        def test_flame_env(flame_env, flame_cluster):
            assert what_code_under_test_sees(flame_cluster) == expected(flame_cluster)

        def test_flame_cluster(flame_cluster):
            assert what_code_under_test_sees(flame_cluster) == expected(flame_cluster)
            assert flame_cluster.config.package_storage is None

        def test_restored_afterwards():
            assert os.environ["FLAME_ENDPOINT"] == "http://flame.example.invalid:8080"
            assert os.environ["FLAME_CA_FILE"] == "/nonexistent/ca.pem"
        """
    )
    inner.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)


# ---------------------------------------------------------------------------- bind failures in reports

BROKEN_SESSION = """
import sys, time
from helpers import frontend, pb

def open_broken_session(cluster, tmp_path):
    script = tmp_path / "broken_service.py"
    script.write_text("import no_such_module_ffx\\n")
    channel, stub = frontend(cluster)
    with channel:
        spec = pb.ApplicationSpec(shim=pb.Host, command=sys.executable, arguments=[str(script)])
        stub.RegisterApplication(pb.RegisterApplicationRequest(name="broken", application=spec), timeout=30)
        session = pb.SessionSpec(application="broken")
        stub.CreateSession(pb.CreateSessionRequest(session_id="ssn-broken", session=session), timeout=30)
        stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="ssn-broken")), timeout=30)
    deadline = time.monotonic() + 60
    while 1002 not in [e.code for e in cluster.session_events("ssn-broken")]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
"""


def test_a_failed_or_timed_out_test_shows_bind_failures_and_the_instance_stderr(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(broken=BROKEN_SESSION)
    inner.makepyfile(
        """
        import time
        import pytest
        from broken import open_broken_session

        pytestmark = pytest.mark.flame(retry_limit=1)

        def test_fails(flame_cluster, tmp_path):
            open_broken_session(flame_cluster, tmp_path)
            assert False, "the task never ran"

        @pytest.mark.timeout(10)
        def test_times_out(flame_cluster, tmp_path):
            open_broken_session(flame_cluster, tmp_path)
            while True:  # as invoke() waits for a task that never runs
                time.sleep(0.05)

        def test_passes(flame_cluster, tmp_path):
            open_broken_session(flame_cluster, tmp_path)
            flame_cluster.stop()
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2, passed=1)
    for name in ("test_fails", "test_times_out"):
        result.stdout.fnmatch_lines(
            [
                f"*_ {name} _*",
                "*- flame_cluster: session ssn-broken could not start an instance -*",
                "event 1001: Executor <*> on node <*> failed to bind session with return_code <11>: shim "
                "creation failed: failed to connect to service at </tmp/ffx-*.sock>: instance * exited with "
                "code 1 before creating its socket /tmp/ffx-*.sock",
                "event 1002: Session retry limit reached after 1/1 failed attempts; new executor assignment "
                "is paused for this session; existing executors are unchanged.",
                "stderr of executor * (last 20 lines):",
                "  Traceback (most recent call last):",
                "  *",
                "  ModuleNotFoundError: No module named 'no_such_module_ffx'",
            ],
            consecutive=False,
        )
    assert result.stdout.str().count("could not start an instance") == 2


# ---------------------------------------------------------------------------- marker sizes


def test_cache_max_memory_marker_takes_the_clis_sizes(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import pytest

        @pytest.mark.flame(cache_max_memory="1M")
        def test_mebibyte(flame_cluster):
            assert flame_cluster.options["cache_max_memory"] == 1024 * 1024

        @pytest.mark.flame(cache_max_memory="2G")
        def test_gibibytes(flame_cluster):
            assert flame_cluster.options["cache_max_memory"] == 2 * 1024**3

        @pytest.mark.flame(cache_max_memory=4096)
        def test_bytes(flame_cluster):
            assert flame_cluster.options["cache_max_memory"] == 4096

        @pytest.mark.flame(cache_max_memory="lots")
        def test_bad(flame_cluster):
            pass
        """
    )
    result = inner.runpytest()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "E   ValueError: @pytest.mark.flame: cache_max_memory must be a positive number of bytes "
            "or a size such as 512M or 2G; got 'lots'",
        ]
    )
    assert "plugin.py" not in result.stdout.str() and "_cluster.py" not in result.stdout.str()
