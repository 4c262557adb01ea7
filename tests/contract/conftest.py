"""Contract suite fixtures: every test that takes ``flame_backend`` runs on each backend.

``flame_backend`` is parametrised over ``fake`` (a :class:`flamepy_fake.FakeCluster`) and
``real`` (a real Flame v0.6.0, see ``_backends.py``), marked ``fake`` / ``real`` so ``-m fake``
or ``-m real`` picks one. It is session-scoped: one cluster per backend per xdist worker, shared
by the tests, which therefore name their applications and sessions uniquely (``names``).

- ``real`` skips with the reason when no real cluster can be had: neither
  ``FLAME_REAL_ENDPOINT`` / ``FLAME_REAL_CACHE_ENDPOINT`` nor a Docker engine. It never
  ends the run (``-m fake`` needs no Docker).
- Tests marked ``fake_only`` skip on ``real`` (before the cluster starts) with the reason.
- Real tests get a longer timeout: the first one starts the cluster (image pulls included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from _backends import FlameBackend, Names, Unavailable, fake_backend, real_backend

from flamepy_fake.plugin import reset_flamepy_clients

# Starting real containers (pulls on a cold machine) runs inside the first real test.
_REAL_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "flame_backend" not in getattr(item, "fixturenames", ()):
            continue
        if item.get_closest_marker("real") is not None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(_REAL_TIMEOUT))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before fixtures are set up, so a fake_only test never starts a real cluster.
    marker = item.get_closest_marker("fake_only")
    if marker is not None and item.get_closest_marker("real") is not None:
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else None)
        pytest.skip(
            "fake_only: " + (reason or "checks behaviour of the fake that a real cluster does not have")
        )


@pytest.fixture(
    name="flame_backend",
    scope="session",
    params=[pytest.param("fake", marks=pytest.mark.fake), pytest.param("real", marks=pytest.mark.real)],
)
def _flame_backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlameBackend]:
    """The cluster under test: the fake, or a real Flame v0.6.0 (skipped when unavailable)."""
    if request.param == "fake":
        with fake_backend(tmp_path_factory.mktemp("flame-fake")) as backend:
            yield backend
        return
    yield request.getfixturevalue("real_flame_backend")


@pytest.fixture(name="real_flame_backend", scope="session")
def _real_flame_backend() -> Iterator[FlameBackend]:
    """The real Flame v0.6.0 every ``real`` parameter uses, the cache contracts' too: the one
    ``FLAME_REAL_ENDPOINT`` and ``FLAME_REAL_CACHE_ENDPOINT`` name, or a fresh one in Docker
    (skipped with the reason when neither can be had)."""
    with contextlib.ExitStack() as stack:
        try:
            backend = stack.enter_context(real_backend())
        except Unavailable as exc:
            pytest.skip(f"real backend unavailable: {exc}")
        yield backend


@pytest.fixture(name="frontend")
def _frontend(flame_backend: FlameBackend) -> Iterator[Any]:
    """A raw ``flame.v1.Frontend`` stub for this test (its channel is closed afterwards)."""
    with flame_backend.frontend() as stub:
        yield stub


@pytest.fixture(name="flamepy_client")
def _flamepy_client(flame_backend: FlameBackend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The ``flamepy`` module, with its process-wide connection pointed at ``flame_backend``."""
    import flamepy

    for key, value in flame_backend.env.items():
        monkeypatch.setenv(key, value)
    reset_flamepy_clients()
    try:
        yield flamepy
    finally:
        reset_flamepy_clients()


@pytest.fixture(name="names")
def _names(flame_backend: FlameBackend) -> Iterator[Names]:
    """Per-test unique names; the test's sessions and applications are removed afterwards."""
    names = Names()
    yield names
    with flame_backend.frontend() as stub, contextlib.suppress(grpc.RpcError):
        names.cleanup(stub)
