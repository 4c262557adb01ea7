"""How the contract suite picks its real backend, and why it skips when it cannot have one.

These run without any cluster: they pin the decisions ``_backends.real_backend`` makes before
it would start containers, so "no Docker here" stays a skip with a reason and never an error.
"""

from __future__ import annotations

import socket
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
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


# --------------------------------------------------------------------------- the Docker wiring
# No Docker engine here, so the container wiring runs against a recording stand-in for
# testcontainers: which images, aliases, ports and config file, and that everything started is
# removed again, also when the cluster never becomes ready.


class _Container:
    made: list[_Container] = []

    def __init__(self, image: str) -> None:
        self.image = image
        self.aliases: tuple[str, ...] = ()
        self.ports: tuple[int, ...] = ()
        self.files: list[tuple[bytes, str]] = []
        self.network: Any = None
        self.running = False
        self.stopped = False
        _Container.made.append(self)

    def with_network(self, network: Any) -> _Container:
        self.network = network
        return self

    def with_network_aliases(self, *aliases: str) -> _Container:
        self.aliases = aliases
        return self

    def with_exposed_ports(self, *ports: int) -> _Container:
        self.ports = ports
        return self

    def with_copy_into_container(self, data: bytes, path: str) -> _Container:
        self.files.append((data, path))
        return self

    def start(self) -> _Container:
        self.running = True
        return self

    def stop(self) -> None:
        self.stopped = True

    def get_container_host_ip(self) -> str:
        return "docker-host"

    def get_exposed_port(self, port: int) -> int:
        return 40000 + port

    def get_logs(self) -> tuple[bytes, bytes]:
        return (f"log of {self.image}".encode(), b"")


class _Network:
    instances: list[_Network] = []

    def __init__(self) -> None:
        self.removed = False
        _Network.instances.append(self)

    def create(self) -> _Network:
        return self

    def remove(self) -> None:
        self.removed = True


@pytest.fixture
def recording_testcontainers(monkeypatch: pytest.MonkeyPatch) -> None:
    from flamepy_fake import _backends

    _Container.made, _Network.instances = [], []
    package = types.ModuleType("testcontainers")
    core = types.ModuleType("testcontainers.core")
    container = types.ModuleType("testcontainers.core.container")
    network = types.ModuleType("testcontainers.core.network")
    container.DockerContainer = _Container  # type: ignore[attr-defined]
    network.Network = _Network  # type: ignore[attr-defined]
    for name, module in [
        ("testcontainers", package),
        ("testcontainers.core", core),
        ("testcontainers.core.container", container),
        ("testcontainers.core.network", network),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(_backends, "docker_problem", lambda: None)


def test_docker_cluster_wiring(recording_testcontainers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from flamepy_fake import _backends

    probed: list[str] = []
    monkeypatch.setattr(_backends, "wait_until_ready", lambda config, timeout: probed.append(config.endpoint))
    with real_backend() as backend:
        assert (backend.name, backend.default_resreq) == ("real", (1, 1 << 30, 0))
        assert backend.endpoint == "http://docker-host:48080"
        assert backend.cache_endpoint == "grpc://docker-host:49090"
        assert probed == [backend.endpoint]
        cache, sm, em = _Container.made
        assert [c.image for c in (cache, sm, em)] == [
            "xflops/flame-object-cache:v0.6.0",
            "xflops/flame-session-manager:v0.6.0",
            "xflops/flame-executor-manager:v0.6.0",
        ]
        # The names in the generated config are the network aliases, on one shared network.
        assert (cache.aliases, sm.aliases, em.aliases) == (
            ("flame-object-cache",),
            ("flame-session-manager",),
            (),
        )
        assert (cache.ports, sm.ports) == ((9090,), (8080,))
        assert {id(c.network) for c in (cache, sm, em)} == {id(_Network.instances[0])}
        for part in (cache, sm, em):
            ((data, path),) = part.files
            assert path == "/root/.flame/flame-cluster.yaml"
            config = yaml.safe_load(data)
            assert config["cluster"]["endpoint"] == "http://flame-session-manager:8080"
            assert config["cache"]["endpoint"] == "grpc://flame-object-cache:9090"
            assert config["cluster"]["storage"].startswith("fs://")  # the reference semantics
            # v0.6.0 never creates an executor without 'gang'; upstream's CI runs [priority, gang].
            assert config["cluster"]["policies"] == ["priority", "gang"]
            assert part.running and not part.stopped
    assert all(part.stopped for part in _Container.made) and _Network.instances[0].removed


def test_docker_cluster_that_never_gets_ready_is_an_error_with_logs(
    recording_testcontainers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamepy_fake import _backends

    def never_ready(config: Any, timeout: float) -> None:
        raise TimeoutError("no node has registered yet")

    monkeypatch.setattr(_backends, "wait_until_ready", never_ready)
    with pytest.raises(RuntimeError) as exc, real_backend():
        pass
    assert "did not start: no node has registered yet" in str(exc.value)
    assert "log of xflops/flame-session-manager:v0.6.0" in str(exc.value)
    assert all(part.stopped for part in _Container.made) and _Network.instances[0].removed
