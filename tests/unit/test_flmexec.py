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
    raw = run_script(json.dumps(request).encode(), **kw)  # type: ignore[arg-type]
    out = json.loads(raw)
    assert set(out) == {"data"}
    assert raw == json.dumps(out, separators=(",", ":")).encode()  # compact, as upstream
    return bytes(out["data"])


def test_python_runs_with_the_cluster_interpreter() -> None:
    assert (
        _run({"language": "python", "code": "import sys; print(sys.executable)"})
        == (sys.executable + "\n").encode()
    )


def test_stdin_is_the_input() -> None:
    code = "import sys; sys.stdout.write(sys.stdin.read()[::-1])"
    assert _run({"language": "PYTHON", "code": code, "input": list(b"abc")}) == b"cba"


def test_output_is_kept_on_non_zero_exit() -> None:
    assert _run({"language": "python", "code": "print('partial'); raise SystemExit(9)"}) == b"partial\n"


@pytest.mark.parametrize("shell", ["shell", "Shell", "SHELL"])
def test_shell_is_the_only_other_language(shell: str) -> None:
    assert _run({"language": shell, "code": "read x; echo got-$x", "input": list(b"7\n")}) == b"got-7\n"


def test_runtime_overrides_the_interpreter(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    assert (
        _run({"language": "shell", "code": "pwd", "runtime": "bash"}, cwd=str(tmp_path))
        == (os.path.realpath(tmp_path) + "\n").encode()
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # v0.6.0's texts (v0.6.0.md section 6).
        (b'{"language":"ruby","code":"x"}', "Unsupported language: ruby"),
        (b'{"language":"sh","code":"x"}', "Unsupported language: sh"),
        (b'{"code":"x"}', "missing field `language` at line 1 column 12"),
        (b'{"language":"python"}', "missing field `code` at line 1 column 21"),
        (b'{\n "code": "x"\n}  ', "missing field `language` at line 3 column 1"),
        # The fake's own texts where the reference gives none.
        (b"not json", "flmexec input is not JSON: "),
        (b"[1]", "flmexec input must be a JSON object with 'language' and 'code'"),
        (
            b'{"language": "python", "code": "", "input": [300]}',
            "flmexec 'input' must be an array of byte values",
        ),
        (b'{"language": "python", "code": "", "runtime": 3}', "flmexec 'runtime' must be a string"),
    ],
)
def test_bad_requests(data: bytes, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        run_script(data)
    assert str(exc.value).startswith(message)
    if not message.startswith("flmexec"):
        assert str(exc.value) == message


def test_service_hooks() -> None:
    service = FlmexecService()
    service.on_session_enter(pb.SessionContext(session_id="s"))
    with pytest.raises(ValueError, match=r"^missing task input$"):
        service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s"))
    data = json.dumps({"language": "python", "code": "print(1)"}).encode()
    assert json.loads(service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s", input=data))) == {
        "data": list(b"1\n")
    }
    service.on_session_leave()
