"""Failure reports and fault clearing of the pytest plugin, driven through pytester.

The report section is API (users read it in CI logs), so it is pinned line by line.
"""

from __future__ import annotations

import pytest

HELPERS = """
import time
import grpc
from flamepy_runner._proto import pb, rpc

def frontend(cluster):
    channel = grpc.insecure_channel(cluster.endpoint.removeprefix("http://"))
    return channel, rpc.Stub(channel, pb.FRONTEND_SERVICE)

def busy_cluster(cluster):
    # A Wasm session (never scheduled: its tasks stay pending) and a flmping session with one
    # task that fails (an input it cannot parse).
    channel, stub = frontend(cluster)
    with channel:
        spec = pb.ApplicationSpec(shim=pb.Wasm, command="app.wasm")
        stub.RegisterApplication(pb.RegisterApplicationRequest(name="wasm", application=spec), timeout=10)
        session = pb.SessionSpec(application="wasm")
        stub.CreateSession(pb.CreateSessionRequest(session_id="ssn-a", session=session), timeout=10)
        for _ in range(2):
            stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="ssn-a")), timeout=10)
        session = pb.SessionSpec(application="flmping")
        stub.CreateSession(pb.CreateSessionRequest(session_id="ping", session=session), timeout=10)
        task = pb.TaskSpec(session_id="ping", input=b'{"memory": 1e30}')
        stub.CreateTask(pb.CreateTaskRequest(task=task), timeout=10)
    deadline = time.monotonic() + 60
    while not cluster.calls(method="CompleteTask"):  # recorded once the task has failed
        assert time.monotonic() < deadline
        time.sleep(0.01)
"""


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest("")
    pytester.makepyfile(helpers=HELPERS)
    return pytester


def test_a_failed_test_reports_the_cluster_state(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import grpc
        import pytest
        from helpers import busy_cluster, frontend, pb

        @pytest.mark.flame(executors="thread")
        def test_fails(flame_cluster):
            busy_cluster(flame_cluster)
            flame_cluster.calls.clear()
            channel, stub = frontend(flame_cluster)
            with channel:
                stub.GetSession(pb.GetSessionRequest(session_id="ssn-a"), timeout=10)
                with pytest.raises(grpc.RpcError):
                    stub.GetTask(pb.GetTaskRequest(session_id="ssn-a", task_id="9"), timeout=10)
            assert False, "on purpose"

        def test_passes(flame_cluster):
            pass
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- flame_cluster: state of the fake Flame cluster when the test failed -*",
            "Applications: flmexec, flmping, flmrun, wasm",
            "Sessions:",
            "  - ssn-a (application wasm, open: 2 pending, 0 running, 0 succeeded, 0 failed, 0 cancelled)",
            "  - ping (application flmping, open: 0 pending, 0 running, 0 succeeded, 1 failed, 0 cancelled)",
            "Failed tasks:",
            "  - task 1 of session ping: invalid type: floating point `1e+30`, expected u64 at line 1 "
            "column 15",
            "Executors:",
            "  - * bound (thread): session ping of flmping",
            "Last 2 of 2 calls:",
            "  - #* flame.v1.Frontend/GetSession (session=ssn-a): OK in *.* ms",
            "  - #* flame.v1.Frontend/GetTask (session=ssn-a, task=9): NOT_FOUND in *.* ms",
            "*= short test summary info =*",
        ],
        consecutive=True,
    )
    assert result.stdout.str().count("state of the fake Flame cluster") == 1  # the passing test has none


NOISY_AND_BROKEN = '''
import sys, time
from helpers import frontend, pb

NOISY = """
import sys
import flamepy
from flamepy import FlameService

class Noisy(FlameService):
    def on_session_enter(self, context):
        pass

    def on_task_invoke(self, context):
        print("noisy warning from the instance", file=sys.stderr, flush=True)

    def on_session_leave(self):
        pass

flamepy.run(Noisy())
"""

def start(cluster, tmp_path, name, source):
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    channel, stub = frontend(cluster)
    with channel:
        spec = pb.ApplicationSpec(shim=pb.Host, command=sys.executable, arguments=[str(script)])
        stub.RegisterApplication(pb.RegisterApplicationRequest(name=name, application=spec), timeout=30)
        session = pb.SessionSpec(application=name)
        stub.CreateSession(pb.CreateSessionRequest(session_id=f"ssn-{name}", session=session), timeout=30)
        stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id=f"ssn-{name}")), timeout=30)

def wait_for(condition):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)
'''


def test_each_distinct_instance_stderr_is_shown_once(inner: pytest.Pytester) -> None:
    # Three failed binds of one broken import: one traceback with its count, in the bind section
    # only; the noisy instance's stderr in the state section.
    inner.makepyfile(setup=NOISY_AND_BROKEN)
    inner.makepyfile(
        """
        import pytest
        from setup import NOISY, start, wait_for

        @pytest.mark.flame(retry_limit=3)
        def test_fails(flame_cluster, tmp_path):
            start(flame_cluster, tmp_path, "noisy", NOISY)
            start(flame_cluster, tmp_path, "broken", "import no_such_module_ffx\\n")
            wait_for(lambda: flame_cluster.tasks("ssn-noisy")[0].state == "succeed")
            wait_for(lambda: 1002 in [e.code for e in flame_cluster.session_events("ssn-broken")])
            assert False
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- flame_cluster: session ssn-broken could not start an instance -*",
            "event 1001: *",
            "event 1001: *",
            "event 1001: *",
            "event 1002: Session retry limit reached after 3/3 failed attempts; *",
            "stderr of 3 executors, the same each time: *, *, * (last 20 lines):",
            "  Traceback (most recent call last):",
            "  ModuleNotFoundError: No module named 'no_such_module_ffx'",
            "*- flame_cluster: state of the fake Flame cluster when the test failed -*",
            "Applications: broken, flmexec, flmping, flmrun, noisy",
            "Sessions:",
            "  - ssn-noisy (application noisy, open: 0 pending, 0 running, 1 succeeded, 0 failed, "
            "0 cancelled)",
            "  - ssn-broken (application broken, open: 1 pending, 0 running, 0 succeeded, 0 failed, "
            "0 cancelled)",
            "Executors:",
            "  - * bound (process, pid *): session ssn-noisy of noisy",
            "Last * of * calls:",
            "stderr of executor * of session ssn-noisy (last 20 lines):",
            "  noisy warning from the instance",
        ],
        consecutive=False,
    )
    out = result.stdout.str()
    assert out.count("No module named 'no_such_module_ffx'") == 1  # not repeated in the state section
    assert "stderr of executor" not in out.split("noisy warning from the instance")[1]


def test_faults_end_with_the_test_that_set_them(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import grpc
        import pytest
        from helpers import frontend, pb

        SEEN = []

        def test_sets_faults(flame_cluster, request):
            SEEN.append(flame_cluster.faults)
            flame_cluster.faults.fail("ListApplication", "INTERNAL", "x", times=None)
            flame_cluster.faults.cut_watch(times=None)

            def cleanup():  # fixture teardown runs after the faults are gone
                channel, stub = frontend(flame_cluster)
                with channel:
                    stub.ListApplication(pb.ListApplicationRequest(), timeout=10)

            request.addfinalizer(cleanup)

        def test_next_test_has_none(flame_cluster):
            assert SEEN[0].active == [] and not SEEN[0].armed
            assert flame_cluster.faults.active == []
        """
    )
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
