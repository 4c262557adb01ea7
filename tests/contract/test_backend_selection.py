"""How the contract suite picks its real backend, and why it skips when it cannot have one.

These run without any cluster: they pin the decisions ``_backends.real_backend`` makes before
it would start containers, so "no Docker here" stays a skip with a reason and never an error.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from _backends import Unavailable, docker_problem, real_backend


@pytest.fixture(autouse=True)
def _no_real_cluster_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FLAME_REAL_ENDPOINT", "FLAME_REAL_CACHE_ENDPOINT", "FLAME_REAL_CA_FILE"):
        monkeypatch.delenv(var, raising=False)


def test_no_docker_and_no_endpoint_is_unavailable_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(Unavailable) as exc, real_backend():
        pass
    message = str(exc.value)
    assert "set FLAME_REAL_ENDPOINT and FLAME_REAL_CACHE_ENDPOINT" in message
    assert f"DOCKER_HOST unix://{tmp_path}/docker.sock" in message


@pytest.mark.parametrize(
    ("var", "missing"),
    [
        ("FLAME_REAL_ENDPOINT", "FLAME_REAL_CACHE_ENDPOINT"),
        ("FLAME_REAL_CACHE_ENDPOINT", "FLAME_REAL_ENDPOINT"),
    ],
)
def test_half_configured_endpoints_name_the_missing_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, missing: str
) -> None:
    monkeypatch.setenv(var, "http://127.0.0.1:1")
    with pytest.raises(Unavailable, match=f"{missing} is not set"), real_backend():
        pass


def test_docker_problem_on_a_closed_tcp_port(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    problem = docker_problem()
    assert problem is not None and problem.startswith(f"DOCKER_HOST tcp://127.0.0.1:{port}: ")


def test_docker_problem_is_none_when_the_socket_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "d.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
        assert docker_problem() is None
