"""SIGTERM cleans up like Ctrl-C; a SIGKILLed cluster takes its instance processes with it.

Each case runs the cluster in a subprocess (pytest with the plugin, ``flamepy-fake run``,
``flamepy-fake serve``), starts a process instance running an endless task, signals the
subprocess and checks that the instance processes and their ``/tmp/ffx-*`` socket directory
are gone. Instance processes are found as the descendants that have ``FLAME_INSTANCE_ENDPOINT``
in their environment; their socket's directory is the cluster's ``/tmp/ffx-*``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import children_of, eventually, one_at_a_time

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

BIN = Path(sys.executable).parent
CHILD_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("FLAME_")},
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
}

ENDLESS_SERVICE = textwrap.dedent(
    """
    import time
    import flamepy
    from flamepy import FlameService

    class Endless(FlameService):
        def on_session_enter(self, context):
            pass

        def on_task_invoke(self, context):
            while True:
                time.sleep(0.05)

        def on_session_leave(self):
            pass

    flamepy.run(Endless())
    """
)

# Registers the endless service, runs one task and waits for its instance (FLAME_* from env).
CLIENT = textwrap.dedent(
    """
    import os, sys, time
    import flamepy

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "endless_service.py")
    flamepy.register_application("endless", {"command": sys.executable, "arguments": [script]})
    session = flamepy.create_session("endless")
    session.run(b"forever")
    deadline = time.monotonic() + 60
    while not any(s.running for s in flamepy.list_sessions()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    print("task running", flush=True)
    while True:
        time.sleep(0.05)
    """
)

# The same with a Runner task: its instance is forked by the cluster's zygote (fork server).
RUNNER_CLIENT = textwrap.dedent(
    """
    import time
    import flamepy
    from flamepy_runner import Runner

    def forever(_):
        import time
        while True:
            time.sleep(0.05)

    runner = Runner("endless-runner")
    runner.service(forever)(1)
    deadline = time.monotonic() + 60
    while not any(s.running for s in flamepy.list_sessions()):
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    print("task running", flush=True)
    while True:
        time.sleep(0.05)
    """
)

INNER_TEST = textwrap.dedent(
    """
    import os, sys, time
    import flamepy

    def test_endless(flame_env, flame_cluster):
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "endless_service.py")
        flamepy.register_application("endless", {"command": sys.executable, "arguments": [script]})
        flamepy.create_session("endless").run(b"forever")
        deadline = time.monotonic() + 60
        while not any(s.running for s in flame_cluster.state.list_sessions()):
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        with open("task-running", "w") as f:
            f.write("yes")
        while True:
            time.sleep(0.05)
    """
)


def _descendants(pid: int) -> list[int]:
    todo, found = [pid], []
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _instances(root: int) -> dict[int, Path]:
    """Instance processes under ``root``: pid -> the directory of their socket."""
    found = {}
    for pid in _descendants(root):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"FLAME_INSTANCE_ENDPOINT="):
                found[pid] = Path(os.fsdecode(item.split(b"=", 1)[1])).parent
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# The same for a suite that uses no fixture: the cluster comes from --flame-autostart.
AUTOSTART_INNER_TEST = textwrap.dedent(
    """
    import os, sys, time
    import flamepy

    def test_endless():
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "endless_service.py")
        flamepy.register_application("endless", {"command": sys.executable, "arguments": [script]})
        flamepy.create_session("endless").run(b"forever")
        deadline = time.monotonic() + 60
        while not any(s.running for s in flamepy.list_sessions()):
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        with open("task-running", "w") as f:
            f.write("yes")
        while True:
            time.sleep(0.05)
    """
)


@pytest.fixture(autouse=True)
def _one_signal_run_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The run's shared temp root (the parent of each xdist worker's own): see support.one_at_a_time.
    with one_at_a_time(tmp_path_factory.getbasetemp().parent, "signal-runs"):
        yield


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "endless_service.py").write_text(ENDLESS_SERVICE)
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "runner_client.py").write_text(RUNNER_CLIENT)
    (tmp_path / "README.md").write_text("signals\n")
    (tmp_path / "test_endless.py").write_text(INNER_TEST)
    (tmp_path / "test_autostarted.py").write_text(AUTOSTART_INNER_TEST)
    (tmp_path / "home").mkdir()
    return tmp_path


class Spawned:
    """Processes a test starts and the instances seen under them; all killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.instances: dict[int, Path] = {}

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.instances.update(_instances(proc.pid))
                proc.kill()
                proc.wait()
        for pid in self.instances:  # a test that failed leaves no orphan behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        for directory in set(self.instances.values()):
            if directory.exists() and directory.name.startswith("ffx-"):
                shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def spawned() -> Iterator[Spawned]:
    tracker = Spawned()
    yield tracker
    tracker.cleanup()


def _tmpdir(cwd: Path) -> Path:
    """The temporary directory of the processes a test starts: beside its project (which the
    Runner packages), inside pytest's base temp. A process the test SIGKILLs cannot remove what
    it made there (its package releases), so that must not be the machine's /tmp."""
    tmp = cwd.with_name(cwd.name + "-tmp")
    tmp.mkdir(exist_ok=True)
    return tmp


def _start(spawned: Spawned, argv: list[str], cwd: Path, **env: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env={**CHILD_ENV, "HOME": str(cwd / "home"), "TMPDIR": str(_tmpdir(cwd)), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    spawned.procs.append(proc)
    return proc


def _assert_cleaned(proc: subprocess.Popen[bytes], instances: dict[int, Path]) -> None:
    out, _ = proc.communicate(timeout=60)
    assert instances, "no instance process was found"

    def leftovers() -> tuple[list[int], list[str]]:
        alive = [pid for pid in instances if _alive(pid)]
        return alive, sorted({str(d) for d in instances.values() if d.exists()})

    # xdist workers may finish cleaning up just after their controller exits.
    deadline = time.monotonic() + 10
    while leftovers() != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers() == ([], []), out.decode(errors="replace")[-3000:]
    assert all(str(d).startswith("/tmp/ffx-") for d in instances.values())


def _endless_instances(spawned: Spawned, proc: subprocess.Popen[bytes]) -> dict[int, Path]:
    found = eventually(lambda: _instances(proc.pid), "the instance process", timeout=60)
    assert isinstance(found, dict)
    spawned.instances.update(found)
    return found


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_sigterm_to_pytest_with_the_plugin_cleans_up(project: Path, spawned: Spawned, xdist: bool) -> None:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_endless.py"]
    proc = _start(spawned, [*argv, "-n", "1"] if xdist else argv, project)
    eventually(lambda: (project / "task-running").exists(), "the inner test's task", timeout=120)
    instances = _endless_instances(spawned, proc)
    proc.send_signal(signal.SIGTERM)  # to pytest (the xdist controller) only, as CI runners do
    _assert_cleaned(proc, instances)


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_sigterm_to_pytest_with_autostart_cleans_up(project: Path, spawned: Spawned, xdist: bool) -> None:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_autostarted.py"]
    argv += ["--flame-autostart", "--flame-executors=process"]
    proc = _start(spawned, [*argv, "-n", "1"] if xdist else argv, project)
    eventually(lambda: (project / "task-running").exists(), "the inner test's task", timeout=120)
    instances = _endless_instances(spawned, proc)
    proc.send_signal(signal.SIGTERM)  # to pytest (the xdist controller) only, as CI runners do
    _assert_cleaned(proc, instances)


def test_sigterm_to_flamepy_fake_run_cleans_up(project: Path, spawned: Spawned) -> None:
    proc = _start(
        spawned, [sys.executable, "-m", "flamepy_fake", "run", "--", sys.executable, "client.py"], project
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"task running\n"
    instances = _endless_instances(spawned, proc)
    proc.send_signal(signal.SIGTERM)
    _assert_cleaned(proc, instances)


def _serve_with_a_running_task(
    spawned: Spawned, project: Path, client_script: str = "client.py", find_instances: bool = True
) -> tuple[subprocess.Popen[bytes], dict[int, Path]]:
    proc = _start(spawned, [sys.executable, "-m", "flamepy_fake", "serve"], project)
    assert proc.stdout is not None
    env: dict[str, str] = {}
    for raw in proc.stdout:
        line = raw.decode()
        if line.startswith("flamepy-fake ready: "):
            env = dict(item.split("=", 1) for item in line.split(": ", 1)[1].split())
            break
    assert env, "serve never got ready"
    client = _start(spawned, [sys.executable, client_script], project, **env)
    assert client.stdout is not None
    assert client.stdout.readline() == b"task running\n"
    client.kill()
    client.wait()
    return proc, _endless_instances(spawned, proc) if find_instances else {}


def test_sigterm_to_flamepy_fake_serve_cleans_up(project: Path, spawned: Spawned) -> None:
    proc, instances = _serve_with_a_running_task(spawned, project)
    proc.send_signal(signal.SIGTERM)
    _assert_cleaned(proc, instances)


def test_instances_exit_within_a_second_when_the_cluster_is_sigkilled(
    project: Path, spawned: Spawned
) -> None:
    proc, instances = _serve_with_a_running_task(spawned, project)
    proc.kill()
    proc.wait()
    # The bound is one second; the deadline leaves room for a loaded machine.
    eventually(
        lambda: not any(_alive(pid) for pid in instances), "the orphaned instances to exit", timeout=3.0
    )
    # Nothing but us can remove the socket directory after a SIGKILL: the fixture does.


def _zygotes(root: int) -> list[int]:
    """The zygote: a child of ``root`` (its forked instances share its command line)."""
    found = []
    for pid in children_of(root):
        with contextlib.suppress(OSError):
            if b"flamepy_fake._executors._zygote" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


def test_forked_instances_and_the_zygote_exit_when_the_cluster_is_sigkilled(
    project: Path, spawned: Spawned
) -> None:
    # A forked instance's /proc/PID/environ is the zygote's (the environment a process was
    # exec'ed with), so the instance is found as the zygote's child instead.
    proc, _ = _serve_with_a_running_task(spawned, project, "runner_client.py", find_instances=False)
    zygotes = _zygotes(proc.pid)
    assert len(zygotes) == 1, zygotes
    # The zygote's children: the instance, and the spare forked for the next instance (a
    # spare has not changed its working directory: it is still the zygote's).
    children = eventually(lambda: c if len(c := children_of(zygotes[0])) == 2 else None, "two children")
    zygote_cwd = os.readlink(f"/proc/{zygotes[0]}/cwd")
    instances = [pid for pid in children if os.readlink(f"/proc/{pid}/cwd") != zygote_cwd]
    assert len(instances) == 1, children
    socket_dir = eventually(lambda: _socket_dir(instances[0]), "the instance's socket", timeout=30)
    for pid in [*children, *zygotes]:
        spawned.instances[pid] = socket_dir  # killed (and the directory removed) by the fixture
    proc.kill()
    proc.wait()
    # What the killed cluster could not remove (its package release) is in the test's own
    # temporary directory, not the machine's /tmp.
    releases = list(_tmpdir(project).glob("flamepy-fake-releases-*"))
    assert len(releases) == 1 and (next(releases[0].iterdir()) / ".installed").is_file(), releases
    gone = [*children, *zygotes]
    eventually(
        lambda: not any(_alive(pid) for pid in gone),
        "the zygote, its instance and its spare to exit",
        timeout=3.0,
    )


def _socket_dir(pid: int) -> Path | None:
    """The ``/tmp/ffx-*`` directory of the instance ``pid``: its socket is ``<executor id>.sock``,
    and its working directory ``.../instances/<executor id>``."""
    with contextlib.suppress(OSError):
        executor_id = Path(os.readlink(f"/proc/{pid}/cwd")).name
        for found in Path("/tmp").glob(f"ffx-*/{executor_id}.sock"):
            return found.parent
    return None
