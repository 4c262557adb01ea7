"""Executors end to end: real instances serving sessions of a fake cluster.

Most tests use a small harness (state + Frontend server + object cache + ExecutorManager) so
they can turn the manager's knobs (retry back-off, bind deadline, retry limit); the flamepy
e2e check runs through ``FakeCluster`` like a user would. Clients run in subprocesses where
they are flamepy (its connection and cache client are process-wide singletons).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from support import eventually

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_fake._control._frontend import FrontendServicer
from flamepy_fake._control._state import AppSpec, ClusterState, SessionSpec, TaskRecord
from flamepy_fake._executors import ExecutorManager, ForkServers
from flamepy_runner._proto import pb, rpc

pytestmark = pytest.mark.fake_only(reason="drives the fake's own ExecutorManager and its knobs in a harness")

PENDING, RUNNING, SUCCEED, FAILED = pb.Pending, pb.Running, pb.Succeed, pb.Failed


@dataclass
class Harness:
    state: ClusterState
    manager: ExecutorManager
    env: dict[str, str]
    work_dir: Path
    pids: set[int]

    def register(self, name: str, **spec: Any) -> None:
        self.state.register_application(name, AppSpec(**spec))

    def session(self, sid: str, app: str, **spec: Any) -> str:
        self.state.create_session(sid, SessionSpec(application=app, **spec))
        return sid

    def task(self, sid: str, data: bytes | None) -> TaskRecord:
        return self.state.create_task(sid, data)

    def wait_task(self, sid: str, task_id: int, timeout: float = 60) -> TaskRecord:
        def done() -> TaskRecord | None:
            t = self.state.get_task(sid, str(task_id))
            return t if t.state in (SUCCEED, FAILED, pb.Cancelled) else None

        return eventually(done, f"task {sid}/{task_id} to finish", timeout=timeout)

    def remember_pids(self) -> None:
        self.pids.update(e.pid for e in self.manager.executors() if e.pid is not None)
        zygote = self.manager._zygote
        if zygote is not None and zygote.pid is not None:
            self.pids.add(zygote.pid)


#: Executor backends of the tests whose instances the fork server can serve (flmrun, flmexec,
#: flmping): threads, and processes forked by the zygote or spawned (``fork_server=False``).
FORKABLE_BACKENDS = [
    pytest.param("thread", None, id="thread"),
    pytest.param("process", True, id="process-fork-server"),
    pytest.param("process", False, id="process-no-fork-server"),
]


def parent_of(pid: int) -> int:
    """The parent pid of a running process (from /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def harness(tmp_path: Path, *, retry_limit: int = 5, **manager_kw: Any) -> Iterator[Harness]:
    # Threads of clusters this test did not start (a session-scoped contract backend in the same
    # worker) are not this harness's leftovers.
    before = set(threading.enumerate())
    state = ClusterState(retry_limit=retry_limit)
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="exec-test-rpc")
    server = grpc.server(pool)
    server.add_generic_rpc_handlers((rpc.generic_handler(pb.FRONTEND_SERVICE, FrontendServicer(state)),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cache = FakeObjectCache()
    cache.start()
    manager_kw.setdefault("retry_backoff", 0.05)
    manager_kw.setdefault("stop_grace", 1.0)
    # A zygote of the harness's own (not the process-wide one), so that its death is checked too.
    zygotes = ForkServers()
    manager = ExecutorManager(
        state,
        frontend_endpoint=f"http://127.0.0.1:{port}",
        cache_endpoint=cache.endpoint,
        work_dir=tmp_path / "work",
        fork_servers=zygotes,
        **manager_kw,
    )
    manager.start()
    env = {"FLAME_ENDPOINT": f"http://127.0.0.1:{port}", "FLAME_CACHE_ENDPOINT": cache.endpoint}
    h = Harness(state, manager, env, tmp_path / "work", set())
    try:
        yield h
    finally:
        h.remember_pids()
        socket_dir = manager._socket_dir
        state.stop()
        manager.stop()
        zygotes.stop()
        server.stop(grace=None).wait()
        pool.shutdown(wait=True)
        cache.stop()
        assert_nothing_left(h.pids, socket_dir, tmp_path / "work" / "instances", before)


def assert_nothing_left(
    pids: set[int], socket_dir: Path | None, instances: Path, before: set[threading.Thread] | None = None
) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert socket_dir is None or not socket_dir.exists()
    assert not instances.exists() or not any(instances.iterdir())
    assert not [
        t
        for t in threading.enumerate()
        if t.name.startswith(
            ("flamepy-fake-executor", "flamepy-fake-sched", "flamepy-fake-watch", "flamepy-fake-zygote")
        )
        and t not in (before or set())
    ]


# A FlameService program: reports what it sees, appends its hook calls to $FFX_EVENTS.
SERVICE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    import flamepy
    from flamepy import FlameService

    EVENTS = os.environ["FFX_EVENTS"]

    def note(text):
        with open(EVENTS, "a") as f:
            f.write(f"{os.getpid()} {text}\\n")

    class Probe(FlameService):
        def __init__(self):
            self.enters = self.tasks = self.leaves = 0
            self.app = None

        def on_session_enter(self, context):
            self.enters += 1
            self.app = context.application
            self.session_id = context.session_id
            note("enter")
            if os.environ.get("FFX_ENTER_FAIL"):
                raise RuntimeError("enter refused by the probe")
            if os.environ.get("FFX_ENTER_CRASH"):
                os._exit(4)

        def on_task_invoke(self, context):
            self.tasks += 1
            cmd = (context.input or b"").decode()
            print(f"probe task {context.task_id}: {cmd}", flush=True)
            if cmd == "fail":
                raise RuntimeError("boom from the probe")
            if cmd == "crash":
                os._exit(3)
            if cmd == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if cmd == "spawn":
                # Submit a task to our own session and wait for it (needs a second instance).
                ssn = flamepy.open_session(self.session_id)
                inner = ssn.invoke(b"leaf")
                return b"spawned:" + inner
            if cmd == "leaf":
                return b"leaf-done"
            if cmd.startswith("barrier "):
                # Wait (bounded) until tasks on N different instances have started.
                path, n = EVENTS + ".barrier", int(cmd.split()[1])
                with open(path, "a") as f:
                    f.write(f"{os.getpid()}\\n")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    with open(path) as f:
                        if len(set(f.read().split())) >= n:
                            break
                    time.sleep(0.02)
                return str(os.getpid()).encode()
            if cmd.startswith("sleep "):
                time.sleep(float(cmd.split()[1]))
                return str(os.getpid()).encode()
            keys = ("FLAME_INSTANCE_ENDPOINT", "FLAME_ENDPOINT", "FLAME_CACHE_ENDPOINT", "FLAME_LOG",
                    "TMPDIR", "TEMP", "TMP", "HOME", "PYTHONPATH", "FFX_EXPANDED")
            return json.dumps({
                "pid": os.getpid(), "enters": self.enters, "tasks": self.tasks, "leaves": self.leaves,
                "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in keys},
                "command": self.app.command, "working_directory": self.app.working_directory,
                "url": self.app.url,
            }).encode()

        def on_session_leave(self):
            self.leaves += 1
            note("leave")

    flamepy.run(Probe())
    """
)


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    script = tmp_path / "probe.py"
    script.write_text(SERVICE)
    events = tmp_path / "events.log"
    events.touch()
    monkeypatch.setenv("FFX_PYBIN", os.path.dirname(sys.executable))
    monkeypatch.setenv("PYTHONPATH", "/ffx/existing")
    return {
        "command": "${FFX_PYBIN}/python3",
        "arguments": [str(script)],
        "environments": {"FFX_EVENTS": str(events), "FFX_EXPANDED": "$HOME/x"},
        "events": events,
    }


def probe_spec(probe: dict[str, Any], **extra: Any) -> dict[str, Any]:
    spec = {"command": extra.pop("command", probe["command"]), "arguments": probe["arguments"]}
    spec["environments"] = {**probe["environments"], **extra.pop("environments", {})}
    spec.update(extra)
    return spec


def events_of(probe: dict[str, Any]) -> list[str]:
    return [line.split()[1] for line in probe["events"].read_text().splitlines()]


# -- a FlameService program -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["python3", "${FFX_PYBIN}/python3"])
def test_service_program_serves_a_binding(tmp_path: Path, probe: dict[str, Any], command: str) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe, command=command))
        sid = h.session("s1", "probe", max_instances=1)
        tasks = [h.task(sid, b"report") for _ in range(3)]
        results = [json.loads(h.wait_task(sid, t.id).output or b"{}") for t in tasks]
        h.remember_pids()
        executors = h.manager.executors()
        logs = h.manager.instance_logs(executors[0].id)
        h.state.close_session(sid)
        eventually(lambda: "leave" in events_of(probe), "OnSessionLeave", timeout=30)

    assert {r["pid"] for r in results} == {results[0]["pid"]}
    assert [r["tasks"] for r in results] == [1, 2, 3]
    assert all(r["enters"] == 1 and r["leaves"] == 0 for r in results)
    assert events_of(probe) == ["enter", "leave"]
    first = results[0]
    env = first["env"]
    # The application context is what was registered, unexpanded.
    assert first["command"] == command
    assert first["working_directory"] is None
    # The instance environment (reference B4).
    assert env["FLAME_INSTANCE_ENDPOINT"].endswith(".sock") and env["FLAME_INSTANCE_ENDPOINT"].startswith("/")
    assert len(env["FLAME_INSTANCE_ENDPOINT"]) < 100
    assert env["FLAME_ENDPOINT"] == h.env["FLAME_ENDPOINT"]
    assert env["FLAME_CACHE_ENDPOINT"] == h.env["FLAME_CACHE_ENDPOINT"]
    assert env["FLAME_LOG"]
    assert env["HOME"] == os.environ["HOME"]
    assert env["FFX_EXPANDED"] == os.environ["HOME"] + "/x"
    assert env["PYTHONPATH"].endswith("/ffx/existing")
    assert env["TMPDIR"] == env["TEMP"] == env["TMP"]
    assert env["TMPDIR"].startswith(first["cwd"]) and env["TMPDIR"].endswith("/work/probe/tmp")
    assert Path(first["cwd"]).name == executors[0].id
    assert executors[0].executors == "process" and executors[0].app == "probe"
    assert "probe task 1: report" in logs


def test_failed_task_keeps_the_instance(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        sid = h.session("s1", "probe", max_instances=1)
        bad = h.wait_task(sid, h.task(sid, b"fail").id)
        good = h.wait_task(sid, h.task(sid, b"report").id)

    assert bad.state == FAILED
    assert [e.code for e in bad.events] == [0, 1, 3]
    assert bad.events[-1].message == "boom from the probe"
    assert good.state == SUCCEED
    assert json.loads(good.output or b"")["tasks"] == 2  # same process served both


@pytest.mark.parametrize(("command", "expected"), [("crash", "exited with code 3"), ("kill", "signal 9")])
def test_crash_fails_only_the_running_task(
    tmp_path: Path, probe: dict[str, Any], command: str, expected: str
) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        sid = h.session("s1", "probe", max_instances=1)
        first = h.wait_task(sid, h.task(sid, b"report").id)
        crashed = h.task(sid, command.encode())
        later = [h.task(sid, b"report") for _ in range(2)]
        crashed = h.wait_task(sid, crashed.id)
        later = [h.wait_task(sid, t.id) for t in later]

    assert crashed.state == FAILED
    assert expected in crashed.events[-1].message and f"task {crashed.id}" in crashed.events[-1].message
    assert [t.state for t in later] == [SUCCEED, SUCCEED]
    pids = {json.loads(t.output or b"")["pid"] for t in later}
    assert json.loads(first.output or b"")["pid"] not in pids
    assert events_of(probe).count("enter") == 2


def test_task_submitting_to_its_own_session_does_not_deadlock(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path, max_executors=3) as h:
        h.register("probe", **probe_spec(probe, environments=h.env))
        sid = h.session("s1", "probe")
        outer = h.wait_task(sid, h.task(sid, b"spawn").id, timeout=90)

    assert outer.state == SUCCEED, outer.events
    assert outer.output == b"spawned:leaf-done"


# -- bind failures -----------------------------------------------------------------------------


def _bind_events(h: Harness, sid: str) -> list[tuple[int, str]]:
    return [(e.code, e.message) for e in h.state.get_session(sid).events]


def _after_a_scheduling_pass(h: Harness, probe: dict[str, Any], tmp_path: Path) -> None:
    """Serve one task of a fresh session: every session has been planned since (the scheduler
    plans them all in each pass), so what it did not do for one of them, it will not do."""
    h.register("bystander", **probe_spec(probe, environments={"FFX_EVENTS": str(tmp_path / "bystander.log")}))
    sid = h.session("bystander-1", "bystander")
    assert h.wait_task(sid, h.task(sid, b"report").id).state == SUCCEED


def test_enter_failure_retries_until_the_limit(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path, retry_limit=3) as h:
        h.register("probe", **probe_spec(probe, environments={"FFX_ENTER_FAIL": "1"}))
        sid = h.session("s1", "probe")
        task = h.task(sid, b"report")
        eventually(lambda: any(c == 1002 for c, _ in _bind_events(h, sid)), "event 1002", timeout=60)
        # Event 1002 comes with the last bind report, before that executor's OnSessionLeave
        # (upstream's order); its record is released only after the leave returns.
        eventually(lambda: not h.manager.executors(), "the last executor to be released", timeout=60)
        # No further attempt once the limit is reached, though the scheduler planned it again.
        _after_a_scheduling_pass(h, probe, tmp_path)
        assert [e for e in h.manager.executors() if e.session == sid] == []
        events = _bind_events(h, sid)
        ssn = h.state.get_session(sid)
        still = h.state.get_task(sid, str(task.id))
        h.remember_pids()

    failures = [m for c, m in events if c == 1001]
    assert len(failures) == 3
    assert all(
        "failed to bind session with return_code <12>: on_session_enter failed:" in m for m in failures
    )
    assert all("enter refused by the probe" in m for m in failures)
    assert [c for c, _ in events].count(1002) == 1
    assert ssn.state == pb.Open and ssn.retry_count == 3
    assert still.state == PENDING
    # OnSessionLeave is still called after a failed enter, as upstream does.
    assert events_of(probe).count("leave") == 3


def test_instance_crashing_in_enter_is_a_bind_failure(tmp_path: Path, probe: dict[str, Any]) -> None:
    # The exit watcher must not swallow the bind report: every attempt counts toward the limit.
    with harness(tmp_path, retry_limit=3) as h:
        h.register("probe", **probe_spec(probe, environments={"FFX_ENTER_CRASH": "1"}))
        sid = h.session("s1", "probe")
        task = h.task(sid, b"report")
        eventually(lambda: any(c == 1002 for c, _ in _bind_events(h, sid)), "event 1002", timeout=60)
        eventually(lambda: not h.manager.executors(), "the last executor to be released", timeout=60)
        events = _bind_events(h, sid)
        still = h.state.get_task(sid, str(task.id))
        h.remember_pids()

    failures = [m for c, m in events if c == 1001]
    assert len(failures) == 3, events
    assert all(
        "failed to bind session with return_code <12>: on_session_enter failed:" in m for m in failures
    )
    assert still.state == PENDING
    assert events_of(probe).count("enter") == 3


_BIND_FAILED = r"Executor <[0-9a-f-]{36}> on node <fake-node-0> failed to bind session with return_code "


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        (
            {"command": "/nonexistent/ffx-program"},
            r"<11>: shim creation failed: failed to start service by command "
            r"</nonexistent/ffx-program>: No such file or directory \(os error 2\)",
        ),
        (
            {"command": "true"},
            r"<11>: shim creation failed: failed to connect to service at <(/\S+\.sock)>: "
            r"instance true exited with code 0 before creating its socket \1",
        ),
        ({"command": None}, r"<11>: shim creation failed: the application has no command"),
        (
            {"command": "true", "installer": "python", "url": "file:///nonexistent/pkg.tar.gz"},
            r"<10>: application installation failed: failed to copy package /nonexistent/pkg\.tar\.gz: .+",
        ),
        (
            {"command": "true", "installer": "conda", "url": "file:///x.tar.gz"},
            r"<10>: application installation failed: Unknown installer type: conda",
        ),
    ],
)
def test_instances_that_cannot_start(tmp_path: Path, spec: dict[str, Any], pattern: str) -> None:
    with harness(tmp_path, retry_limit=2) as h:
        h.register("bad", **spec)
        sid = h.session("s1", "bad")
        task = h.task(sid, b"x")
        eventually(lambda: any(c == 1002 for c, _ in _bind_events(h, sid)), "event 1002", timeout=30)
        events = _bind_events(h, sid)
        assert h.state.get_task(sid, str(task.id)).state == PENDING

    assert re.fullmatch(_BIND_FAILED + pattern, events[0][1]), events


def test_socket_that_never_appears(tmp_path: Path) -> None:
    with harness(tmp_path, retry_limit=1, bind_timeout=0.5) as h:
        h.register("sleepy", command="sleep", arguments=["30"])
        sid = h.session("s1", "sleepy")
        h.task(sid, b"x")
        eventually(lambda: _bind_events(h, sid), "a bind failure", timeout=30)
        h.remember_pids()
        events = _bind_events(h, sid)

    # v0.6.0's prefix (grpc shim), then the fake's reason where upstream has tonic's error.
    assert re.fullmatch(
        r"Executor <[0-9a-f-]{36}> on node <fake-node-0> failed to bind session with return_code <11>: "
        r"shim creation failed: failed to connect to service at <(/\S+\.sock)>: instance sleep 30 did not "
        r"create its socket \1 within 0\.5 s",
        events[0][1],
    ), events[0][1]


# -- scheduling --------------------------------------------------------------------------------


def test_wasm_apps_are_never_scheduled(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("wasm", shim=pb.Wasm, command="true")
        sid = h.session("s1", "wasm", min_instances=1)
        task = h.task(sid, b"x")
        _after_a_scheduling_pass(h, probe, tmp_path)
        assert [e for e in h.manager.executors() if e.session == sid] == []
        assert h.state.get_task(sid, str(task.id)).state == PENDING


@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_batch_sessions_run_in_whole_gangs_on_both_backends(
    tmp_path: Path, backend: str, fork_server: bool | None
) -> None:
    with harness(tmp_path, executors=backend, fork_server=fork_server) as h:
        sid = h.session("batch", "flmping", batch_size=2)
        first = h.task(sid, b"{}")
        witness = h.session("witness", "flmping")
        assert h.wait_task(witness, h.task(witness, b"{}").id).state == SUCCEED  # the scheduler ran
        assert h.state.get_task(sid, str(first.id)).state == PENDING  # no partial start
        assert [e for e in h.manager.executors() if e.session == sid] == []

        second = h.task(sid, b'{"duration":200}')
        counts: set[int] = set()

        def finished() -> bool:
            counts.add(len([e for e in h.manager.executors() if e.session == sid]))
            states = {h.state.get_task(sid, str(t.id)).state for t in (first, second)}
            return states == {SUCCEED}

        eventually(finished, "both tasks of the gang", timeout=60)
        gang = [e for e in h.manager.executors() if e.session == sid]
        h.remember_pids()
    assert counts <= {0, 2} and 2 in counts, counts  # a whole gang, never part of one
    assert {e.executors for e in gang} == {backend}


def test_with_drf_a_lone_task_gets_a_whole_gang(tmp_path: Path) -> None:
    # v0.6.0 with drf enabled (its built-in default [priority, drf, gang], Helm's [drf, gang]).
    with harness(tmp_path, executors="thread", policies=("priority", "drf", "gang")) as h:
        sid = h.session("batch", "flmping", batch_size=2)
        assert h.wait_task(sid, h.task(sid, b"{}").id).state == SUCCEED
        assert len([e for e in h.manager.executors() if e.session == sid]) == 2


def test_min_instances_are_kept_warm(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        h.session("s1", "probe", min_instances=2)
        eventually(
            lambda: [e.state for e in h.manager.executors()] == ["bound", "bound"],
            "2 warm instances",
            timeout=60,
        )
        h.remember_pids()
        h.state.close_session("s1")
        eventually(lambda: not h.manager.executors(), "release after close", timeout=30)
        assert events_of(probe).count("leave") == 2


@pytest.mark.parametrize("fork_server", [True, False], ids=["fork-server", "no-fork-server"])
def test_cluster_cap_queues_sessions(tmp_path: Path, fork_server: bool) -> None:
    with harness(tmp_path, max_executors=1, fork_server=fork_server) as h:
        h.register("exec", command="${FLAME_HOME}/bin/flmexec-service")
        code = json.dumps({"language": "python", "code": "print('hi')"}).encode()
        first, second = h.session("s1", "exec"), h.session("s2", "exec")
        t1, t2 = h.task(first, code), h.task(second, code)
        r1 = h.wait_task(first, t1.id)
        r2 = h.wait_task(second, t2.id)  # s1's idle instance is reclaimed for s2

    assert r1.state == r2.state == SUCCEED
    assert json.loads(r2.output or b"")["data"] == list(b"hi\n")


@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_flmexec(tmp_path: Path, backend: str, fork_server: bool | None) -> None:
    with harness(tmp_path, executors=backend, fork_server=fork_server) as h:
        sid = h.session("s1", "flmexec")
        script = {"language": "python", "code": "import sys; print(sys.stdin.read().upper()); sys.exit(4)"}
        script["input"] = list(b"abc")
        done = h.wait_task(sid, h.task(sid, json.dumps(script).encode()).id)
        shell = {"language": "shell", "code": "echo $((6*7))"}
        done2 = h.wait_task(sid, h.task(sid, json.dumps(shell).encode()).id)
        bad = h.wait_task(sid, h.task(sid, b'{"language": "cobol", "code": ""}').id)
        assert {e.executors for e in h.manager.executors()} == {backend}
        h.remember_pids()

    assert done.state == SUCCEED and json.loads(done.output or b"") == {"data": list(b"ABC\n")}
    assert json.loads(done2.output or b"") == {"data": list(b"42\n")}
    assert (bad.state, bad.events[-1].message) == (FAILED, "Unsupported language: cobol")


@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_flmping_answers_like_the_real_service(
    tmp_path: Path, backend: str, fork_server: bool | None
) -> None:
    with harness(tmp_path, executors=backend, fork_server=fork_server) as h:
        sid = h.session("s1", "flmping")
        done = h.wait_task(sid, h.task(sid, b'{"memory":1024}').id)
        bad = h.wait_task(sid, h.task(sid, b"hello").id)
        h.remember_pids()
        pids = [e.pid for e in h.manager.executors() if e.pid is not None]
        zygote = h.manager._zygote
        parents = {parent_of(pid) for pid in pids}
    if backend == "process":  # forked by the zygote, or spawned by this process
        assert (zygote is not None) is bool(fork_server)
        assert parents == {zygote.pid if zygote is not None else os.getpid()}
    host = socket.gethostname()
    assert done.state == SUCCEED
    reply = rf'\{{"message":"Completed on <{re.escape(host)}> in <\d+> milliseconds with <1024> memory"\}}'
    assert re.fullmatch(reply.encode(), done.output or b""), done.output
    assert (bad.state, bad.output, bad.events[-1].message) == (
        FAILED,
        None,
        "expected value at line 1 column 1",
    )


def test_stop_with_running_instances_leaves_nothing(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        sid = h.session("s1", "probe", min_instances=2)
        busy = h.task(sid, b"sleep 60")
        eventually(lambda: len([e for e in h.manager.executors() if e.pid]) == 2, "two instances", timeout=60)
        eventually(
            lambda: h.state.get_task(sid, str(busy.id)).state == RUNNING, "the task to run", timeout=60
        )
        pids = {e.pid for e in h.manager.executors() if e.pid}
        # the harness asserts on exit: no process, socket dir, instance dir or executor thread left
    assert len(pids) == 2


def test_autoscaled_session_runs_tasks_concurrently(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        sid = h.session("s1", "probe")
        # Each task waits until tasks run on two instances at once: with a single instance
        # the burst would take 30 s per task and report one pid (no race with start-up).
        tasks = [h.task(sid, b"barrier 2") for _ in range(4)]
        done = [h.wait_task(sid, t.id) for t in tasks]
        h.remember_pids()
    assert all(t.state == SUCCEED for t in done)
    assert len({t.output for t in done}) > 1  # several instances served the burst


def test_idle_instances_leave_after_delay_release(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe, delay_release=1))
        sid = h.session("s1", "probe")
        assert h.wait_task(sid, h.task(sid, b"report").id).state == SUCCEED
        h.remember_pids()
        eventually(lambda: not h.manager.executors(), "the idle instance to be released", timeout=30)
        assert events_of(probe) == ["enter", "leave"]
        assert h.state.get_session(sid).state == pb.Open


# -- flamepy 0.6.0's own Runner check -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "flmrun", "fork_server"),
    [
        ("thread", "builtin", None),
        ("process", "builtin", True),
        ("process", "builtin", False),
        ("auto", "flamepy", True),
        ("process", "flamepy", False),
    ],
)
def test_flamepy_runner_e2e(tmp_path: Path, backend: str, flmrun: str, fork_server: bool | None) -> None:
    from flamepy_fake._cluster import FakeCluster

    home = tmp_path / "home"
    home.mkdir()
    with FakeCluster(executors=backend, flmrun=flmrun, fork_server=fork_server) as cluster:
        env = {**os.environ, **cluster.env, "HOME": str(home)}
        proc = subprocess.run(
            [sys.executable, "-m", "flamepy.runner.e2e", "--tasks", "8", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            cwd=tmp_path,
        )
        pids = {e.pid for e in cluster.executors() if e.pid is not None}
        backends = {e.executors for e in cluster.executors()}
        work_dir = cluster.work_dir
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["function_results"] == [i * i for i in range(8)]
    assert result["chained_result"] == 8 * 8 + 9 * 9
    assert result["stateful_result"] == 6
    expected = "thread" if (backend, flmrun) == ("thread", "builtin") else "process"
    assert backends <= {expected}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not work_dir.exists()


NESTED_CLIENT = textwrap.dedent(
    """
    import json, os
    from flamepy.runner.runner import Runner

    def where(x):
        import os, flamepy
        from flamepy_runner._worker import current_config

        cfg = current_config()
        # flamepy inside the task reaches the cluster that runs the task
        app = flamepy.get_application("flmrun")
        return [os.environ.get("FLAME_ENDPOINT"), cfg and cfg.endpoint, app.name]

    with Runner("nested") as runner:
        print(json.dumps([runner.service(where)(1).get(), os.environ["FLAME_ENDPOINT"]]))
    """
)


def _run_client(tmp_path: Path, backend: str, fork_server: bool | None) -> subprocess.CompletedProcess[str]:
    """Run ``client.py`` in ``tmp_path`` under ``flamepy-fake run``, isolated from our FLAME_* env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLAME_")}
    env["HOME"] = str(tmp_path)
    fork = [] if fork_server is None else ["--fork-server" if fork_server else "--no-fork-server"]
    cmd = [sys.executable, "-m", "flamepy_fake", "run", "--backend", backend, *fork, "--"]
    proc = subprocess.run(
        [*cmd, sys.executable, "client.py"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_code_in_tasks_reaches_its_own_cluster(
    tmp_path: Path, backend: str, fork_server: bool | None
) -> None:
    (tmp_path / "client.py").write_text(NESTED_CLIENT)
    (tmp_path / "README.md").write_text("nested\n")
    proc = _run_client(tmp_path, backend, fork_server)
    (endpoint, config_endpoint, app), client_endpoint = json.loads(proc.stdout.strip().splitlines()[-1])
    assert endpoint == client_endpoint and app == "flmrun"
    assert config_endpoint == client_endpoint


def test_registered_working_directory(tmp_path: Path, probe: dict[str, Any]) -> None:
    wd = tmp_path / "wd"
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe, working_directory=str(wd)))
        sid = h.session("s1", "probe")
        report = json.loads(h.wait_task(sid, h.task(sid, b"report").id).output or b"{}")
        h.remember_pids()

    assert report["cwd"] == str(wd) and report["working_directory"] == str(wd)
    assert report["env"]["TMPDIR"] == str(wd / "work" / "probe" / "tmp")
    assert wd.is_dir() and not (wd / "work" / "probe").exists()  # only the app dir is removed


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_runner_package_modules_are_importable(
    tmp_path: Path, backend: str, fork_server: bool | None
) -> None:
    # A function pickled by reference: the instance must import it from the Runner's package.
    (tmp_path / "ffx_pkg_mod.py").write_text("def triple(x):\n    return 3 * x\n")
    (tmp_path / "client.py").write_text(
        "from flamepy.runner.runner import Runner\n"
        "from ffx_pkg_mod import triple\n"
        "with Runner('pkgmod') as runner:\n"
        "    print(runner.service(triple)(5).get())\n"
    )
    proc = _run_client(tmp_path, backend, fork_server)
    assert proc.stdout.strip().splitlines()[-1] == "15"


@pytest.mark.parametrize(("backend", "fork_server"), FORKABLE_BACKENDS)
def test_runner_session_with_bad_common_data(tmp_path: Path, backend: str, fork_server: bool | None) -> None:
    with harness(tmp_path, retry_limit=1, executors=backend, fork_server=fork_server) as h:
        flmrun = h.state.get_application("flmrun")
        h.register("runner-app", command=flmrun.command, arguments=flmrun.arguments, installer="python")
        sid = h.session("s1", "runner-app", common_data=b"junk")
        h.task(sid, b"x")
        eventually(lambda: _bind_events(h, sid), "a bind failure", timeout=60)
        h.remember_pids()
        events = _bind_events(h, sid)
    assert "return_code <12>: on_session_enter failed: common data is not the BSON ObjectRef" in events[0][1]


def test_instance_dying_while_idle_fails_no_task(tmp_path: Path, probe: dict[str, Any]) -> None:
    with harness(tmp_path) as h:
        h.register("probe", **probe_spec(probe))
        sid = h.session("s1", "probe", max_instances=1)
        first = h.wait_task(sid, h.task(sid, b"report").id)
        h.remember_pids()
        # Kill it from outside once its task is complete: an instance timing its own exit races
        # the delivery of its last result, which is then (rightly) failed as a crash.
        pid = json.loads(first.output or b"{}")["pid"]
        os.kill(pid, signal.SIGKILL)
        eventually(
            lambda: events_of(probe) == ["enter"] and not h.manager.executors(),
            "the dead instance",
            timeout=30,
        )
        later = h.wait_task(sid, h.task(sid, b"report").id)
        h.remember_pids()
        h.state.close_session(sid)
        eventually(lambda: "leave" in events_of(probe), "OnSessionLeave", timeout=30)
    assert first.state == later.state == SUCCEED
    assert json.loads(later.output or b"{}")["pid"] != pid  # a fresh instance served it
    assert events_of(probe) == ["enter", "enter", "leave"]  # the dead one gets no leave
