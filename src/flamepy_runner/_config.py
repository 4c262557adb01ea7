"""Client configuration as a value object.

There is no process-wide configuration: every client, cache handle and Runner takes a
:class:`FlameConfig`. ``FlameConfig.load()`` builds the usual default from
``~/.flame/flame.yaml`` (the same file and layout flamepy reads) and then the environment
variables ``FLAME_ENDPOINT``, ``FLAME_CACHE_ENDPOINT``, ``FLAME_CACHE_STORAGE`` and
``FLAME_CA_FILE``, which win over the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._exceptions import ConfigError

__all__ = ["DEFAULT_EXCLUDES", "FlameConfig"]

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
DEFAULT_CACHE_ENDPOINT = "grpc://127.0.0.1:9090"
DEFAULT_TEMPLATE = "flmrun"
#: Paths never packaged, whatever ``package.excludes`` says (from the Runner setup guide).
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    "*.egg-info",
    ".git",
    ".tox",
    "node_modules",
    "*.pyc",
    "*.pyo",
    ".DS_Store",
)


@dataclasses.dataclass(frozen=True)
class FlameConfig:
    """Where the cluster is and how to reach it.

    Args:
        endpoint: session manager URL, ``http://host:port`` or ``https://host:port``.
        cache_endpoint: object cache URL, ``grpc://host:port`` or ``grpcs://host:port``; empty
            when not configured (``load()`` gives the local default only when there is no
            flame.yaml at all; a flame.yaml context without ``cache.endpoint`` has no cache).
        ca_file: CA bundle for TLS to the session manager.
        cache_ca_file: CA bundle for TLS to the object cache.
        cache_storage: client-local cache storage directory, if configured.
        package_storage: where Runner packages go (``grpc(s)://``, ``file://``, ``http(s)://``);
            ``None`` means the object cache.
        package_excludes: extra glob patterns left out of Runner packages.
        runner_template: the application Runner clones (``flmrun`` by default).
        timeout: default deadline in seconds for unary remote calls.
    """

    endpoint: str = DEFAULT_ENDPOINT
    cache_endpoint: str = DEFAULT_CACHE_ENDPOINT
    ca_file: str | None = None
    cache_ca_file: str | None = None
    cache_storage: str | None = None
    package_storage: str | None = None
    package_excludes: tuple[str, ...] = ()
    runner_template: str = DEFAULT_TEMPLATE
    timeout: float = 30.0

    @property
    def excludes(self) -> tuple[str, ...]:
        """The default exclusions followed by ``package_excludes``, without duplicates."""
        return tuple(dict.fromkeys(DEFAULT_EXCLUDES + self.package_excludes))

    def replace(self, **changes: Any) -> FlameConfig:
        """Return a copy with ``changes`` applied (the object itself is immutable)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> FlameConfig:
        """Build the default configuration: flame.yaml, then environment, then ``overrides``.

        Args:
            path: the flame.yaml to read; ``~/.flame/flame.yaml`` when omitted (a missing
                default file is fine, a missing explicit one is an error).
            environ: the environment to read; ``os.environ`` when omitted.
            **overrides: field values that win over both.

        Raises:
            ConfigError: the file is unreadable, not YAML, or names no usable context.
        """
        env = os.environ if environ is None else environ
        fields: dict[str, Any] = {}
        if path is not None:
            fields.update(_read_yaml(Path(path), required=True))
        else:
            home = env.get("HOME")
            base = Path(home) if home else Path.home()
            fields.update(_read_yaml(base / ".flame" / "flame.yaml", required=False))
        if env.get("FLAME_ENDPOINT"):
            fields["endpoint"] = env["FLAME_ENDPOINT"]
        if env.get("FLAME_CACHE_ENDPOINT"):
            fields["cache_endpoint"] = env["FLAME_CACHE_ENDPOINT"]
        if env.get("FLAME_CACHE_STORAGE"):
            fields["cache_storage"] = env["FLAME_CACHE_STORAGE"]
        if env.get("FLAME_CA_FILE"):
            fields.setdefault("ca_file", env["FLAME_CA_FILE"])
            fields.setdefault("cache_ca_file", env["FLAME_CA_FILE"])
        fields.update(overrides)
        return cls(**fields)


def _read_yaml(path: Path, *, required: bool) -> dict[str, Any]:
    if not path.exists():
        if required:
            raise ConfigError(f"configuration file {path} does not exist")
        return {}
    # Imported here, not with the module: PyYAML is two thirds of importing the pytest plugin
    # (~20 ms, which every pytest run pays), and a test on the fake never reads a flame.yaml.
    import yaml

    # libyaml's safe loader where PyYAML was built with it: the same documents, ~10x faster to
    # read (a flmrun instance reads its flame.yaml at start-up, on the path of every first call).
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        doc = yaml.load(path.read_text(), Loader=loader)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    current = doc.get("current-context")
    if current is None:
        raise ConfigError(f"{path}: current-context is not set")
    for ctx in doc.get("contexts") or []:
        if isinstance(ctx, dict) and ctx.get("name") == current:
            return _context_fields(path, ctx)
    raise ConfigError(f"{path}: context {current!r} not found in contexts")


def _context_fields(path: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    cluster = ctx.get("cluster") or {}
    cache = ctx.get("cache") or {}
    package = ctx.get("package") or {}
    runner = ctx.get("runner") or {}
    for section, value in (("cluster", cluster), ("cache", cache), ("package", package), ("runner", runner)):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: '{section}' must be a mapping")
    if cluster.get("endpoint"):
        fields["endpoint"] = str(cluster["endpoint"])
    if (cluster.get("tls") or {}).get("ca_file"):
        fields["ca_file"] = str(cluster["tls"]["ca_file"])
    # A context without a cache has none, as in flamepy: the Runner then reports "Storage not
    # configured" instead of uploading to a local default the user never named.
    fields["cache_endpoint"] = str(cache["endpoint"]) if cache.get("endpoint") else ""
    if (cache.get("tls") or {}).get("ca_file"):
        fields["cache_ca_file"] = str(cache["tls"]["ca_file"])
    if cache.get("storage"):
        fields["cache_storage"] = str(cache["storage"])
    if package.get("storage"):
        fields["package_storage"] = str(package["storage"])
    excludes = package.get("excludes") or []
    if not isinstance(excludes, list) or not all(isinstance(e, str) for e in excludes):
        raise ConfigError(f"{path}: package.excludes must be a list of glob strings")
    fields["package_excludes"] = tuple(excludes)
    if runner.get("template"):
        fields["runner_template"] = str(runner["template"])
    return fields
