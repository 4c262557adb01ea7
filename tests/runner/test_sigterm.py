"""SIGTERM unwinds a program's open Runners, so its application and package are cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamepy_runner import FlameConfig, Runner, _sigterm
from flamepy_runner._frontend import FrontendClient

FLAMEPY_FAKE = Path(sys.executable).with_name("flamepy-fake")
SCRIPT = """\
import time
from flamepy_runner import Runner

def slow(x):
    import time
    time.sleep(60)

with Runner("sigterm-app") as runner:
    runner.service(slow)(1)
    print("ready", flush=True)
    time.sleep(120)
print("not reached", flush=True)
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fake cluster in its own process (``flamepy-fake serve``): the environment that reaches it."""
    proc = subprocess.Popen(
        [str(FLAMEPY_FAKE), "serve", "--work-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("flamepy-fake ready: "):
                break
        pairs = dict(part.split("=", 1) for part in line.split(": ", 1)[1].split())
        yield {
            "FLAME_ENDPOINT": pairs["FLAME_ENDPOINT"],
            "FLAME_CACHE_ENDPOINT": pairs["FLAME_CACHE_ENDPOINT"],
        }
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_cleans_up_the_runner(served: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "job.py").write_text(SCRIPT)
    env = {**os.environ, **served, "HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "job.py"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == "ready\n"
    with FrontendClient(FlameConfig(endpoint=served["FLAME_ENDPOINT"])) as fe:
        assert fe.get_application("sigterm-app") is not None
        assert (project / "dist" / "sigterm-app.tar.gz").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out) == (143, ""), err
        assert fe.get_application("sigterm-app") is None
    assert sorted(p.name for p in project.iterdir()) == ["job.py"]


def test_a_programs_own_sigterm_handler_is_left_alone(tmp_path: Path) -> None:
    def mine(signum: int, frame: object) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        _sigterm.retain()
        assert signal.getsignal(signal.SIGTERM) is mine
        _sigterm.release()
        assert signal.getsignal(signal.SIGTERM) is mine
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _sigterm.retain()
        _sigterm.retain()
        assert signal.getsignal(signal.SIGTERM) is _sigterm._on_sigterm
        _sigterm.release()
        assert signal.getsignal(signal.SIGTERM) is _sigterm._on_sigterm  # one Runner still open
        _sigterm.release()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_runner_restores_sigterm_after_close(tmp_path: Path) -> None:
    from flamepy_fake import FakeCluster

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        project = tmp_path / "p"
        project.mkdir()
        with FakeCluster(work_dir=tmp_path) as cluster:
            with Runner("sig-restore", config=cluster.config, project_dir=project):
                assert signal.getsignal(signal.SIGTERM) is _sigterm._on_sigterm
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)
