"""Two stops of one process instance: the second one never returns while the child still runs."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from flamepy_fake._executors._instance import ProcessInstance

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

# Listens on its socket and ignores SIGTERM: only SIGKILL ends it.
STUBBORN = (
    "import os, signal, socket, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.bind(os.environ['FLAME_INSTANCE_ENDPOINT'])\n"
    "s.listen()\n"
    "while True:\n"
    "    time.sleep(1)\n"
)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_stop_during_another_stop_kills_the_child_before_returning(tmp_path: Path) -> None:
    sock = Path(f"/tmp/ffx-stop-{os.getpid()}.sock")
    inst = ProcessInstance(
        [sys.executable, "-c", STUBBORN],
        env={**os.environ, "FLAME_INSTANCE_ENDPOINT": str(sock)},
        cwd=tmp_path,
        socket_path=sock,
        stdout_path=tmp_path / "out",
        stderr_path=tmp_path / "err",
        stop_grace=60,  # the executor's own stop would wait this long for SIGTERM
    )
    inst.start()
    assert inst.pid is not None
    first = threading.Thread(target=inst.stop)  # the executor releasing its instance
    first.start()
    try:
        inst.stop(grace=0.1)  # the manager stopping, with its short shutdown grace
        assert not _running(inst.pid)
    finally:
        first.join(timeout=60)
    assert not first.is_alive()
