"""The fake's ``flmexec``: the script-runner application every cluster registers.

A task's input is JSON ``{"language": str, "runtime": str?, "code": str, "input": [int, ...]?}``,
as v0.6.0's ``flmexec-service`` reads it. ``language`` is ``python`` (run with the cluster's
Python) or ``shell`` (``sh -c``), case-insensitive; anything else fails the task with
``Unsupported language: <language>``. ``input`` (bytes as integers) is the script's stdin.
``runtime``, when given, names the interpreter program to use instead of the default. The
output is compact JSON ``{"data":[stdout bytes as integers]}``, also when the script exits
non-zero (the exit status does not fail the task). No input fails with ``missing task input``,
a missing field with serde_json's ``missing field `language` at line L column C``; other
malformed requests fail with the fake's own text (the reference gives none for them).

Upstream runs a Rust program; the fake serves the same contract from Python, in-process (thread
backend) or as ``python -m flamepy_fake._flmexec`` (process backend).

The other default application, ``flmping``, is served by
:class:`flamepy_fake._flmping.PingService` (``python -m flamepy_fake._flmexec --ping``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

from flamepy_runner._for_fake import pb

from ._flmping import PingService

__all__ = ["FlmexecService", "main", "run_script"]

_REQUIRED = ("language", "code")  # in the order of upstream's struct fields


def _argv(language: str, code: str, runtime: str | None) -> list[str]:
    lang = language.lower()
    if lang == "python":
        program = runtime or sys.executable
    elif lang == "shell":
        program = runtime or (shutil.which("sh") or "")
        if not program:
            raise ValueError("sh is not installed on the executor")
    else:
        raise ValueError(f"Unsupported language: {language}")
    return [program, "-c", code]


def _end_position(data: bytes) -> str:
    """serde_json's position once a whole object is read: the closing brace's line and column."""
    end = data.rstrip(b" \t\r\n")
    line = end.count(b"\n") + 1
    column = len(end) - (end.rfind(b"\n") + 1)
    return f"line {line} column {column}"


def _parse(data: bytes) -> tuple[str, str, bytes, str | None]:
    try:
        request: Any = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"flmexec input is not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ValueError("flmexec input must be a JSON object with 'language' and 'code'")
    for name in _REQUIRED:
        if name not in request:
            raise ValueError(f"missing field `{name}` at {_end_position(data)}")
    language, code = request.get("language"), request.get("code")
    if not isinstance(language, str) or not isinstance(code, str):
        raise ValueError("flmexec input needs string fields 'language' and 'code'")
    stdin = request.get("input") or []
    if not isinstance(stdin, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in stdin):
        raise ValueError("flmexec 'input' must be an array of byte values (0-255)")
    runtime = request.get("runtime")
    if runtime is not None and not isinstance(runtime, str):
        raise ValueError("flmexec 'runtime' must be a string")
    return language, code, bytes(stdin), runtime or None


def run_script(
    data: bytes, *, cwd: str | None = None, procs: set[subprocess.Popen[bytes]] | None = None
) -> bytes:
    """Run one flmexec request and return its JSON output.

    Args:
        data: the task input (JSON).
        cwd: the directory the script runs in.
        procs: if given, the running child is added while it runs (so an owner can kill it).

    Returns:
        ``{"data": [...]}`` as UTF-8 JSON bytes.

    Raises:
        ValueError: malformed input or unsupported language.
        OSError: the interpreter cannot be started.
    """
    language, code, stdin, runtime = _parse(data)
    argv = _argv(language, code, runtime)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd)
    if procs is not None:
        procs.add(proc)
    try:
        out, _ = proc.communicate(stdin)
    finally:
        if procs is not None:
            procs.discard(proc)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return json.dumps({"data": list(out)}, separators=(",", ":")).encode()


class FlmexecService:
    """The flmexec instance hooks (see :class:`flamepy_runner._worker.InstanceService`).

    Args:
        cwd: directory scripts run in (default: the current one).
    """

    def __init__(self, cwd: str | None = None) -> None:
        self._cwd = cwd
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def on_session_enter(self, context: pb.SessionContext) -> None:
        """Nothing to prepare: every task is self-contained."""

    def on_task_invoke(self, context: pb.TaskContext) -> bytes:
        """Run the script of the task's input.

        Raises:
            ValueError: no input, malformed input, unsupported language.
        """
        if not context.HasField("input"):
            raise ValueError("missing task input")
        return run_script(context.input, cwd=self._cwd, procs=self._procs)

    def on_session_leave(self) -> None:
        """Kill scripts still running (only possible if the instance is torn down mid-task)."""
        self.kill()

    def kill(self) -> None:
        """Kill every script this service started that is still running."""
        for proc in list(self._procs):
            if proc.poll() is None:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m flamepy_fake._flmexec [--ping]``, serving ``$FLAME_INSTANCE_ENDPOINT``."""
    from flamepy_runner._for_fake import serve_worker

    args = sys.argv[1:] if argv is None else argv
    endpoint = os.environ.get("FLAME_INSTANCE_ENDPOINT")
    if not endpoint:
        print("FLAME_INSTANCE_ENDPOINT is not set", file=sys.stderr)
        return 2
    if args == ["--ping"]:
        ping = PingService()
        try:
            serve_worker(ping, endpoint)
        finally:
            ping.kill()
        return 0
    service = FlmexecService()
    try:
        serve_worker(service, endpoint)
    finally:
        service.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
