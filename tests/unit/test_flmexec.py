"""The fake flmexec: scripts by language, stdin, output on any exit status."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from flamepy_fake._flmexec import FlmexecService, run_script
from flamepy_runner._proto import pb


def _run(request: dict[str, object], **kw: object) -> bytes:
    out = json.loads(run_script(json.dumps(request).encode(), **kw))  # type: ignore[arg-type]
    assert set(out) == {"data"}
    return bytes(out["data"])


def test_python_runs_with_the_cluster_interpreter() -> None:
    assert (
        _run({"language": "python", "code": "import sys; print(sys.executable)"})
        == (sys.executable + "\n").encode()
    )


def test_stdin_is_the_input() -> None:
    code = "import sys; sys.stdout.write(sys.stdin.read()[::-1])"
    assert _run({"language": "Python3", "code": code, "input": list(b"abc")}) == b"cba"


def test_output_is_kept_on_non_zero_exit() -> None:
    assert _run({"language": "python", "code": "print('partial'); raise SystemExit(9)"}) == b"partial\n"


@pytest.mark.parametrize("shell", ["sh", "bash", "shell"])
def test_shells_by_name(shell: str) -> None:
    if shell != "shell" and shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    assert _run({"language": shell, "code": "read x; echo got-$x", "input": list(b"7\n")}) == b"got-7\n"


def test_runtime_overrides_the_interpreter(tmp_path: Path) -> None:
    assert (
        _run({"language": "sh", "code": "pwd", "runtime": "/bin/sh"}, cwd=str(tmp_path))
        == (os.path.realpath(tmp_path) + "\n").encode()
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"language": "python"}', "'language' and 'code'"),
        (b'{"language": "cobol", "code": ""}', "unsupported language 'cobol'"),
        (b'{"language": "python", "code": "", "input": [300]}', "byte values"),
        (b'{"language": "python", "code": "", "runtime": 3}', "'runtime' must be a string"),
    ],
)
def test_bad_requests(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_script(data)


def test_service_hooks() -> None:
    service = FlmexecService()
    service.on_session_enter(pb.SessionContext(session_id="s"))
    with pytest.raises(ValueError, match="Task input is None"):
        service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s"))
    data = json.dumps({"language": "python", "code": "print(1)"}).encode()
    assert json.loads(service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s", input=data))) == {
        "data": list(b"1\n")
    }
    service.on_session_leave()
