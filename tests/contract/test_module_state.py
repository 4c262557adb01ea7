"""Module state: a task never sees the client's module-level changes (issue 11).

On a real cluster a task runs in an executor process that imports the Runner's package afresh,
so a value the client changed at module level (``config.RATE = 2.0``) is not what the task
reads. The fake's default backend must behave the same; only ``executors="thread"`` (asked for
explicitly, and documented as such) shares the test's module state.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from _backends import FlameBackend

from flamepy_runner import Runner


@pytest.fixture
def rate_module(tmp_path: Path) -> Iterator[tuple[Path, ModuleType]]:
    """A project whose module ``RATE = 1.0`` prices a quantity; imported here like a client does."""
    name = f"ffx_config_{uuid.uuid4().hex[:8]}"
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("rate\n")
    (project / f"{name}.py").write_text("RATE = 1.0\n\n\ndef price(quantity):\n    return quantity * RATE\n")
    sys.path.insert(0, str(project))
    try:
        yield project, importlib.import_module(name)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop(name, None)


def test_a_task_does_not_see_the_clients_module_state(
    flame_backend: FlameBackend, rate_module: tuple[Path, ModuleType]
) -> None:
    project, config = rate_module
    config.RATE = 2.0  # changed on the client side only
    with Runner(f"rate-{uuid.uuid4().hex[:8]}", config=flame_backend.config, project_dir=project) as runner:
        assert runner.service(config.price)(10).get() == 10.0


@pytest.mark.fake_only(reason="the thread backend is the fake's own, documented as sharing module state")
def test_the_thread_backend_shares_the_tests_module_state(
    tmp_path: Path, rate_module: tuple[Path, ModuleType]
) -> None:
    from flamepy_fake import FakeCluster

    project, config = rate_module
    config.RATE = 2.0
    with (
        FakeCluster(executors="thread", work_dir=tmp_path) as cluster,
        Runner(f"rate-{uuid.uuid4().hex[:8]}", config=cluster.config, project_dir=project) as runner,
    ):
        assert runner.service(config.price)(10).get() == 20.0
