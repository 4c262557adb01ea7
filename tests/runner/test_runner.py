"""The Runner end to end: the setup guide's API on a fake cluster, under both flmrun programs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import pydoc
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import cloudpickle
import pyarrow.flight as flight
import pytest

from flamepy_fake import FakeCluster
from flamepy_runner import (
    AlreadyExistsError,
    ConfigError,
    FlameConfig,
    InvalidStateError,
    NotFoundError,
    ObjectFuture,
    ObjectRef,
    PackageCache,
    RemoteError,
    ResourceRequirement,
    Runner,
    SessionContext,
    UsageError,
    WaitTimeoutError,
    _wire,
)
from flamepy_runner._frontend import FrontendClient
from flamepy_runner._proto import pb

# Functions and classes defined here travel by value, as those of a script's __main__ do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def sum_fn(a: int, b: int) -> int:
    return a + b


def double(value: int) -> int:
    return value * 2


class Counter:
    """Counts."""

    def __init__(self, initial: int = 0) -> None:
        self._count = initial

    def add(self, value: int) -> int:
        """Add ``value`` and return the new count."""
        self._count += value
        return self._count

    def get(self) -> int:
        return self._count

    def whoami(self) -> int:
        return id(self)


def _frontend(cluster: FakeCluster) -> FrontendClient:
    return FrontendClient(cluster.config)


def _session(cluster: FakeCluster, session_id: str) -> Any:
    with _frontend(cluster) as fe:
        return fe.get_session(session_id)


def _common_key(cluster: FakeCluster, session_id: str) -> str:
    """The cache key of a session's RunnerContext (its common data is that object's ref)."""
    return str(bson.decode(bytes(_session(cluster, session_id).spec.common_data))["key"])


def _cache_keys(cluster: FakeCluster) -> list[str]:
    client = flight.FlightClient(cluster.cache_endpoint.replace("grpc://", "grpc+tcp://"))
    try:
        return sorted(info.descriptor.path[0].decode() for info in client.list_flights())
    finally:
        client.close()


# -- the guide's three examples ---------------------------------------------------------------------


def test_function_service(runner: Runner) -> None:
    sum_service = runner.service(sum_fn)
    result = sum_service(1, 3)
    assert isinstance(result, ObjectFuture)
    assert result.get() == 4


def test_stateful_instance_service(runner: Runner) -> None:
    counter = runner.service(Counter(10), stateful=True, warmup=1)
    counter.add(1).wait()
    counter.add(3).wait()
    assert counter.get().get() == 14


def test_object_future_arguments_travel_as_refs(runner: Runner, cluster: FakeCluster) -> None:
    double_service = runner.service(double)
    add_service = runner.service(sum_fn)
    first = double_service(21)
    total = add_service(first, 8)
    assert total.get() == 50
    # The second task's input names the first result by its ref: the client never fetched it
    # and put it again, the second call's executor read it from the cache, once.
    ref = first.ref()
    assert ref.key.startswith(f"{runner.name}/{double_service.session_id}/")
    task = cluster.state.get_task(add_service.session_id, "1")
    request = _wire.loads(task.input, prefer_ours=True)
    sent = bson.decode(request.args[0])  # an ObjectRef travels as its BSON, as flamepy sends it
    assert sent == {"endpoint": ref.endpoint, "key": ref.key, "version": ref.version}
    assert [c.key for c in cluster.calls(method="DoGet") if c.key == ref.key] == [ref.key]


# -- defaults and options ---------------------------------------------------------------------------


def test_defaults_table(runner: Runner, cluster: FakeCluster) -> None:
    fn = runner.service(sum_fn)
    cls = runner.service(Counter)
    inst = runner.service(Counter(1))
    got = {
        name: (svc.autoscale, svc.stateful, _session(cluster, svc.session_id).spec)
        for name, svc in (("function", fn), ("class", cls), ("instance", inst))
    }
    summary = {
        name: (
            auto,
            state,
            spec.min_instances,
            spec.max_instances if spec.HasField("max_instances") else None,
        )
        for name, (auto, state, spec) in got.items()
    }
    assert summary == {
        "function": (True, False, 0, None),
        "class": (False, False, 1, 1),
        "instance": (False, False, 1, 1),
    }
    assert all(spec.batch_size == 1 and spec.application == runner.name for _, _, spec in got.values())


def test_warmup_with_autoscale_false_gives_fixed_instances(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(Counter, autoscale=False, warmup=3)
    spec = _session(cluster, svc.session_id).spec
    assert (spec.min_instances, spec.max_instances) == (3, 3)
    ids = {svc.whoami().get() for _ in range(12)}
    assert 1 <= len(ids) <= 3
    auto = runner.service(sum_fn, warmup=2)
    spec = _session(cluster, auto.session_id).spec
    assert (spec.min_instances, spec.HasField("max_instances")) == (2, False)


def test_stateful_refused_for_classes_and_functions(runner: Runner) -> None:
    with pytest.raises(ValueError) as cls_err:
        runner.service(Counter, stateful=True)
    assert str(cls_err.value) == (
        "stateful=True is not supported for a class (class Counter): each instance of a class service "
        "is built fresh by the executor, so there is no state to keep. Pass an instance instead, "
        "e.g. runner.service(MyClass(), stateful=True)."
    )
    with pytest.raises(ValueError) as fn_err:
        runner.service(sum_fn, stateful=True)
    assert str(fn_err.value) == (
        "stateful=True is not supported for a function (function sum_fn): only an instance has state "
        "to keep. Pass an instance instead."
    )
    with pytest.raises(ValueError) as warm_err:
        runner.service(sum_fn, warmup=-1)
    assert str(warm_err.value) == "warmup must be a non-negative integer, got -1"
    assert runner.service(sum_fn, warmup=0).min_instances == 0


def test_stateful_change_is_seen_by_the_next_call_on_another_instance(
    runner: Runner, cluster: FakeCluster
) -> None:
    counter = runner.service(Counter(0), stateful=True, autoscale=False, warmup=2)
    assert [counter.add(1).get() for _ in range(3)] == [1, 2, 3]
    # The instance that served them dies as the next task is handed to it: the task goes back
    # to Pending and another instance runs it, from the state written back after each call.
    kill = cluster.faults.kill_instance("idle")
    assert counter.add(1).get() == 4
    assert not kill.active  # it fired: the fourth call did run elsewhere
    assert [counter.add(1).get() for _ in range(4)] == [5, 6, 7, 8]
    assert counter.get().get() == 8
    # Each of the nine tasks that ran wrote the state back (update_object of the context's key).
    key = _common_key(cluster, counter.session_id)
    assert len([c for c in cluster.calls(method="DoPut") if c.key == key]) == 9


def test_stateless_instance_state_is_not_written_back(runner: Runner, cluster: FakeCluster) -> None:
    counter = runner.service(Counter(5))
    assert counter.add(1).get() == 6
    assert counter.get().get() == 6  # the instance keeps its own copy between calls
    # No task wrote the state back (a stateful one updates the context's key after each task).
    key = _common_key(cluster, counter.session_id)
    assert [c for c in cluster.calls(method="DoPut") if c.key == key] == []
    counter.close()
    # A new session of the same object starts from the client's copy, untouched.
    again = runner.service(Counter(5))
    assert again.get().get() == 5


def test_session_context_picks_the_session_id(runner: Runner, cluster: FakeCluster) -> None:
    def tagged(x: int) -> int:
        return x

    tagged._session_context = SessionContext(session_id="my-session-001", application_name="demo")  # type: ignore[attr-defined]
    svc = runner.service(tagged)
    assert svc.session_id == "my-session-001"
    assert svc(7).get() == 7
    assert _session(cluster, "my-session-001").spec.application == runner.name


def test_flamepy_session_context_is_accepted(runner: Runner) -> None:
    from flamepy.runner import SessionContext as FlamepyContext

    obj = Counter(1)
    obj._session_context = FlamepyContext(session_id="flamepy-ctx-1")  # type: ignore[attr-defined]
    assert runner.service(obj).session_id == "flamepy-ctx-1"


def test_other_session_context_is_ignored_with_a_warning(
    runner: Runner, caplog: pytest.LogCaptureFixture
) -> None:
    obj = Counter(1)
    obj._session_context = {"session_id": "nope"}  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="flamepy_runner"):
        svc = runner.service(obj)
    assert svc.session_id.startswith(f"{runner.name}-") and len(svc.session_id) == len(runner.name) + 7
    assert [r.getMessage() for r in caplog.records] == [
        "_session_context of instance Counter is a dict, not a SessionContext; ignoring it"
    ]


def test_generated_session_ids(runner: Runner) -> None:
    ids = {runner.service(sum_fn).session_id for _ in range(3)}
    assert len(ids) == 3
    for sid in ids:
        prefix, suffix = sid[: len(runner.name) + 1], sid[len(runner.name) + 1 :]
        assert prefix == f"{runner.name}-" and len(suffix) == 6 and suffix.isalnum()


def test_resreq_ours_flamepy_and_string(runner: Runner, cluster: FakeCluster) -> None:
    import flamepy

    for resreq in (
        ResourceRequirement.from_string("cpu=1,mem=1g"),
        flamepy.ResourceRequirement.from_string("cpu=1,mem=1g"),
        "cpu=1,mem=1g",
    ):
        svc = runner.service(sum_fn, resreq=resreq)
        spec = _session(cluster, svc.session_id).spec
        assert (spec.resreq.cpu, spec.resreq.memory, spec.resreq.gpu) == (1, 1 << 30, 0)
    with pytest.raises(TypeError) as err:
        runner.service(sum_fn, resreq=3)
    assert str(err.value) == (
        "resreq must be a ResourceRequirement (ours or flamepy's) or a 'cpu=N,mem=SIZE' string, got int"
    )


# -- wrappers ---------------------------------------------------------------------------------------


def test_method_wrappers_keep_signature_and_docstring(runner: Runner) -> None:
    for target in (Counter, Counter(3)):
        svc = runner.service(target)
        assert str(inspect.signature(svc.add)) == "(value: 'int') -> 'int'"
        assert svc.add.__doc__ == "Add ``value`` and return the new count."
        assert svc.add.__name__ == "add"
        assert "Add ``value`` and return the new count." in pydoc.render_doc(svc.add)
        assert not hasattr(svc, "_count")
    fn = runner.service(sum_fn)
    assert str(inspect.signature(fn)) == "(a: 'int', b: 'int') -> 'int'"


def test_bad_arguments_fail_at_the_call_site(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(Counter(0))
    with pytest.raises(TypeError) as err:
        svc.add(1, 2)
    assert str(err.value) == "instance Counter.add(value: 'int') -> 'int': too many positional arguments"
    fn = runner.service(sum_fn)
    with pytest.raises(TypeError) as err2:
        svc()  # type: ignore[operator]
    assert str(err2.value) == (
        f"RunnerService of instance Counter in application '{runner.name}' is not callable: "
        "call one of its methods instead"
    )
    assert fn(1, b=2).get() == 3
    assert _session(cluster, svc.session_id).status.pending == 0


def test_unpicklable_argument_fails_before_anything_is_sent(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(sum_fn)
    with pytest.raises(UsageError) as err:
        svc(1, threading.Lock())
    assert str(err.value) == (
        "argument 1 (lock) of function sum_fn cannot be sent to the cluster: it cannot be pickled: "
        "cannot pickle '_thread.lock' object"
    )
    with _frontend(cluster) as fe:
        status = fe.get_session(svc.session_id).status
    assert (status.pending, status.running, status.succeed, status.failed) == (0, 0, 0, 0)


def test_unpicklable_execution_object_fails_before_a_session_opens(
    runner: Runner, cluster: FakeCluster
) -> None:
    holder = Counter(1)
    holder.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(UsageError) as err:
        runner.service(holder)
    assert str(err.value) == (
        "the execution object (instance Counter) cannot be sent to the cluster: it cannot be pickled: "
        "cannot pickle '_thread.lock' object"
    )
    with _frontend(cluster) as fe:
        sessions = fe._stub.ListSession(pb.ListSessionRequest(), timeout=5).sessions
    assert [s.metadata.id for s in sessions] == []


def test_a_function_the_package_cannot_import_fails_at_service(
    runner: Runner, cluster: FakeCluster, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As a test module outside the packaged directory: the executors could never import it.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ffx_outside_pricing.py").write_text("def price(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(outside))
    monkeypatch.delitem(sys.modules, "ffx_outside_pricing", raising=False)  # forgotten at teardown
    import ffx_outside_pricing  # type: ignore[import-not-found]

    with pytest.raises(UsageError) as err:
        runner.service(ffx_outside_pricing.price)
    root = project.resolve()
    assert str(err.value) == (
        f"cannot serve function price: it travels by reference to module 'ffx_outside_pricing' "
        f"({outside.resolve() / 'ffx_outside_pricing.py'}), which the package of {root} does not "
        f"provide, so the executors could not import it. Move it into the project (importable as "
        f"'ffx_outside_pricing' from {root}), or make it travel by value: "
        f"cloudpickle.register_pickle_by_value(sys.modules['ffx_outside_pricing'])"
    )
    with _frontend(cluster) as fe:
        sessions = fe._stub.ListSession(pb.ListSessionRequest(), timeout=5).sessions
    assert [s.metadata.id for s in sessions] == []


def test_large_argument_is_passed_by_reference(runner: Runner, cluster: FakeCluster) -> None:
    def sizes(*args: bytes, **kwargs: bytes) -> list[int]:
        return [len(a) for a in args] + [len(v) for v in kwargs.values()]

    svc = runner.service(sizes)
    big, small = b"x" * (5 * 1024 * 1024), b"y" * 10
    future = svc(big, small, other=b"z" * (3 * 1024 * 1024))
    assert future.get() == [len(big), 10, 3 * 1024 * 1024]
    with _frontend(cluster) as fe:
        sent = fe.get_task(svc.session_id, future.task_id).spec.input
    # Both large values went to the cache; the task input kept only their refs and the small one.
    assert len(sent) < 4096


def test_put_object_ref_as_argument(runner: Runner) -> None:
    ref = runner.put_object([1, 2, 3])
    assert isinstance(ref, ObjectRef) and ref.key.startswith(f"{runner.name}/shared/")
    assert runner.service(sum)(ref).get() == 6


# -- futures ----------------------------------------------------------------------------------------


class PricingError(Exception):
    """An exception of the user's, with a field of its own (a default, so that it unpickles)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


def test_remote_error_carries_type_message_and_traceback(runner: Runner) -> None:
    # The same on every setup: through stock runpy the envelope records what our worker reports.
    def divide(a: int, b: int) -> float:
        return a / b

    svc = runner.service(divide)
    future = svc(1, 0)
    with pytest.raises(ZeroDivisionError) as err:  # also the remote exception's class
        future.get()
    where = f"task {future.task_id} of session '{svc.session_id}' (application '{runner.name}')"
    exc = err.value
    assert isinstance(exc, RemoteError) and type(exc).__name__ == "RemoteError(ZeroDivisionError)"
    assert (exc.session_id, exc.task_id, exc.remote_message, exc.remote_type) == (
        svc.session_id,
        future.task_id,
        "division by zero",
        "ZeroDivisionError",
    )
    assert isinstance(exc.remote_exception, ZeroDivisionError)
    assert exc.remote_exception.args == ("division by zero",)
    lines = (exc.remote_traceback or "").splitlines()
    line = divide.__code__.co_firstlineno + 1
    # The user's frame only: not the worker's, runpy's or the envelope's. (cloudpickle names
    # the file of code sent by value "<dynamic-code>", so no source line is shown.)
    assert lines == [
        "Traceback (most recent call last):",
        f'  File "<dynamic-code>", line {line}, in divide',
        "ZeroDivisionError: division by zero",
    ]
    assert (
        str(exc) == f"{where} failed: ZeroDivisionError: division by zero\n\n{exc.remote_traceback.rstrip()}"
    )
    with pytest.raises(RemoteError):
        future.wait()
    with pytest.raises(RemoteError):
        future.ref()
    assert future.done()


def test_a_remote_exception_of_the_users_class_is_caught_by_that_class(runner: Runner) -> None:
    def price(item: str) -> float:
        raise PricingError(f"no price for {item}", code=404)

    future = runner.service(price)("tea")
    with pytest.raises(PricingError) as err:
        future.get()
    exc = err.value
    assert isinstance(exc, RemoteError) and type(exc).__name__ == "RemoteError(PricingError)"
    assert exc.remote_type == f"{__name__}.PricingError"
    assert exc.remote_message == "no price for tea"
    assert exc.code == 404  # read from the remote exception
    assert isinstance(exc.remote_exception, PricingError) and exc.remote_exception.code == 404
    assert repr(exc) == f"RemoteError(PricingError)({str(exc)!r})"
    # Pickled, it is a plain RemoteError with the same fields (the remote class is not needed).
    again = cloudpickle.loads(cloudpickle.dumps(exc))
    assert type(again) is RemoteError
    assert (str(again), again.remote_type, again.task_id) == (str(exc), exc.remote_type, exc.task_id)


def test_a_remote_timeout_error_is_not_a_wait_timeout(runner: Runner) -> None:
    def slow() -> None:
        raise TimeoutError("the supplier did not answer")

    future = runner.service(slow)()
    with pytest.raises(TimeoutError) as err:
        future.get(timeout=60)
    assert isinstance(err.value, RemoteError) and not isinstance(err.value, WaitTimeoutError)
    assert err.value.remote_message == "the supplier did not answer"


def test_a_remote_class_unknown_here_gives_a_plain_remote_error(runner: Runner) -> None:
    def oops() -> None:
        import types

        module = types.ModuleType("ffx_remote_only")
        exec("class Oops(Exception):\n    pass\n", module.__dict__)
        raise module.Oops("only the executor knows this class")

    future = runner.service(oops)()
    with pytest.raises(RemoteError) as err:
        future.get()
    assert type(err.value) is RemoteError
    assert (err.value.remote_type, err.value.remote_exception) == ("ffx_remote_only.Oops", None)
    assert "ffx_remote_only" not in sys.modules  # nothing imported for the error's sake
    assert str(err.value).startswith(
        f"task {future.task_id} of session '{future.session_id}' (application '{runner.name}') failed: "
        "ffx_remote_only.Oops: only the executor knows this class\n\nTraceback (most recent call last):\n"
    )


def test_get_with_timeout_then_done(runner: Runner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    def wait_for_gate(path: str) -> str:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return "open"

    svc = runner.service(wait_for_gate)
    future = svc(str(gate))
    with pytest.raises(WaitTimeoutError) as err:
        future.get(timeout=0.2)
    assert (
        str(err.value) == f"task {future.task_id} of session '{svc.session_id}' did not finish within 0.2 s"
    )
    assert isinstance(err.value, TimeoutError)
    assert not future.done()
    gate.touch()
    assert future.get(timeout=60) == "open"
    assert future.done()


def test_select_yields_in_completion_order(runner: Runner, tmp_path: Path) -> None:
    gate = tmp_path / "gate"

    def gated(path: str, tag: str) -> str:
        import os
        import time

        while path and not os.path.exists(path):
            time.sleep(0.01)
        return tag

    svc = runner.service(gated, autoscale=False, warmup=2)
    slow = svc(str(gate), "slow")
    fast = svc("", "fast")
    order = runner.select([slow, fast])
    first = next(order)
    assert first is fast and not slow.done()
    gate.touch()
    assert next(order) is slow
    assert runner.get([slow, fast]) == ["slow", "fast"]
    assert [r.key for r in runner.ref([fast])] == [fast.ref().key]


def test_concurrent_futures_and_asyncio_interop(runner: Runner) -> None:
    svc = runner.service(double)
    futures = [svc(i) for i in range(20)]
    done, pending = concurrent.futures.wait(futures, timeout=60)
    assert (len(done), len(pending)) == (20, 0)
    assert sorted(f.get() for f in concurrent.futures.as_completed(futures)) == [2 * i for i in range(20)]

    async def main() -> list[int]:
        return list(await asyncio.gather(*(svc(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    runner.wait(futures)
    assert not futures[0].cancel()


def test_services_are_safe_from_many_threads(runner: Runner) -> None:
    svc = runner.service(double)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = list(pool.map(lambda i: svc(i), range(200)))
    assert runner.get(futures) == [2 * i for i in range(200)]
    assert len({f.task_id for f in futures}) == 200


def test_many_outstanding_futures_use_one_thread_and_a_bounded_window(runner: Runner) -> None:
    svc = runner.service(double)
    futures = [svc(i) for i in range(300)]
    ours = [t.name for t in threading.enumerate() if t.name.startswith("flamepy-runner")]
    assert ours == ["flamepy-runner-watch"]
    assert runner.get(futures) == [2 * i for i in range(300)]
    assert runner._watcher is not None and 1 <= runner._watcher.peak_streams <= 64


def test_wait_timeout_names_the_count(runner: Runner, tmp_path: Path) -> None:
    def stall(path: str) -> None:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.01)

    gate = tmp_path / "gate"
    futures = [runner.service(stall)(str(gate)) for _ in range(2)]
    with pytest.raises(WaitTimeoutError) as err:
        runner.wait(futures, timeout=0.1)
    assert str(err.value) == "2 of 2 futures were not done within 0.1 s"
    with pytest.raises(WaitTimeoutError) as err2:
        list(runner.select(futures, timeout=0.1))
    assert str(err2.value) == "2 of 2 futures were not done within 0.1 s"
    gate.touch()
    runner.wait(futures, timeout=60)


# -- packaged code ---------------------------------------------------------------------------------


def test_functions_of_the_packaged_project_run_by_reference(runner: Runner) -> None:
    import runner_sample_tasks as tasks

    assert runner.service(tasks.triple)(5).get() == 15
    acc = runner.service(tasks.Accumulator(2), stateful=True)
    acc.add(3).wait()
    assert acc.add(4).get() == 9


# -- lifecycle -------------------------------------------------------------------------------------


def test_close_cleans_everything_up(
    make_runner: Callable[..., Runner], cluster: FakeCluster, project: Path
) -> None:
    runner = make_runner()
    svc = runner.service(sum_fn)
    assert svc(1, 2).get() == 3
    package = project / "dist" / f"{runner.name}.tar.gz"
    assert package.exists()
    assert any(k.startswith(f"{runner.name}/") for k in _cache_keys(cluster))
    runner.close()
    runner.close()  # idempotent
    with _frontend(cluster) as fe:
        assert fe.get_application(runner.name) is None
        # Unregistering the application removed its closed sessions too.
        with pytest.raises(NotFoundError):
            fe.get_session(svc.session_id)
    assert [k for k in _cache_keys(cluster) if k.startswith(f"{runner.name}/")] == []
    assert not package.exists() and not (project / "dist").exists()
    with pytest.raises(UsageError) as err:
        svc(1, 2)
    assert (
        str(err.value) == f"cannot call function sum_fn: the service (session '{svc.session_id}') is closed"
    )
    with pytest.raises(UsageError) as err2:
        runner.service(sum_fn)
    assert str(err2.value) == f"cannot create a service of {sum_fn!r}: Runner '{runner.name}' is closed"
    with pytest.raises(UsageError) as err3:
        runner.put_object(1)
    assert str(err3.value) == f"cannot put an object: Runner '{runner.name}' is closed"


def test_runners_sharing_a_package_cache_upload_one_archive_and_run_a_changed_file(
    make_runner: Callable[..., Runner], project: Path, tmp_path: Path, setup: tuple[str, str]
) -> None:
    import runner_sample_tasks as tasks

    # No metadata of its own: the generated pyproject.toml names the project, not each Runner.
    assert not any((project / f).exists() for f in ("pyproject.toml", "setup.py", "setup.cfg"))
    isolated = setup[1] != "thread"  # thread instances share this process's imported modules
    with PackageCache(tmp_path / "packages") as packages:
        first = make_runner(package_cache=packages)
        second = make_runner(package_cache=packages)
        assert first.package is not None and first.package == second.package
        assert packages.builds == 1
        assert first.service(tasks.triple)(2).get() == 6
        # A changed file (same size: the mtime tells) reaches the next Runner's executors.
        module = project / "runner_sample_tasks.py"
        module.write_text(module.read_text().replace("return 3 * x", "return 4 * x"))
        third = make_runner(package_cache=packages)
        assert third.package is not None and third.package != first.package
        assert packages.builds == 2
        if isolated:
            assert third.service(tasks.triple)(2).get() == 8
            assert second.service(tasks.triple)(2).get() == 6  # its own upload: the old content
        for runner in (first, second, third):
            runner.close()
        assert first.package.path.is_file() and third.package.path.is_file()  # the cache's
        assert not (project / "dist").exists()
    assert not first.package.path.exists() and not third.package.path.exists()


def test_calling_an_open_service_of_a_closed_runner(make_runner: Callable[..., Runner]) -> None:
    runner = make_runner()
    svc = runner.service(sum_fn)
    runner.close()
    with pytest.raises(UsageError) as err:
        svc(1, 2)
    assert (
        str(err.value) == f"cannot call function sum_fn: the service (session '{svc.session_id}') is closed"
    )


def test_closing_a_service_closes_its_session(runner: Runner, cluster: FakeCluster) -> None:
    svc = runner.service(sum_fn)
    svc.close()
    svc.close()
    assert svc.closed
    assert _session(cluster, svc.session_id).status.state == pb.SessionState.Value("Closed")
    with pytest.raises(UsageError) as err:
        svc(1, 1)
    assert (
        str(err.value) == f"cannot call function sum_fn: the service (session '{svc.session_id}') is closed"
    )


def test_close_waits_for_calls_in_flight(make_runner: Callable[..., Runner], tmp_path: Path) -> None:
    runner = make_runner()
    gate = tmp_path / "gate"

    def gated(path: str) -> int:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return 1

    future = runner.service(gated)(str(gate))
    closer = threading.Thread(target=runner.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive() and not future.done()  # close() is waiting for the call
    gate.touch()
    closer.join(60)
    assert not closer.is_alive()
    assert future.done() and future.ref().key.startswith(f"{runner.name}/")
    with pytest.raises(UsageError) as err:
        future.get()
    assert str(err.value) == (
        f"cannot fetch the result of task {future.task_id} of session '{future.session_id}': "
        f"Runner '{runner.name}' is closed and its objects are deleted"
    )


def test_close_timeout_bounds_the_wait(make_runner: Callable[..., Runner], tmp_path: Path) -> None:
    runner = make_runner(close_timeout=0.2)

    def forever(path: str) -> None:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.01)

    future = runner.service(forever)(str(tmp_path / "never"))
    runner.close()
    (tmp_path / "never").touch()  # let the instance finish so the cluster can stop
    with pytest.raises(UsageError) as err:
        future.get(timeout=30)
    assert str(err.value) == (
        f"Runner '{runner.name}' was closed before the task finished "
        "(close() waits at most close_timeout=0.2 s for calls in flight)"
    )


def test_exception_in_with_block_cleans_up_and_propagates(cluster: FakeCluster, project: Path) -> None:
    with (
        pytest.raises(KeyError, match="boom"),
        Runner("with-error", config=cluster.config, project_dir=project) as r,
    ):
        r.service(sum_fn)(1, 1).wait()
        raise KeyError("boom")
    with _frontend(cluster) as fe:
        assert fe.get_application("with-error") is None


def test_fail_if_exists_and_reuse(make_runner: Callable[..., Runner], cluster: FakeCluster) -> None:
    owner = make_runner("shared-app")
    with pytest.raises(AlreadyExistsError) as err:
        make_runner("shared-app", fail_if_exists=True)
    assert str(err.value) == "Application 'shared-app' already exists. Set fail_if_exists=False to reuse it."
    guest = make_runner("shared-app")
    assert (owner.registered, guest.registered) == (True, False)
    svc = guest.service(sum_fn)
    assert svc(2, 2).get() == 4
    svc.close()
    guest.close()
    with _frontend(cluster) as fe:
        assert fe.get_application("shared-app") is not None  # the guest never unregisters it


def test_a_reusing_runner_closes_what_it_opened_and_the_owner_then_unregisters(
    make_runner: Callable[..., Runner], cluster: FakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    # issue 15 case 3: flamepy 0.6.0 (and we, before) left the guest's sessions open, so the
    # owner's close() could not unregister ("has open sessions").
    owner = make_runner("shared-app")
    owner_svc = owner.service(sum_fn)
    assert owner_svc(1, 1).get() == 2
    owner_obj = owner.put_object("the owner's")
    guest = make_runner("shared-app")
    guest_svc = guest.service(sum_fn)
    assert guest_svc(2, 2).get() == 4
    guest_obj = guest.put_object("the guest's")
    guest.close()
    sessions = {s.id: s.state for s in cluster.sessions()}
    assert sessions[guest_svc.session_id] == "closed"
    assert sessions[owner_svc.session_id] == "open"  # never anyone else's
    keys = _cache_keys(cluster)
    assert not [k for k in keys if k.startswith(f"shared-app/{guest_svc.session_id}")]
    assert guest_obj.key not in keys and owner_obj.key in keys
    assert [k for k in keys if k.startswith(f"shared-app/{owner_svc.session_id}/")]
    with _frontend(cluster) as fe:
        assert fe.get_application("shared-app") is not None  # the application is the owner's
    with caplog.at_level(logging.WARNING, logger="flamepy_runner"):
        owner.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with _frontend(cluster) as fe:
        assert fe.get_application("shared-app") is None
    assert _cache_keys(cluster) == []


def test_missing_template(make_runner: Callable[..., Runner], cluster: FakeCluster, project: Path) -> None:
    config = cluster.config.replace(runner_template="no-such-template")
    with pytest.raises(NotFoundError) as err:
        make_runner("tmpl-app", config=config)
    assert str(err.value) == (
        f"Failed to get application template 'no-such-template': no such application on {cluster.endpoint}; "
        "confirm the session manager is running and no-such-template appears in flmctl list application"
    )
    assert not (project / "dist").exists()
    assert _cache_keys(cluster) == []


@pytest.mark.parametrize("scheme", ["file", "http"])
def test_package_storage_schemes_end_to_end(
    make_runner: Callable[..., Runner],
    cluster: FakeCluster,
    scheme: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if scheme == "file":
        shared = tmp_path / "shared"
        shared.mkdir()
        storage = f"file://{shared}"
    else:
        storage = request.getfixturevalue("http_base") + "/packages"
    runner = make_runner("stored-app", config=cluster.config.replace(package_storage=storage))
    with _frontend(cluster) as fe:
        url = fe.get_application("stored-app").spec.url
    assert url == f"{storage}/stored-app.tar.gz"
    import runner_sample_tasks as tasks

    # The executor installed the package from that URL and imports the project's module from it.
    assert runner.service(tasks.triple)(4).get() == 12
    runner.close()
    if scheme == "file":
        assert list(shared.iterdir()) == []
    else:
        import httpx

        assert httpx.get(url, timeout=10).status_code == 404


def test_package_excludes_are_honoured(
    make_runner: Callable[..., Runner], cluster: FakeCluster, project: Path
) -> None:
    import tarfile

    (project / "debug.log").write_text("noise")
    (project / "data").mkdir()
    (project / "data" / "big.bin").write_bytes(b"x" * 100)
    (project / "keep.txt").write_text("kept")
    runner = make_runner("excl-app", config=cluster.config.replace(package_excludes=("*.log", "data/")))
    assert runner.package is not None
    with tarfile.open(runner.package.path) as tar:
        names = sorted(tar.getnames())
    assert names == ["keep.txt", "pyproject.toml", "runner_sample_tasks.py"]


def test_no_storage_configured(
    make_runner: Callable[..., Runner], cluster: FakeCluster, project: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        make_runner("nostore", config=cluster.config.replace(cache_endpoint=""))
    assert str(err.value) == (
        "Storage not configured: set cache.endpoint or package.storage in flame.yaml (a local setup needs "
        'only cache.endpoint: "grpc://127.0.0.1:9090")'
    )
    assert not (project / "dist").exists()
    with _frontend(cluster) as fe:
        assert fe.get_application("nostore") is None


def test_template_working_directory_and_python_version(
    make_runner: Callable[..., Runner], cluster: FakeCluster
) -> None:
    with _frontend(cluster) as fe:
        flmrun = fe.get_application("flmrun")
        spec = pb.ApplicationSpec()
        spec.CopyFrom(flmrun.spec)
        spec.working_directory = "/tmp/flame-work"
        fe.register_application("my-template", spec)
        try:
            runner = make_runner(
                "wd-app", config=cluster.config.replace(runner_template="my-template"), python_version="3.11"
            )
            app = fe.get_application("wd-app")
            assert app.spec.working_directory == "/tmp/flame-work/wd-app"
            envs = {e.name: e.value for e in app.spec.environments}
            assert envs["FLAME_PYTHON_VERSION"] == "3.11"
            assert app.spec.description == "Runner application: wd-app"
            assert (app.spec.command, list(app.spec.arguments)) == (
                flmrun.spec.command,
                list(flmrun.spec.arguments),
            )
            assert app.spec.url.endswith("/wd-app/pkg/wd-app.tar.gz")
            runner.close()
            plain = make_runner("plain-app")
            assert not fe.get_application("plain-app").spec.HasField("working_directory")
            plain.close()
        finally:
            fe.unregister_application("my-template")


# What the fake's executor manager puts before the exception text when OnSessionEnter fails.
BIND_DETAIL = "on_session_enter failed: "


def test_retry_limit_fails_futures_with_the_bind_failure(runner: Runner) -> None:
    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("cannot start")

        def ping(self) -> int:
            return 1

    svc = runner.service(Broken)
    future = svc.ping()
    with pytest.raises(InvalidStateError) as err:
        future.get(timeout=60)
    pattern = (
        re.escape(
            f"session '{svc.session_id}' of application '{runner.name}' cannot run its tasks: event 1002: "
            "Session retry limit reached after 2/2 failed attempts; new executor assignment is paused "
            "for this session; existing executors are unchanged. Last bind failure (event 1001): Executor "
        )
        + r"<\S+> on node <\S+> failed to bind session with return_code <12>: "
        + re.escape(f"{BIND_DETAIL}cannot start")
    )
    assert re.fullmatch(pattern, str(err.value)), str(err.value)
    assert runner._watcher is not None and runner._watcher.open_watches() == 0  # its stream was freed
    svc.close()


def test_bad_runner_arguments(cluster: FakeCluster) -> None:
    with pytest.raises(UsageError) as err:
        Runner("", config=cluster.config)
    assert str(err.value) == "Runner name must be a non-empty string, got ''"
    with pytest.raises(UsageError) as err2:
        Runner("x", config=cluster.config, close_timeout=-1)
    assert str(err2.value) == "close_timeout must be >= 0, got -1"


def test_unreachable_cluster_is_a_clear_error(project: Path) -> None:
    config = FlameConfig(endpoint="http://127.0.0.1:1", cache_endpoint="grpc://127.0.0.1:1", timeout=2)
    from flamepy_runner import UnavailableError

    with pytest.raises(UnavailableError) as err:
        Runner("nowhere", config=config, project_dir=project)
    assert str(err.value).startswith(
        "cannot get application 'nowhere': session manager http://127.0.0.1:1 is unreachable: "
    )


def test_close_refuses_a_negative_timeout_and_stays_open(make_runner: Callable[..., Runner]) -> None:
    runner = make_runner()
    with pytest.raises(UsageError) as err:
        runner.close(timeout=-1)
    assert str(err.value) == "close timeout must be >= 0, got -1"
    assert not runner.closed
    runner.close(timeout=0)  # nothing in flight: closes at once
    assert runner.closed
