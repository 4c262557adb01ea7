"""FlameConfig: flame.yaml, then environment, then explicit overrides; no global state."""

from __future__ import annotations

from pathlib import Path

import pytest

from flamepy_runner import DEFAULT_EXCLUDES, ConfigError, FlameConfig

YAML = """\
current-context: flame
contexts:
  - name: other
    cluster: {endpoint: "http://other:1"}
  - name: flame
    cluster:
      endpoint: "https://sm.example:8080"
      tls: {ca_file: "/etc/ca.crt"}
    cache:
      endpoint: "grpcs://cache.example:9090"
      tls: {ca_file: "/etc/cache-ca.crt"}
    package:
      storage: "file:///shared/pkgs"
      excludes: ["*.log", "data/"]
    runner:
      template: "my-flmrun"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flame.yaml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_env(tmp_path: Path) -> None:
    cfg = FlameConfig.load(environ={"HOME": str(tmp_path)})
    assert cfg == FlameConfig()
    assert cfg.endpoint == "http://127.0.0.1:8080"
    assert cfg.cache_endpoint == "grpc://127.0.0.1:9090"
    assert cfg.runner_template == "flmrun"


def test_reads_current_context_from_file(tmp_path: Path) -> None:
    cfg = FlameConfig.load(write(tmp_path, YAML), environ={})
    assert cfg.endpoint == "https://sm.example:8080"
    assert cfg.ca_file == "/etc/ca.crt"
    assert cfg.cache_endpoint == "grpcs://cache.example:9090"
    assert cfg.cache_ca_file == "/etc/cache-ca.crt"
    assert cfg.package_storage == "file:///shared/pkgs"
    assert cfg.runner_template == "my-flmrun"
    assert cfg.package_excludes == ("*.log", "data/")
    # defaults first, user patterns merged after them
    assert cfg.excludes[: len(DEFAULT_EXCLUDES)] == DEFAULT_EXCLUDES
    assert cfg.excludes[-2:] == ("*.log", "data/")


def test_a_context_without_cache_has_no_cache_endpoint(tmp_path: Path) -> None:
    text = 'current-context: c\ncontexts:\n  - name: c\n    cluster: {endpoint: "http://sm:8080"}\n'
    cfg = FlameConfig.load(write(tmp_path, text), environ={})
    assert (cfg.endpoint, cfg.cache_endpoint) == ("http://sm:8080", "")
    env = {"FLAME_CACHE_ENDPOINT": "grpc://env:2"}
    assert FlameConfig.load(write(tmp_path, text), environ=env).cache_endpoint == "grpc://env:2"


def test_home_default_file_is_used(tmp_path: Path) -> None:
    (tmp_path / ".flame").mkdir()
    (tmp_path / ".flame" / "flame.yaml").write_text(YAML)
    assert FlameConfig.load(environ={"HOME": str(tmp_path)}).runner_template == "my-flmrun"


def test_environment_wins_over_file_and_overrides_win_over_both(tmp_path: Path) -> None:
    env = {
        "FLAME_ENDPOINT": "http://env:1",
        "FLAME_CACHE_ENDPOINT": "grpc://env:2",
        "FLAME_CACHE_STORAGE": "/tmp/cache",
    }
    cfg = FlameConfig.load(write(tmp_path, YAML), environ=env, cache_endpoint="grpc://arg:3")
    assert cfg.endpoint == "http://env:1"
    assert cfg.cache_endpoint == "grpc://arg:3"
    assert cfg.cache_storage == "/tmp/cache"


def test_ca_file_env_fills_only_missing_tls(tmp_path: Path) -> None:
    cfg = FlameConfig.load(environ={"HOME": str(tmp_path), "FLAME_CA_FILE": "/ca.pem"})
    assert (cfg.ca_file, cfg.cache_ca_file) == ("/ca.pem", "/ca.pem")
    cfg = FlameConfig.load(write(tmp_path, YAML), environ={"FLAME_CA_FILE": "/ca.pem"})
    assert (cfg.ca_file, cfg.cache_ca_file) == ("/etc/ca.crt", "/etc/cache-ca.crt")


def test_two_configs_coexist() -> None:
    a = FlameConfig(endpoint="http://127.0.0.1:1")
    b = a.replace(endpoint="http://127.0.0.1:2")
    assert (a.endpoint, b.endpoint) == ("http://127.0.0.1:1", "http://127.0.0.1:2")
    with pytest.raises(AttributeError):
        a.endpoint = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("contexts: []\n", "current-context is not set"),
        ("current-context: nope\ncontexts: [{name: flame}]\n", "context 'nope' not found"),
        ("- a list\n", "expected a mapping"),
        ("current-context: flame\ncontexts: [{name: flame, cluster: 3}]\n", "'cluster' must be a mapping"),
        (
            "current-context: flame\ncontexts: [{name: flame, package: {excludes: 5}}]\n",
            "package.excludes must be a list",
        ),
        ("current-context: [\n", "cannot read configuration file"),
    ],
)
def test_malformed_file_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=needle) as info:
        FlameConfig.load(path, environ={})
    assert str(path) in str(info.value)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        FlameConfig.load(tmp_path / "absent.yaml", environ={})
