"""The fork server on its own: which programs it stands in for, and what its children get."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import children_of, eventually

from flamepy_fake._executors._zygote import ForkedProcess, ForkServer, fallback_text

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only")

PY = sys.executable

# A program the zygote serves: prints what a task would see, exits with the code asked for.
PROGRAM = """\
import os, sys
import numpy.random

if __name__ == "__main__":
    print(os.getcwd(), os.environ.get("FFX_MARK"), sys.argv[1:], numpy.random.random(), flush=True)
    print("to stderr", file=sys.stderr)
    sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "ffx_zygote_prog.py").write_text(PROGRAM)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), *sys.path[1:]])}
    fs = ForkServer(
        python=PY, modules=("ffx_zygote_prog",), preload=("numpy",), env=env, log_path=tmp_path / "z.log"
    )
    fs.start()
    yield fs
    fs.stop()


def test_it_stands_in_only_for_its_programs_with_the_same_interpreter_settings(tmp_path: Path) -> None:
    env = {"PYTHONHASHSEED": "0", "PYTHONPATH": "/a", "HOME": "/h"}
    fs = ForkServer(python=PY, modules=("m",), env=env, log_path=tmp_path / "z.log")
    assert fs.program([PY, "-m", "m", "x"], {**env, "PYTHONPATH": "/b", "HOME": "/x"}) == ("m", ["x"])
    assert fs.program([PY, "-m", "other"], env) is None
    assert fs.program(["/usr/bin/python3", "-m", "m"], env) is None
    assert fs.program([PY, "m.py"], env) is None
    assert fs.program([PY, "-m", "m"], {**env, "PYTHONHASHSEED": "1"}) is None
    assert fs.program([PY, "-m", "m"], {**env, "PYTHONOPTIMIZE": "1"}) is None


def test_the_fallback_warning_text() -> None:
    assert fallback_text("the fork server is down (it exited with code 1)") == (
        "flamepy-fake: the fork server is down (it exited with code 1); "
        "instances are spawned instead (slower start-up)"
    )


def test_children_get_their_own_cwd_env_stdio_random_state_and_exit_status(
    tmp_path: Path, server: ForkServer
) -> None:
    outputs = []
    for n, code in enumerate((0, 3)):
        cwd = tmp_path / f"cwd{n}"
        cwd.mkdir()
        out, err = tmp_path / f"{n}.out", tmp_path / f"{n}.err"
        env = {**server.env, "FFX_MARK": f"mark{n}"}
        child = server.spawn(
            "ffx_zygote_prog", [str(code)], env=env, cwd=cwd, stdout_path=out, stderr_path=err
        )
        assert child is not None
        assert child.wait(timeout=60) == code
        assert err.read_text() == "to stderr\n"
        where, mark, argv, rand = out.read_text().split(" ", 3)
        assert (where, mark, argv) == (str(cwd), f"mark{n}", f"['{code}']")
        outputs.append(rand)
    assert outputs[0] != outputs[1]  # numpy's global generator is reseeded in each child


def test_a_stopped_server_forks_nothing_and_warns_nothing(
    tmp_path: Path, server: ForkServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.stop()
    assert not server.alive()
    child = server.spawn(
        "ffx_zygote_prog",
        ["0"],
        env=server.env,
        cwd=tmp_path,
        stdout_path=tmp_path / "o",
        stderr_path=tmp_path / "e",
    )
    assert child is None
    assert [r for r in caplog.records if "spawned instead" in r.getMessage()] == []


# A program that imports itself by name, as our worker's __main__ block does, and reports
# whether that import compiled its source (the zygote compiled it once already).
SELF_IMPORTING = """\
import sys

if __name__ == "__main__":
    compiled = []
    sys.addaudithook(lambda event, args: compiled.append(args[1]) if event == "compile" else None)
    import ffx_self_importing as again

    mine = [f for f in compiled if str(f).endswith("ffx_self_importing.py")]
    print(again is not sys.modules["__main__"], again.__file__ == __file__, __spec__.name, len(mine))
"""


def test_a_child_runs_the_zygotes_compiled_program_in_fresh_modules(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "ffx_self_importing.py").write_text(SELF_IMPORTING)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(lib), *sys.path[1:]]),
        "PYTHONDONTWRITEBYTECODE": "1",  # no bytecode to read: without the zygote's, a compile
    }
    fs = ForkServer(python=PY, modules=("ffx_self_importing",), env=env, log_path=tmp_path / "z.log")
    fs.start()
    try:
        out, err = tmp_path / "out", tmp_path / "err"
        child = fs.spawn("ffx_self_importing", [], env=env, cwd=tmp_path, stdout_path=out, stderr_path=err)
        assert child is not None
        assert child.wait(timeout=60) == 0, err.read_text()
        assert out.read_text() == "True True ffx_self_importing 0\n"
    finally:
        fs.stop()
    assert not list(lib.glob("__pycache__"))


# -- the spare: a child forked ahead of the next request --------------------------------------


def _spawn(server: ForkServer, tmp_path: Path, n: int) -> ForkedProcess:
    cwd = tmp_path / f"cwd{n}"
    cwd.mkdir()
    child = server.spawn(
        "ffx_zygote_prog", ["0"], env=server.env, cwd=cwd, stdout_path=cwd / "out", stderr_path=cwd / "err"
    )
    assert child is not None
    return child


def _spare(server: ForkServer, but: frozenset[int] = frozenset()) -> int:
    """The zygote's one child that is no instance (waits until there is exactly one)."""
    assert server.pid is not None
    zygote = server.pid
    found = eventually(
        lambda: s if len(s := [p for p in children_of(zygote) if p not in but]) == 1 else None,
        "the zygote's spare",
    )
    return found[0]


def test_the_next_instance_is_the_spare_forked_ahead_and_another_is_forked(
    tmp_path: Path, server: ForkServer
) -> None:
    assert server.wait_ready(60)
    first_spare = _spare(server)
    child = _spawn(server, tmp_path, 0)
    assert child.pid == first_spare
    assert child.wait(timeout=60) == 0
    second_spare = _spare(server)
    assert second_spare != first_spare
    assert _spawn(server, tmp_path, 1).pid == second_spare


def test_a_spare_that_dies_unassigned_is_replaced_and_reported_to_nobody(
    tmp_path: Path, server: ForkServer
) -> None:
    assert server.wait_ready(60)
    dead = _spare(server)
    os.kill(dead, signal.SIGKILL)
    replacement = eventually(lambda: p if (p := _spare(server)) != dead else None, "a new spare")
    child = _spawn(server, tmp_path, 0)
    assert child.pid == replacement
    assert child.wait(timeout=60) == 0
    assert server._early_exits == {}  # the dead spare's exit went to no one


def test_stopping_the_server_ends_its_spare(tmp_path: Path, server: ForkServer) -> None:
    assert server.wait_ready(60)
    spare = _spare(server)
    server.stop()  # returns once the zygote has reaped every child and exited
    assert not Path(f"/proc/{spare}").exists()


class _Made:
    """Stands for grpc and pyarrow.flight in a spare's warm-up: records what it made and closed."""

    def __init__(self, log: list[str], what: str) -> None:
        self.log, self.what = log, what

    def __call__(self, target: str) -> _Made:
        self.log.append(f"{self.what} {target}")
        return self

    def close(self) -> None:
        self.log.append(f"closed {self.what}")


def _warm_with_fakes(monkeypatch: pytest.MonkeyPatch, log: list[str]) -> None:
    import types

    from flamepy_fake._executors import _zygote_side

    grpc = types.SimpleNamespace(insecure_channel=_Made(log, "channel"))
    flight = types.SimpleNamespace(FlightClient=_Made(log, "flight client"))
    monkeypatch.setitem(sys.modules, "grpc", grpc)
    monkeypatch.setitem(sys.modules, "pyarrow.flight", flight)
    monkeypatch.setattr(_zygote_side, "_WARM_AFTER", 0.05)


def test_an_idle_spare_initialises_grpc_and_flight_with_what_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flamepy_fake._executors._zygote_side import _warm

    log: list[str] = []
    _warm_with_fakes(monkeypatch, log)
    read_end, write_end = os.pipe()
    try:
        before = set(sys.modules)
        _warm(read_end)  # nothing to read within _WARM_AFTER: it warms
        assert set(sys.modules) == before  # imports nothing of its own
    finally:
        os.close(read_end)
        os.close(write_end)
    assert log == [
        "channel unix:///nonexistent/flamepy-fake-warm.sock",
        "closed channel",
        "flight client grpc://127.0.0.1:1",
        "closed flight client",
    ]


def test_a_spare_handed_a_request_at_once_does_not_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    from flamepy_fake._executors._zygote_side import _warm

    log: list[str] = []
    _warm_with_fakes(monkeypatch, log)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"{}\n")
        _warm(read_end)
        assert os.read(read_end, 16) == b"{}\n"  # the request is left for the spare to read
    finally:
        os.close(read_end)
        os.close(write_end)
    assert log == []
