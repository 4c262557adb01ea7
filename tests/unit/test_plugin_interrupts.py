"""Interrupts and endless tasks in flame_runner tests (issue 19): bounded teardown, a clean exit.

Each inner run is a real pytest process (``runpytest_subprocess`` or ``Popen``), as a user's is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import one_at_a_time

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# A project whose service never ends; its task writes its pid where the outer test reads it.
TASKS = """\
import os, time

def forever(marker):
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)
"""


@pytest.fixture(autouse=True)
def _one_signal_run_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # The run's shared temp root (the parent of each xdist worker's own): see support.one_at_a_time.
    with one_at_a_time(tmp_path_factory.getbasetemp().parent, "signal-runs"):
        yield


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("FLAME_ENDPOINT", "FLAME_CACHE_ENDPOINT", "FLAMEPY_FAKE_AUTOSTART"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyprojecttoml('[project]\nname = "hang"\nversion = "0"\n')
    (pytester.path / "hangtasks.py").write_text(TASKS)
    pytester.makeconftest("")
    return pytester.path


def _gone(pid: int) -> bool:
    """Whether the process has exited and been reaped (a zombie is still left behind)."""
    return not Path(f"/proc/{pid}").exists()


def test_teardown_gives_calls_in_flight_one_second_whatever_close_timeout(
    pytester: pytest.Pytester, project: Path
) -> None:
    pytester.makepyfile(
        test_hang=f"""
        import os, time
        import pytest
        import hangtasks

        MARKER = {str(project / "pid")!r}

        @pytest.mark.flame(allow_unfinished_tasks=True, allow_open_sessions=True)
        def test_leaves_an_endless_call(flame_runner):
            flame_runner(close_timeout=30).service(hangtasks.forever)(MARKER)
            while not os.path.exists(MARKER):
                time.sleep(0.01)

        def test_next():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "log_level=WARNING", "-rA")
    result.assert_outcomes(passed=2)
    runner_lines = [line for line in result.outlines if "calls still running" in line]
    assert len(runner_lines) == 1, result.outlines
    assert runner_lines[0].endswith("1 calls still running after 1.0 s; closing their sessions anyway")
    assert _gone(int((project / "pid").read_text()))  # the instance died with its cluster


def _interrupt_endless_test(project: Path, *signals_and_gaps: float | signal.Signals) -> tuple[int, str, int]:
    """Run a test waiting on an endless call in a pytest process, send it the signals once the
    task runs (a number in between is a pause in seconds); return (exit code, output, the
    instance's pid)."""
    marker = project / "pid"
    (project / "test_hang.py").write_text(
        "import hangtasks\n\n"
        "def test_waits_forever(flame_runner):\n"
        f"    flame_runner().service(hangtasks.forever)({str(marker)!r}).get()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "the task never started"
            time.sleep(0.02)
        instance = int(marker.read_text())
        for step in signals_and_gaps:
            if isinstance(step, signal.Signals):
                proc.send_signal(step)
            else:
                time.sleep(step)
        out, _ = proc.communicate(timeout=20)  # was 30 s and more; now well under 2 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, instance


def test_one_sigint_ends_the_run_at_once_with_pytests_code_and_leaves_nothing(project: Path) -> None:
    returncode, out, instance = _interrupt_endless_test(project, signal.SIGINT)
    assert returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out
    assert "Traceback" not in out and "Failed: flame_cluster" not in out, out
    assert _gone(instance)
    assert not (project / "dist").exists()


def test_a_second_sigint_during_the_first_ones_handling_skips_the_leftover_checks(project: Path) -> None:
    # 50 ms after the first, the second Ctrl-C lands while pytest is still formatting the first
    # (before it marks the run interrupted): the leftover check used to run and crash out with
    # "Failed: flame_cluster: the test left work behind".
    returncode, out, instance = _interrupt_endless_test(project, signal.SIGINT, 0.05, signal.SIGINT)
    # Python's own answer to a KeyboardInterrupt that escapes: death by SIGINT.
    assert returncode in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), out
    assert "KeyboardInterrupt" in out
    assert "left work behind" not in out and "Failed:" not in out, out
    assert _gone(instance)
    assert not (project / "dist").exists()
