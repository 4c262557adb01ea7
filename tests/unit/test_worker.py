"""Our runpy-contract worker, in-process and as a program, against a real fake cache."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import grpc
import pytest
from support import eventually

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_runner import _wire
from flamepy_runner._cache import CacheClient, ObjectRef
from flamepy_runner._config import FlameConfig
from flamepy_runner._proto import pb, rpc
from flamepy_runner._worker import InstanceServicer, RunnerWorker, current_config

# tgkill(2)'s number: signal one chosen thread of another process.
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(os.uname().machine)


@pytest.fixture
def cache() -> Iterator[CacheClient]:
    with FakeObjectCache() as server, CacheClient(FlameConfig(cache_endpoint=server.endpoint)) as client:
        yield client


def _enter(
    servicer: InstanceServicer, cache: CacheClient, obj: Any, *, flamepy: bool = False, **kw: Any
) -> Any:
    if flamepy:
        from flamepy.runner.types import RunnerContext

        payload = cloudpickle.dumps(RunnerContext(execution_object=obj, **kw))
    else:
        payload = _wire.dumps(_wire.RunnerContext(obj, **kw))
    ref = cache.put_object("app/ssn", payload)
    request = pb.SessionContext(
        session_id="ssn", application=pb.ApplicationContext(name="app"), common_data=ref.encode()
    )
    return servicer.OnSessionEnter(request), ref


def _call(
    servicer: InstanceServicer, method: str | None, *args: Any, flamepy: bool = False, **kwargs: Any
) -> Any:
    if flamepy:
        from flamepy.runner.types import RunnerRequest

        data = cloudpickle.dumps(RunnerRequest(method, args or None, kwargs or None))
    else:
        data = _wire.dumps(_wire.RunnerRequest(method, args or None, kwargs or None))
    return servicer.OnTaskInvoke(pb.TaskContext(task_id="1", session_id="ssn", input=data))


def _value(cache: CacheClient, result: Any) -> Any:
    assert result.return_code == 0, result.message
    return cache.get_object(ObjectRef.decode(result.output))


class Counter:
    def __init__(self) -> None:
        self.total = 0

    def add(self, n: int) -> int:
        self.total += n
        return self.total


@pytest.mark.parametrize("flamepy", [False, True])
def test_function_session(cache: CacheClient, flamepy: bool) -> None:
    servicer = InstanceServicer(RunnerWorker(cache))
    result, _ = _enter(servicer, cache, lambda a, b=0: a * 10 + b, flamepy=flamepy)
    assert result.return_code == 0
    out = _call(servicer, None, 4, b=2, flamepy=flamepy)
    assert _value(cache, out) == 42
    ref = ObjectRef.decode(out.output)
    assert ref.key.startswith("app/ssn/") and ref.version >= 1
    assert servicer.OnSessionLeave(pb.EmptyRequest()).return_code == 0


def test_class_is_instantiated_per_instance_and_stateless(cache: CacheClient) -> None:
    servicer = InstanceServicer(RunnerWorker(cache))
    _, ref = _enter(servicer, cache, Counter, stateful=False)
    assert _value(cache, _call(servicer, "add", 2)) == 2
    assert _value(cache, _call(servicer, "add", 3)) == 5  # one object per instance
    other = InstanceServicer(RunnerWorker(cache))
    request = pb.SessionContext(
        session_id="ssn", application=pb.ApplicationContext(name="app"), common_data=ref.encode()
    )
    assert other.OnSessionEnter(request).return_code == 0
    assert _value(cache, _call(other, "add", 1)) == 1  # nothing was written back
    assert cloudpickle.loads(cache.get_object(ref)).execution_object is not None


def test_stateful_object_is_written_back_and_reloaded(cache: CacheClient) -> None:
    first = InstanceServicer(RunnerWorker(cache))
    _, ref = _enter(first, cache, Counter(), flamepy=True, warmup=1)
    assert _value(cache, _call(first, "add", 2, flamepy=True)) == 2
    first.OnSessionLeave(pb.EmptyRequest())
    # A later binding of the session starts from the saved state.
    second = InstanceServicer(RunnerWorker(cache))
    request = pb.SessionContext(
        session_id="ssn", application=pb.ApplicationContext(name="app"), common_data=ref.encode()
    )
    assert second.OnSessionEnter(request).return_code == 0
    assert _value(cache, _call(second, "add", 4)) == 6
    saved = cloudpickle.loads(cache.get_object(ObjectRef(ref.endpoint, ref.key, 0)))
    assert type(saved).__module__ == "flamepy.runner.types" and saved.execution_object.total == 6
    assert saved.stateful is True


def test_object_ref_arguments_are_resolved(cache: CacheClient) -> None:
    from flamepy.core.cache import ObjectRef as FlamepyRef

    servicer = InstanceServicer(RunnerWorker(cache))
    _enter(servicer, cache, lambda *a, **k: (a, k))
    refs = [cache.put_object("app/ssn", value) for value in ("x", [1, 2], {"k": 3})]
    ours, bson_bytes = refs[0], refs[1].encode()
    theirs = FlamepyRef(refs[2].endpoint, refs[2].key, refs[2].version)
    got = _value(cache, _call(servicer, None, ours, bson_bytes, b"plain", kw=theirs, many=refs[0]))
    assert got == (("x", [1, 2], b"plain"), {"kw": {"k": 3}, "many": "x"})


def test_error_texts(cache: CacheClient) -> None:
    servicer = InstanceServicer(RunnerWorker(cache))
    no_common = servicer.OnSessionEnter(
        pb.SessionContext(session_id="s", application=pb.ApplicationContext(name="a"))
    )
    assert (no_common.return_code, no_common.message) == (-1, "Common data is None in session context")

    def boom(x: int) -> int:
        raise KeyError(f"no {x}")

    _enter(servicer, cache, boom)
    no_input = servicer.OnTaskInvoke(pb.TaskContext(task_id="1", session_id="ssn"))
    assert (no_input.return_code, no_input.message) == (-1, "Task input is None")
    raised = _call(servicer, None, 5)
    assert (raised.return_code, raised.message) == (-1, str(KeyError("no 5")))
    # Our worker adds what flamepy's leaves out: the type and traceback, as the failed task's output.
    failure = _wire.decode_failure(raised.output)
    assert failure is not None
    assert (failure.type_name, failure.message) == ("KeyError", "'no 5'")
    assert failure.traceback.startswith("Traceback (most recent call last):\n")
    # The function travelled by value (cloudpickle), so the frame has no source line.
    assert failure.traceback.endswith(", in boom\nKeyError: 'no 5'\n")
    missing = _call(servicer, "nope")
    assert missing.return_code == -1 and "has no method 'nope'" in missing.message
    garbage = servicer.OnTaskInvoke(pb.TaskContext(task_id="1", session_id="ssn", input=b"\x80\x05K\x01."))
    assert garbage.return_code == -1 and "not a RunnerRequest" in garbage.message


def test_current_config_is_visible_inside_tasks_only(cache: CacheClient) -> None:
    config = FlameConfig(endpoint="http://10.0.0.1:1", cache_endpoint="grpc://10.0.0.1:2")
    servicer = InstanceServicer(RunnerWorker(cache), config)
    _enter(servicer, cache, lambda: current_config())
    assert _value(cache, _call(servicer, None)) == config
    assert current_config() is None


@pytest.mark.parametrize("without_flamepy", [False, True])
def test_worker_program_serves_on_the_socket(
    cache: CacheClient, tmp_path: Path, without_flamepy: bool
) -> None:
    from flamepy.core.cache import ObjectRef as FlamepyRef
    from flamepy.runner.types import RunnerContext, RunnerRequest

    env = {**os.environ, "FLAME_CACHE_ENDPOINT": cache.endpoint}
    if without_flamepy:  # a shadow package that refuses to import, first on the path
        (tmp_path / "flamepy").mkdir()
        (tmp_path / "flamepy" / "__init__.py").write_text(
            "raise ImportError('flamepy is not installed here')\n"
        )
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="ffw-", dir="/tmp") as tmp:
        sock = Path(tmp) / "w.sock"
        env["FLAME_INSTANCE_ENDPOINT"] = str(sock)
        proc = subprocess.Popen(
            [sys.executable, "-m", "flamepy_runner._worker"], env=env, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            with grpc.insecure_channel(f"unix://{sock}") as channel:
                stub = rpc.Stub(channel, pb.INSTANCE_SERVICE)
                # Payloads exactly as flamepy 0.6.0's Runner writes them.
                ref = cache.put_object("app/ssn", cloudpickle.dumps(RunnerContext(lambda x, y: x + y)))
                ctx = pb.SessionContext(
                    session_id="ssn", application=pb.ApplicationContext(name="app"), common_data=ref.encode()
                )
                assert stub.OnSessionEnter(ctx, timeout=30).return_code == 0
                arg = cache.put_object("app/ssn", 40)
                data = cloudpickle.dumps(
                    RunnerRequest(None, (FlamepyRef(arg.endpoint, arg.key, arg.version), 2))
                )
                out = stub.OnTaskInvoke(pb.TaskContext(task_id="1", session_id="ssn", input=data), timeout=30)
                assert _value(cache, out) == 42
                assert stub.OnSessionLeave(pb.EmptyRequest(), timeout=30).return_code == 0
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # never leave the worker behind, even failing
                proc.kill()
                _, err = proc.communicate()
                err += b"\n[test] the worker ignored SIGTERM for 30 s and was killed"
        assert proc.returncode == 0, err.decode()[-2000:]


def test_worker_program_needs_its_endpoint() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_INSTANCE_ENDPOINT"}
    proc = subprocess.run(
        [sys.executable, "-m", "flamepy_runner._worker"], env=env, capture_output=True, timeout=60
    )
    assert proc.returncode == 2 and b"FLAME_INSTANCE_ENDPOINT" in proc.stderr


def test_bytes_that_are_not_references_stay_bytes(cache: CacheClient) -> None:
    import bson

    servicer = InstanceServicer(RunnerWorker(cache))
    _enter(servicer, cache, lambda *a: a)
    not_refs = (
        bson.encode({"endpoint": "grpc://h:1"}),  # no key
        bson.encode({"endpoint": "grpc://h:1", "key": "a/b/c", "extra": 1}),  # a field ObjectRef lacks
        bson.encode({"endpoint": 1, "key": "a/b/c"}),  # wrong type
        b"\x05\x00\x00\x00",  # truncated
    )
    assert _value(cache, _call(servicer, None, *not_refs)) == not_refs


def test_the_worker_exits_without_finalizing_but_flushes_and_runs_atexit_handlers() -> None:
    # exit_now() is how the worker program ends once told to stop: buffered output (stdout is a
    # pipe here, so block-buffered) and atexit handlers must not be lost by skipping finalization.
    code = (
        "import atexit, sys\n"
        "from flamepy_runner._worker import exit_now\n"
        "class Noisy:\n"
        "    def __del__(self): print('finalized')\n"
        "keep = Noisy()\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "print('buffered', end=' ')\n"
        "print('to stderr', end='', file=sys.stderr)\n"
        "exit_now(3)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "buffered atexit ran\n", "to stderr")


def _threads(pid: int) -> list[int]:
    return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))


def _takes_sigterm(pid: int, tid: int) -> bool:
    """Whether the thread does not block SIGTERM (pyarrow's jemalloc thread blocks them all)."""
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    blocked = next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1]
    return not int(blocked, 16) & (1 << (signal.SIGTERM - 1))


@pytest.mark.skipif(
    sys.platform != "linux" or _SYS_TGKILL is None,
    reason="tgkill and /proc/PID/task: Linux on x86_64/aarch64",
)
def test_sigterm_delivered_to_another_thread_ends_the_worker_at_once(cache: CacheClient) -> None:
    # The kernel may deliver a process-directed SIGTERM to any thread (a gRPC one, say); the
    # main thread must wake for it, not at the end of its next wait slice (set to 10 minutes
    # here, so a worker that only noticed it then would miss the bound below).
    code = (
        "import flamepy_runner._worker as worker\n"
        "worker._WAIT_SLICE = 600.0\n"
        "from flamepy_runner._worker import exit_now, main\n"
        "exit_now(main())\n"
    )
    with tempfile.TemporaryDirectory(prefix="ffw-", dir="/tmp") as tmp:
        sock = Path(tmp) / "w.sock"
        env = {**os.environ, "FLAME_CACHE_ENDPOINT": cache.endpoint, "FLAME_INSTANCE_ENDPOINT": str(sock)}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
        try:
            eventually(lambda: sock.exists() or proc.poll() is not None, "the worker's socket")
            assert proc.poll() is None
            others = [t for t in _threads(proc.pid) if t != proc.pid and _takes_sigterm(proc.pid, t)]
            assert others, "the worker serves with more threads than its main one"
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.syscall(_SYS_TGKILL, proc.pid, others[0], signal.SIGTERM) == 0
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
