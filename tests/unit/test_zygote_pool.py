"""The pool of fork servers every cluster of a process shares: keys, replacement, stop."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import eventually

from flamepy_fake._executors._import_scope import ENV_VAR, ImportScope
from flamepy_fake._executors._zygote_pool import ForkServers, start_up_key, zygote_request

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only")

PY = sys.executable
PROGRAM = 'if __name__ == "__main__":\n    print("ran")\n'


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    (tmp_path / "ffx_pool_prog.py").write_text(PROGRAM)
    return tmp_path


@pytest.fixture
def pool() -> Iterator[ForkServers]:
    servers = ForkServers(ready_timeout=60)
    yield servers
    servers.stop()


def _env(lib: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(lib), *sys.path[1:]]), **extra}


def _get(pool: ForkServers, env: dict[str, str]):  # type: ignore[no-untyped-def]
    return pool.get(python=PY, modules=("ffx_pool_prog",), preload=(), env=env)


def test_the_key_is_interpreter_programs_preloads_python_settings_and_import_scope_only() -> None:
    base = start_up_key(PY, ("m",), ("p",), {"PYTHONPATH": "/a", "HOME": "/h"})
    scoped = {"PYTHONPATH": "/a", ENV_VAR: ImportScope(frozenset({"x"})).to_env()}
    assert start_up_key(PY, ("m",), ("p",), scoped) != base
    key = start_up_key(PY, ("m",), ("p",), scoped)
    assert start_up_key(PY, ("m",), ("p",), {**scoped, "HOME": "/h"}) == key
    other = {**scoped, ENV_VAR: ImportScope(frozenset({"y"})).to_env()}
    assert start_up_key(PY, ("m",), ("p",), other) != key
    assert start_up_key(PY, ("m",), ("p",), {"HOME": "/other", "PYTHONPATH": "/a"}) == base
    assert start_up_key(PY, ("m",), ("p",), {"PYTHONPATH": "/b", "HOME": "/h"}) != base
    assert start_up_key(PY, ("m",), ("p",), {"PYTHONPATH": "/a", "PYTHONHASHSEED": "0"}) != base
    assert start_up_key("/usr/bin/python3", ("m",), ("p",), {"PYTHONPATH": "/a"}) != base
    assert start_up_key(PY, ("m", "n"), ("p",), {"PYTHONPATH": "/a"}) != base
    assert start_up_key(PY, ("m",), (), {"PYTHONPATH": "/a"}) != base


def test_one_zygote_per_key_started_once_and_shared(pool: ForkServers, lib: Path) -> None:
    first = _get(pool, _env(lib))
    assert first.wait_ready(60)
    again = _get(pool, _env(lib, FFX_UNRELATED="x"))  # not a start-up setting: same zygote
    assert again is first
    assert (pool.started, first.pid) == (1, again.pid)
    other = _get(pool, _env(lib, PYTHONHASHSEED="0"))  # read at start-up: a zygote of its own
    assert other is not first
    assert pool.started == 2
    assert pool.servers() == [first, other]


def test_a_dead_zygote_is_replaced_by_the_next_get(pool: ForkServers, lib: Path) -> None:
    first = _get(pool, _env(lib))
    assert first.wait_ready(60)
    assert first.pid is not None
    os.killpg(first.pid, signal.SIGKILL)
    eventually(lambda: not first.alive(), "its reader to see the socket close", timeout=10)
    assert not first.wait_ready(0)
    replacement = _get(pool, _env(lib))
    assert replacement is not first
    assert replacement.wait_ready(60)
    assert (pool.started, pool.servers()) == (2, [replacement])


def test_stop_kills_the_zygotes_removes_their_logs_and_refuses_later_use(
    pool: ForkServers, lib: Path
) -> None:
    server = _get(pool, _env(lib))
    assert server.wait_ready(60)
    log_dir = server.log_path.parent
    assert log_dir.is_dir()
    assert log_dir.name.startswith("flamepy-fake-zygotes-")
    pool.stop()
    assert not server.alive()
    assert server._proc is not None and server._proc.returncode == 0  # it exited, not killed
    assert not log_dir.exists()
    assert server.pid is not None and not Path(f"/proc/{server.pid}").exists()
    pool.stop()  # idempotent
    with pytest.raises(RuntimeError) as raised:
        _get(pool, _env(lib))
    assert str(raised.value) == "the fork servers were stopped"
    assert pool.servers() == []


def test_a_pool_never_used_stops_without_making_anything(pool: ForkServers) -> None:
    pool.stop()
    assert (pool.started, pool.servers()) == (0, [])


def test_a_zygote_of_declared_imports_reports_what_its_scope_hid_while_preloading(pool: ForkServers) -> None:
    # pyarrow and flamepy probe numpy at import; an executor has no numpy, so neither does the
    # zygote's scope, and the zygote says so (an instance declaring numpy is then spawned).
    declared = pool.get(**zygote_request(PY, "flamepy", "declared"))
    everything = pool.get(**zygote_request(PY, "flamepy", "all"))
    assert declared is not everything
    assert declared.wait_ready(60) and everything.wait_ready(60)
    assert "numpy" in declared.hidden_at_start
    assert "pytest" not in declared.hidden_at_start  # nothing the programs import tried it
    assert everything.hidden_at_start == frozenset()
    assert ENV_VAR not in zygote_request(PY, "flamepy", "all")["env"]
