"""An instance imports what a Flame executor has, not what the test's environment has.

A real v0.6.0 executor has the standard library, flmrun's distributions (flamepy 0.6.0 and its
requirements), the package and what the package declares. The fake's instance processes see
the same (``instance_imports="declared"``, the default): numpy, installed here for the tests
but declared by no project below, must fail to import remotely exactly as on such an executor,
and work once declared. ``instance_imports="all"`` and thread executors see everything.
"""

from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flamepy_fake import FakeCluster
from flamepy_runner import RemoteError, Runner

_counter = itertools.count()

MODULE = "imports_sample_tasks"
SOURCE = '''\
"""Services that import a distribution only when called."""


def numpy_sum(n):
    import numpy
    return int(numpy.arange(n).sum())


def sorted_items(items):
    import sortedcontainers
    return list(sortedcontainers.SortedList(items))


def jsonschema_ok(instance):
    import jsonschema
    jsonschema.validate(instance, {"type": "integer"})
    return True


def yaml_dump(value):
    import yaml
    return yaml.safe_dump(value)


def flamepy_found_numpy():
    # flamepy's cache looks for numpy once, when it is first imported.
    import flamepy.core.cache
    return flamepy.core.cache._HAS_NUMPY
'''

#: (flmrun, fork_server): our worker forked and spawned, and stock runpy (a real cluster's flmrun).
SETUPS = [("builtin", None), ("builtin", False), ("flamepy", None)]
IDS = ["builtin-forked", "builtin-spawned", "flamepy-forked"]

#: What the stderr hint says the executor has, per flmrun.
EXECUTOR_TEXT = {
    "builtin": "flamepy 0.6.0 and flamepy-runner with their requirements",
    "flamepy": "flamepy 0.6.0 and its requirements",
}


def _hint(module: str, app: str, flmrun: str) -> str:
    return (
        f"flamepy-fake: module '{module}' (distribution '{module}', installed where the tests run) "
        f"is hidden from this instance: application '{app}' does not declare it, and a Flame "
        f"executor has only the standard library, {EXECUTOR_TEXT[flmrun]}, the package and the "
        f"dependencies it declares. If the task needs it, declare it (Runner(..., "
        f"dependencies=['{module}']) or [project] dependencies in the package's pyproject.toml), "
        f"or let instances see the test's whole environment with the cluster option "
        f"instance_imports='all'."
    )


@pytest.fixture
def tasks(project: Path) -> Any:
    """The services, in the conftest's project (importable here, installed on executors)."""
    import importlib

    (project / f"{MODULE}.py").write_text(SOURCE)
    sys.modules.pop(MODULE, None)
    importlib.invalidate_caches()
    return importlib.import_module(MODULE)


def _cluster(tmp_path_factory: pytest.TempPathFactory, **kwargs: Any) -> FakeCluster:
    kwargs.setdefault("retry_limit", 2)
    return FakeCluster(work_dir=tmp_path_factory.mktemp("fake"), **kwargs)


@pytest.fixture(params=SETUPS, ids=IDS)
def setup(request: pytest.FixtureRequest) -> tuple[str, bool | None]:
    flmrun, fork_server = request.param
    return str(flmrun), fork_server


@pytest.fixture
def flmrun(setup: tuple[str, bool | None]) -> str:
    return setup[0]


@pytest.fixture
def cluster(
    setup: tuple[str, bool | None], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeCluster]:
    flmrun, fork_server = setup
    with _cluster(tmp_path_factory, flmrun=flmrun, fork_server=fork_server) as c:
        yield c


def _runner(cluster: FakeCluster, project: Path, **kwargs: Any) -> Runner:
    name = f"imp{next(_counter)}-{uuid.uuid4().hex[:6]}"
    return Runner(name, config=cluster.config, project_dir=project, **kwargs)


def _stderr(cluster: FakeCluster, session_id: str) -> str:
    return "".join(cluster.instance_logs(eid) for eid in cluster.executors_of(session_id))


def test_an_undeclared_distribution_fails_to_import_as_on_an_executor(
    cluster: FakeCluster, flmrun: str, project: Path, tasks: Any
) -> None:
    with _runner(cluster, project) as runner:
        svc = runner.service(tasks.numpy_sum)
        with pytest.raises(RemoteError) as err:
            svc(4).get()
        stderr = _stderr(cluster, svc.session_id)
    exc = err.value
    assert (exc.remote_type, exc.remote_message) == ("ModuleNotFoundError", "No module named 'numpy'")
    assert isinstance(exc, ModuleNotFoundError) and exc.remote_exception is not None
    assert exc.remote_exception.name == "numpy"
    # The traceback is CPython's own for a missing module: the user's frame, no finder frame.
    assert exc.remote_traceback is not None
    lines = exc.remote_traceback.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].endswith(f'/src/{MODULE}.py", line 5, in numpy_sum')
    assert lines[2:] == ["    import numpy", "ModuleNotFoundError: No module named 'numpy'"]
    assert stderr.count("flamepy-fake: module 'numpy'") == 1
    assert _hint("numpy", runner.name, flmrun) + "\n" in stderr


def test_a_declared_distribution_and_its_requirements_are_visible(
    cluster: FakeCluster, project: Path, tasks: Any
) -> None:
    # hypothesis requires sortedcontainers: declaring the one makes the other importable.
    with _runner(cluster, project, dependencies=["hypothesis"]) as runner:
        assert runner.service(tasks.sorted_items)([3, 1, 2]).get() == [1, 2, 3]
        with pytest.raises(RemoteError) as err:
            runner.service(tasks.numpy_sum)(4).get()
    assert err.value.remote_message == "No module named 'numpy'"


def test_without_the_declaration_the_requirement_is_hidden_too(
    cluster: FakeCluster, project: Path, tasks: Any
) -> None:
    with _runner(cluster, project) as runner, pytest.raises(RemoteError) as err:
        runner.service(tasks.sorted_items)([3, 1, 2]).get()
    assert err.value.remote_message == "No module named 'sortedcontainers'"


def test_a_distribution_the_fork_server_was_imported_without_is_served_once_declared(
    cluster: FakeCluster, project: Path, tasks: Any
) -> None:
    # The fork server imports pyarrow and flamepy within the executors' scope, without numpy
    # (their import-time probes then see what an executor has); an instance that declares
    # numpy is spawned, so those probes find it, as on an executor that installed it.
    with _runner(cluster, project, dependencies=["numpy>=1.26"]) as runner:
        assert runner.service(tasks.numpy_sum)(5).get() == 10


@pytest.mark.parametrize("declared", [[], ["numpy"]], ids=["undeclared", "declared"])
def test_import_time_probes_find_what_an_executor_has(
    cluster: FakeCluster, project: Path, tasks: Any, declared: list[str]
) -> None:
    # Without numpy an executor's flamepy cannot read numpy payloads ("numpy is required to
    # deserialize this object"); with numpy declared it can. A fork server that imported
    # flamepy with numpy in sight would make the first case pass on the fake only.
    with _runner(cluster, project, dependencies=declared) as runner:
        assert runner.service(tasks.flamepy_found_numpy)().get() is bool(declared)


def test_flmrun_distributions_are_visible_and_differ_by_program(
    cluster: FakeCluster, flmrun: str, project: Path, tasks: Any
) -> None:
    # pyyaml is one of flamepy 0.6.0's requirements: every executor has it. jsonschema is only
    # flamepy-runner's (our worker's own), so stock runpy's instances, like Flame's, lack it.
    with _runner(cluster, project) as runner:
        assert runner.service(tasks.yaml_dump)({"n": 1}).get() == "n: 1\n"
        check = runner.service(tasks.jsonschema_ok)(3)
        if flmrun == "builtin":
            assert check.get() is True
        else:
            with pytest.raises(RemoteError) as err:
                check.get()
            assert err.value.remote_message == "No module named 'jsonschema'"


@pytest.mark.parametrize("flmrun", ["builtin", "flamepy"])
def test_instance_imports_all_sees_the_whole_environment(
    flmrun: str, tmp_path_factory: pytest.TempPathFactory, project: Path, tasks: Any
) -> None:
    cluster = _cluster(tmp_path_factory, flmrun=flmrun, instance_imports="all")
    with cluster, _runner(cluster, project) as runner:
        svc = runner.service(tasks.numpy_sum)
        assert svc(4).get() == 6
        assert "flamepy-fake: module" not in _stderr(cluster, svc.session_id)


def test_thread_instances_share_the_test_environment(
    tmp_path_factory: pytest.TempPathFactory, project: Path, tasks: Any
) -> None:
    # A documented difference: thread executors run in the test's process, with its modules.
    with _cluster(tmp_path_factory, executors="thread") as cluster, _runner(cluster, project) as runner:
        assert runner.service(tasks.numpy_sum)(4).get() == 6


@pytest.mark.parametrize("value", ["", "ALL", "everything", None, True])
def test_instance_imports_takes_declared_or_all(value: Any) -> None:
    with pytest.raises(ValueError) as err:
        FakeCluster(instance_imports=value)
    assert str(err.value) == f"instance_imports must be one of declared, all; got {value!r}"


def test_a_numpy_argument_fails_as_on_an_executor_without_numpy(
    cluster: FakeCluster, project: Path, tasks: Any
) -> None:
    # The arguments are loaded before the call, outside the envelope that reports the type and
    # traceback: stock runpy reports the message alone, and so must our worker.
    import numpy

    with _runner(cluster, project) as runner:
        svc = runner.service(tasks.yaml_dump)
        with pytest.raises(RemoteError) as err:
            svc(numpy.arange(3)).get()
    exc = err.value
    assert type(exc) is RemoteError
    assert (exc.remote_type, exc.remote_traceback, exc.remote_exception) == (None, None, None)
    assert str(exc) == (
        f"task 1 of session '{svc.session_id}' (application '{runner.name}') failed: No module named 'numpy'"
    )
