"""The envelope: what travels to stock executors must need nothing of flamepy_runner, must look
to flamepy's RunnerContext as the enclosed object does, and must re-raise the user's exception
unchanged after recording it."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from typing import Any

import cloudpickle
import pytest

from flamepy_runner._envelope import FAILURE_KEYWORD, enclose, new_failure_id
from flamepy_runner._wire import ENVELOPE_CALL_FRAME, _user_traceback, failure_from_record, type_name_of


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.total = start

    def add(self, value: int) -> int:
        self.total += value
        return self.total


class CallableThing:
    def __call__(self, x: int) -> int:
        return x


def double(x: int) -> int:
    return 2 * x


def test_the_envelope_behaves_as_the_object_it_encloses() -> None:
    fn = enclose(double, "grpc://cache:9090", "app/ssn")
    assert callable(fn) and not inspect.isclass(fn)
    assert fn(4, **{FAILURE_KEYWORD: new_failure_id()}) == 8  # the keyword never reaches the user

    inst = enclose(Counter(2), "grpc://cache:9090", "app/ssn")
    assert not callable(inst)  # flamepy's RunnerContext calls a callable object a function
    assert inst.add(3) == 5 and inst.total == 5
    inst.total = 10  # attributes are the enclosed object's
    assert inst.add(1, **{FAILURE_KEYWORD: "failure-1"}) == 11
    with pytest.raises(AttributeError):
        inst.missing  # noqa: B018

    assert callable(enclose(CallableThing(), "e", "a/s"))

    cls = enclose(Counter, "grpc://cache:9090", "app/ssn")
    assert inspect.isclass(cls)  # the executor instantiates it, which instantiates Counter
    made = cls()
    assert not callable(made) and made.add(1) == 1
    assert callable(enclose(CallableThing, "e", "a/s")())


def test_failure_ids_are_fresh() -> None:
    ids = {new_failure_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == len("failure-") + 16 and i.startswith("failure-") for i in ids)


def test_a_failing_call_reraises_the_same_exception_when_nothing_can_record_it(
    capfd: pytest.CaptureFixture[str],
) -> None:
    def boom() -> None:
        raise KeyError("no 5")

    fn = enclose(boom, "grpc://127.0.0.1:1", "app/ssn")
    with pytest.raises(KeyError) as err:
        fn()  # no failure id: nothing is recorded
    assert err.value.args == ("no 5",)
    assert capfd.readouterr().err == ""


def test_the_pickled_envelope_needs_nothing_of_flamepy_runner() -> None:
    # As on a stock executor: flamepy_runner cannot be imported there (nor this test module:
    # its objects travel by value here).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        objects = [enclose(double, "e", "a/s"), enclose(Counter, "e", "a/s"), enclose(Counter(1), "e", "a/s")]
        payload = cloudpickle.dumps(objects)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["flamepy_runner"] = None  # any import of it fails
        import cloudpickle
        fn, cls, inst = cloudpickle.loads({payload!r})
        print(fn(3), cls().add(2), inst.add(4))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "6 2 5\n", "")


def test_the_user_traceback_starts_after_the_envelope_frame() -> None:
    def inner() -> None:
        raise ValueError("bad")

    def _flamepy_runner_invoke() -> None:  # stands for the envelope's frame
        inner()

    def worker() -> None:
        _flamepy_runner_invoke()

    assert _flamepy_runner_invoke.__name__ == ENVELOPE_CALL_FRAME
    try:
        worker()
    except ValueError as exc:
        text = _user_traceback(exc)
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert [line.split(", in ")[-1] for line in lines if line.startswith("  File ")] == ["inner"]
    assert lines[-1] == "ValueError: bad"


def test_type_names_are_qualified_except_builtins() -> None:
    class Local(Exception):
        pass

    assert type_name_of(KeyError) == "KeyError"
    assert type_name_of(Local) == f"{__name__}.test_type_names_are_qualified_except_builtins.<locals>.Local"
    assert type_name_of(cloudpickle.pickle.PicklingError) == "_pickle.PicklingError"


@pytest.mark.parametrize(
    ("record", "valid"),
    [
        ({"type": "KeyError", "message": "m", "traceback": "t"}, True),
        ({"type": "KeyError", "message": "m", "traceback": "t", "exception": b"x"}, True),
        ({"type": "KeyError", "message": "m"}, False),
        ({"type": 1, "message": "m", "traceback": "t"}, False),
        (["KeyError", "m", "t"], False),
    ],
)
def test_failure_records(record: Any, valid: bool) -> None:
    failure = failure_from_record(record)
    if not valid:
        assert failure is None
        return
    assert failure is not None
    assert (failure.type_name, failure.message, failure.traceback, failure.exception) == (
        "KeyError",
        "m",
        "t",
        record.get("exception"),
    )
