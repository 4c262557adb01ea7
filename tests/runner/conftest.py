"""Runner tests: every test runs on a fresh fake cluster under both ``flmrun`` programs.

``cluster`` is parametrised over ``builtin`` (our worker, ``flamepy_runner._worker``, in thread
instances and in isolated processes) and ``flamepy`` (flamepy 0.6.0's stock ``python -m
flamepy.runner.runpy``, what a real cluster runs), so each test proves both that our payloads run
on the stock executor and that our worker runs them. ``project`` is a small project directory
the Runner packages; ``make_runner`` starts Runners on the test's cluster with unique names and
closes them at teardown.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flamepy_fake import FakeCluster
from flamepy_runner import Runner

_counter = itertools.count()

#: The module the sample project ships; tests import it so that its functions travel by
#: reference and must be installed from the package on the executor side.
PROJECT_MODULE = "runner_sample_tasks"
PROJECT_SOURCE = '''\
"""Functions and classes of the sample project the Runner tests package."""


def triple(x):
    """Three times x."""
    return 3 * x


class Accumulator:
    """Adds numbers up."""

    def __init__(self, start=0):
        self.total = start

    def add(self, value):
        """Add value; return the new total."""
        self.total += value
        return self.total
'''


#: (flmrun program, executor backend): our worker in threads and in (forked) processes, and
#: flamepy's stock runpy in processes, which is what a real cluster runs.
SETUPS = [("builtin", "thread"), ("builtin", "auto"), ("flamepy", "auto")]


@pytest.fixture(params=SETUPS, ids=["builtin-thread", "builtin-process", "flamepy-process"])
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The test's ``(flmrun, backend)``."""
    flmrun, backend = request.param
    return str(flmrun), str(backend)


@pytest.fixture
def flmrun(setup: tuple[str, str]) -> str:
    """The ``flmrun`` program of the test's cluster: our worker or flamepy's stock runpy."""
    return setup[0]


@pytest.fixture
def cluster(setup: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCluster]:
    """A started fake cluster running ``flmrun`` sessions with the chosen program and backend."""
    flmrun, backend = setup
    work_dir = tmp_path_factory.mktemp("fake")
    with FakeCluster(flmrun=flmrun, executors=backend, work_dir=work_dir, retry_limit=2) as c:
        yield c


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with one module (importable here, and on executors once installed)."""
    root = tmp_path / "project"
    root.mkdir()
    (root / f"{PROJECT_MODULE}.py").write_text(PROJECT_SOURCE)
    monkeypatch.syspath_prepend(str(root))
    return root


@pytest.fixture
def make_runner(cluster: FakeCluster, project: Path) -> Iterator[Callable[..., Runner]]:
    """``make_runner(name=None, **kwargs)``: a Runner on the test's cluster, closed at teardown."""
    made: list[Runner] = []

    def make(name: str | None = None, **kwargs: Any) -> Runner:
        kwargs.setdefault("config", cluster.config)
        kwargs.setdefault("project_dir", project)
        runner = Runner(name or f"rt{next(_counter)}-{uuid.uuid4().hex[:6]}", **kwargs)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


@pytest.fixture
def runner(make_runner: Callable[..., Runner]) -> Runner:
    """A started Runner on the test's cluster."""
    return make_runner()
