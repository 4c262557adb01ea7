"""Runner payloads: ours unpickle as flamepy's classes, flamepy's load without flamepy."""

from __future__ import annotations

import pickle
import pickletools
import sys

import cloudpickle
import pytest

from flamepy_runner import _wire
from flamepy_runner._cache import ObjectRef


def _globals(data: bytes) -> list[tuple[str, str]]:
    """(module, name) of every STACK_GLOBAL in a pickle."""
    strings: list[str] = []
    found = []
    memo: dict[int, str] = {}
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE"):
            strings.append(arg)
        elif op.name == "MEMOIZE" and strings:
            memo[len(memo)] = strings[-1]
        elif op.name in ("BINGET", "LONG_BINGET") and arg in memo:
            strings.append(memo[arg])
        elif op.name == "STACK_GLOBAL":
            found.append((strings[-2], strings[-1]))
    return found


def square(x: int) -> int:
    return x * x


def test_context_pickles_under_flamepy_name_with_plain_state() -> None:
    ctx = _wire.RunnerContext(
        square, stateful=False, autoscale=True, warmup=2, min_instances=2, max_instances=None
    )
    data = _wire.dumps(ctx)
    assert _globals(data)[0] == ("flamepy.runner.types", "RunnerContext")
    assert b"flamepy_runner._wire" not in data
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    assert ops[0] == "PROTO" and "NEWOBJ" in ops and "BUILD" in ops


def test_stock_flamepy_reads_ours() -> None:
    from flamepy.runner.types import RunnerContext, RunnerRequest

    ctx = cloudpickle.loads(_wire.dumps(_wire.RunnerContext(square, stateful=False, autoscale=True)))
    assert isinstance(ctx, RunnerContext)
    assert set(vars(ctx)) == {
        "execution_object",
        "stateful",
        "autoscale",
        "warmup",
        "min_instances",
        "max_instances",
    }
    assert ctx.execution_object(7) == 49
    req = cloudpickle.loads(_wire.dumps(_wire.RunnerRequest("add", (1, [2]), {"k": b"v"})))
    assert isinstance(req, RunnerRequest)
    assert (req.method, req.args, req.kwargs) == ("add", (1, [2]), {"k": b"v"})


def test_closures_travel_by_value() -> None:
    offset = 10

    def add_offset(x: int) -> int:
        return x + offset

    got = _wire.loads(_wire.dumps(_wire.RunnerContext(add_offset)))
    assert got.execution_object(1) == 11


def test_dumps_rejects_other_objects() -> None:
    with pytest.raises(TypeError, match="expected RunnerContext or RunnerRequest"):
        _wire.dumps({"method": None})  # type: ignore[arg-type]


def test_loads_reads_flamepy_payloads_with_flamepy() -> None:
    from flamepy.core.cache import ObjectRef as FlamepyRef
    from flamepy.runner.types import RunnerRequest

    data = cloudpickle.dumps(RunnerRequest(None, (FlamepyRef("grpc://h:1", "a/b/c", 3),), None))
    req = _wire.loads(data)
    assert _wire.is_runner_request(req) and not _wire.is_runner_context(req)
    assert _wire.is_object_ref(req.args[0])


@pytest.fixture
def no_flamepy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import flamepy...`` fail, as in an environment without the package."""
    for name in list(sys.modules):
        if name == "flamepy" or name.startswith("flamepy."):
            monkeypatch.delitem(sys.modules, name)
    for name in ("flamepy", "flamepy.runner", "flamepy.runner.types", "flamepy.core", "flamepy.core.cache"):
        monkeypatch.setitem(sys.modules, name, None)


def test_loads_maps_flamepy_classes_to_ours_without_flamepy(no_flamepy: None) -> None:
    # Hand-written flamepy 0.6.0 payloads (what its Runner sends), read with flamepy unimportable.
    request = _wire.dumps(_wire.RunnerRequest("m", (1,), None))
    ref_payload = _flamepy_ref_pickle("grpc://h:1", "app/ssn/1", 4)
    got = _wire.loads(request)
    assert type(got) is _wire.RunnerRequest and got.method == "m" and got.args == (1,)
    ref = _wire.loads(ref_payload)
    assert type(ref) is ObjectRef and ref == ObjectRef("grpc://h:1", "app/ssn/1", 4)
    with pytest.raises(ImportError):
        pickle.loads(request)  # the plain unpickler cannot, which is the point


def test_unknown_missing_classes_still_fail(no_flamepy: None) -> None:
    data = b"\x80\x05\x8c\x14flamepy.runner.types\x8c\x05Other\x93."
    with pytest.raises(ImportError):
        _wire.loads(data)


def _flamepy_ref_pickle(endpoint: str, key: str, version: int) -> bytes:
    """The pickle flamepy writes for its ObjectRef dataclass, built opcode by opcode."""
    state = pickle.dumps({"endpoint": endpoint, "key": key, "version": version}, protocol=5)
    body = state[2:-1]  # the dict's opcodes without PROTO and STOP
    if body[:1] == pickle.FRAME:
        body = body[9:]
    head = b"\x80\x05" + b"\x8c\x12flamepy.core.cache" + b"\x8c\x09ObjectRef" + pickle.STACK_GLOBAL
    return head + pickle.EMPTY_TUPLE + pickle.NEWOBJ + body + pickle.BUILD + pickle.STOP


def test_object_ref_recognition() -> None:
    from flamepy.core.cache import ObjectRef as FlamepyRef

    assert _wire.is_object_ref(ObjectRef("grpc://h:1", "a/b/c", 1))
    assert _wire.is_object_ref(FlamepyRef("grpc://h:1", "a/b/c", 1))
    assert not _wire.is_object_ref(ObjectRef("grpc://h:1", "a/b/c", 1).encode())


def test_our_worker_reads_flamepy_payloads_without_importing_flamepy() -> None:
    """prefer_ours: flamepy's three wire classes load as ours, and flamepy is not imported."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        import cloudpickle
        from flamepy.runner.types import RunnerRequest
        data = cloudpickle.dumps(RunnerRequest(method="m", args=(1,), kwargs=None))
        for name in [m for m in sys.modules if m == "flamepy" or m.startswith("flamepy.")]:
            del sys.modules[name]
        from flamepy_runner import _wire
        request = _wire.loads(data, prefer_ours=True)
        print(type(request).__module__, request.method, request.args)
        print(sorted(m for m in sys.modules if m == "flamepy" or m.startswith("flamepy.")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "flamepy_runner._wire m (1,)\n[]\n"


def test_a_session_context_travels_without_flamepy_runner() -> None:
    # Only the client reads _session_context; an executor running stock flmrun has flamepy but
    # not flamepy_runner, so ours must not travel by reference (Flame v0.6.0 failed to bind).
    import subprocess
    import textwrap
    import types

    from flamepy_runner import SessionContext

    def tagged(x: int) -> int:
        return x + 1

    tagged._session_context = SessionContext(session_id="s-1", application_name="demo")  # type: ignore[attr-defined]
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        payload = _wire.dumps(_wire.RunnerContext(tagged))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["flamepy_runner"] = None  # any import of it fails, as on a stock executor
        import cloudpickle
        ctx = cloudpickle.loads({payload!r})
        fn = ctx.execution_object
        print(type(ctx).__module__, fn(2), fn._session_context)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "flamepy.runner.types 3 namespace(session_id='s-1', application_name='demo')\n",
        "",
    )
    # Pickling elsewhere is unchanged: a SessionContext is still one after a round trip.
    again = cloudpickle.loads(cloudpickle.dumps(tagged._session_context))  # type: ignore[attr-defined]
    assert type(again) is SessionContext and not isinstance(again, types.SimpleNamespace)
    # The client-side object keeps its context.
    assert tagged._session_context == SessionContext(session_id="s-1", application_name="demo")  # type: ignore[attr-defined]
