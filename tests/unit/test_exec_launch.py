"""Instance construction: expansion, environment precedence, program choice, process teardown."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest
from support import eventually

from flamepy_fake._control._state import AppRecord
from flamepy_fake._executors._instance import ProcessInstance, ShimError, describe_exit
from flamepy_fake._executors._launch import build_env, expand, instance_argv, is_flmrun
from flamepy_fake._install import Installation

FLMRUN = AppRecord(
    name="flmrun",
    command="${FLAME_HOME}/bin/uv",
    arguments=["run", "--python", "python${FLAME_PYTHON_VERSION}", "python", "-m", "flamepy.runner.runpy"],
    installer="python",
)


def test_expand() -> None:
    env = {"A": "1", "B_2": "two"}
    assert expand("$A-${B_2}-$MISSING-${MISSING}-$", env) == "1-two-$MISSING-${MISSING}-$"
    assert expand("${A}", {}, env) == "1"


def test_program_choice() -> None:
    env = {"FLAME_HOME": "/opt/flame"}
    assert is_flmrun(FLMRUN)
    assert instance_argv(FLMRUN, "builtin", env) == [sys.executable, "-m", "flamepy_runner._worker"]
    assert instance_argv(FLMRUN, "flamepy", env) == [sys.executable, "-m", "flamepy.runner.runpy"]
    exec_app = AppRecord(name="flmexec", command="${FLAME_HOME}/bin/flmexec-service")
    assert instance_argv(exec_app, "builtin", env)[1:] == ["-m", "flamepy_fake._flmexec"]
    custom = AppRecord(name="svc", command="$FLAME_HOME/bin/svc", arguments=["--x=${X}", "$Y"])
    assert instance_argv(custom, "builtin", {**env, "X": "1"}) == ["/opt/flame/bin/svc", "--x=1", "$Y"]


def test_environment_precedence(tmp_path: Path) -> None:
    app = AppRecord(
        name="svc",
        command="x",
        environments={
            "FROM_BASE": "${HOME}/data",
            "FLAME_ENDPOINT": "http://app-value:1",  # overridden by the manager
            "TMPDIR": "/app/tmp",  # the app's own wins over the per-instance one
            "PYTHONPATH": "/app/py",
        },
    )
    base = {
        "HOME": "/home/u",
        "PATH": "/usr/bin",
        "PYTHONPATH": "/base/py",
        "FLAME_INSTANCE_ENDPOINT": "/stale",
    }
    env = build_env(
        app,
        base=base,
        socket_path=tmp_path / "e.sock",
        frontend_endpoint="http://127.0.0.1:5",
        cache_endpoint="grpc://127.0.0.1:6",
        tmp_dir=tmp_path / "tmp",
        installation=Installation(
            pythonpath=("/deps", "/src"), path=("/deps/bin",), env={"FLAME_PYTHON_VERSION": "3.11"}
        ),
        extra_pythonpath=["/ours"],
    )
    assert env["FROM_BASE"] == "/home/u/data"
    assert env["FLAME_ENDPOINT"] == "http://127.0.0.1:5"
    assert env["FLAME_CACHE_ENDPOINT"] == "grpc://127.0.0.1:6"
    assert env["FLAME_INSTANCE_ENDPOINT"] == str(tmp_path / "e.sock")
    assert env["FLAME_LOG"] and env["RUST_LOG"]
    assert env["HOME"] == "/home/u"
    assert env["PYTHONPATH"] == os.pathsep.join(["/deps", "/src", "/ours", "/app/py"])
    assert env["PATH"].split(os.pathsep)[0] == "/deps/bin" and env["PATH"].endswith("/usr/bin")
    assert env["TMPDIR"] == "/app/tmp" and env["TEMP"] == env["TMP"] == str(tmp_path / "tmp")
    assert env["FLAME_PYTHON_VERSION"] == "3.11"


def test_describe_exit() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"


def _instance(tmp_path: Path, argv: list[str], **kw: object) -> ProcessInstance:
    return ProcessInstance(
        argv,
        env=dict(os.environ),
        cwd=tmp_path / "top",
        socket_path=tmp_path / "s.sock",
        stdout_path=tmp_path / "logs" / "out",
        stderr_path=tmp_path / "logs" / "err",
        cleanup=(tmp_path / "top",),
        **kw,  # type: ignore[arg-type]
    )


def test_socket_deadline(tmp_path: Path) -> None:
    inst = _instance(tmp_path, ["sleep", "30"], ready_timeout=0.3)
    with pytest.raises(ShimError, match="did not create its socket"):
        inst.start()
    pid = inst.pid
    inst.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (tmp_path / "top").exists()


def test_stop_kills_the_whole_group_and_keeps_logs(tmp_path: Path) -> None:
    # The shell ignores SIGTERM and leaves a grandchild behind: SIGKILL to the group gets both.
    script = f"trap '' TERM; echo started; sleep 60 & echo $! > {tmp_path}/child; sleep 60"
    inst = _instance(tmp_path, ["sh", "-c", script], ready_timeout=0.1, stop_grace=0.3)
    with pytest.raises(ShimError):
        inst.start()
    eventually((tmp_path / "child").exists, "the child to write its pid", timeout=10)
    child = int((tmp_path / "child").read_text())
    inst.stop()
    for pid in (inst.pid, child):
        assert pid is not None
        _gone(pid)
    assert "started" in inst.logs()


def _gone(pid: int) -> None:
    def dead() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False  # an orphaned grandchild is reaped by init, shortly after the kill

    eventually(dead, f"process {pid} to exit", timeout=10)


def test_stop_before_start_never_spawns(tmp_path: Path) -> None:
    inst = _instance(tmp_path, ["sleep", "30"])
    inst.stop()
    with pytest.raises(ShimError, match="stopping"):
        inst.start()
    assert inst.pid is None


def test_bad_command(tmp_path: Path) -> None:
    with pytest.raises(ShimError) as exc:
        _instance(tmp_path, ["/no/such/program", "--flag"]).start()
    # v0.6.0's host shim text: the command in literal angle brackets, then Rust's io::Error text.
    assert str(exc.value) == (
        "failed to start service by command </no/such/program>: No such file or directory (os error 2)"
    )


def test_exit_before_socket(tmp_path: Path) -> None:
    inst = _instance(tmp_path, [sys.executable, "-c", "import os; os.kill(os.getpid(), 15)"])
    with pytest.raises(ShimError, match=r"was killed by signal 15 \(SIGTERM\) before creating its socket"):
        inst.start()
    inst.stop()


def test_stop_while_waiting_for_the_connection_ends_start(tmp_path: Path) -> None:
    # The socket file exists but nobody listens on it: start() waits for a connection.
    deaf = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); time.sleep(60)"
    inst = _instance(tmp_path, [sys.executable, "-c", deaf, str(tmp_path / "s.sock")], ready_timeout=60)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            inst.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=start)
    thread.start()
    eventually((tmp_path / "s.sock").exists, "the socket to appear", timeout=30)
    inst.stop()
    thread.join(timeout=30)  # far below ready_timeout: only the stop can have ended the wait
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ShimError), errors
    assert "stopping" in str(errors[0])
    assert inst.pid is not None
    _gone(inst.pid)


@pytest.mark.parametrize(
    ("backend", "flmrun", "expected"),
    [
        # (flmrun clone, flmexec, flmping, a user program)
        # auto isolates every instance in a process (module state as on a real cluster).
        ("auto", "builtin", ("process", "process", "process", "process")),
        ("auto", "flamepy", ("process", "process", "process", "process")),
        ("thread", "builtin", ("thread", "thread", "thread", "process")),
        ("thread", "flamepy", ("process", "thread", "thread", "process")),
        ("process", "builtin", ("process", "process", "process", "process")),
    ],
)
def test_backend_choice(tmp_path: Path, backend: str, flmrun: str, expected: tuple[str, ...]) -> None:
    from flamepy_fake._control._state import ClusterState
    from flamepy_fake._executors import ExecutorManager

    manager = ExecutorManager(
        ClusterState(),
        frontend_endpoint="http://127.0.0.1:1",
        cache_endpoint="grpc://127.0.0.1:2",
        executors=backend,
        flmrun=flmrun,
        work_dir=tmp_path,
    )
    apps = (
        FLMRUN,
        AppRecord(name="flmexec", command="${FLAME_HOME}/bin/flmexec-service"),
        AppRecord(name="flmping", command="${FLAME_HOME}/bin/flmping-service"),
        AppRecord(name="svc", command="python3", arguments=["svc.py"]),
    )
    assert tuple(manager.executors_for(app) for app in apps) == expected


@pytest.mark.parametrize("executors", ["thread", "process"])
def test_a_thread_executor_manager_opens_its_cache_connections_at_start(
    tmp_path: Path, executors: str
) -> None:
    from flamepy_fake._cache._server import FakeObjectCache
    from flamepy_fake._control._state import ClusterState
    from flamepy_fake._executors import ExecutorManager

    with FakeObjectCache() as cache:
        manager = ExecutorManager(
            ClusterState(),
            frontend_endpoint="http://127.0.0.1:1",
            cache_endpoint=cache.endpoint,
            executors=executors,
            work_dir=tmp_path,
            fork_server=False,
        )
        manager.start()
        try:
            factory = manager._factory
            assert factory is not None
            if executors == "thread":
                # Before any bind: the package download's connection and the thread instances'.
                eventually(
                    lambda: (
                        list(manager.installer._flight) == [cache.endpoint] and factory._cache is not None
                    ),
                    "the warm-up to open both connections",
                )
                warm = manager._warm_thread
                assert warm is not None and warm.name == "flamepy-fake-warm-up"
                eventually(lambda: not warm.is_alive(), "the warm-up thread to end")
            else:
                # A process instance opens its own connection; nothing is warmed here.
                assert manager._warm_thread is None
                assert manager.installer._flight == {} and factory._cache is None
        finally:
            manager.stop()
        assert manager.installer._flight == {} and factory._cache is None  # both closed
        with pytest.raises(ShimError) as refused:
            factory._thread_cache()
        assert str(refused.value) == "the executor manager is stopping"
        assert not [t for t in threading.enumerate() if t.name == "flamepy-fake-warm-up"]
