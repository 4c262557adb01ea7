"""The pytest plugin's run-wide settings: ``--flame-*`` options, their ini twins, and validation.

Every option has an ini setting of the same name with underscores (``--flame-executors`` is
``flame_executors``); the command line wins over the ini file, the ini file over the default.
The fake cluster's options are generated from :class:`~flamepy_fake._options.ClusterOptions`
(each field's :class:`~flamepy_fake._options.OptionSpec`); the plugin's own (where clusters
come from, their scope, an external cluster's endpoints) are listed here. Settings are read once,
in ``pytest_configure``; a bad value is a :class:`pytest.UsageError` naming where it came from.
Nothing here imports grpc or pyarrow (the plugin stays inert).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from .._options import EXECUTORS, FLMRUN_MODES, ClusterOptions, deprecated_backend_text

__all__ = ["BACKENDS", "EXECUTORS", "FLMRUN_MODES", "SCOPES", "Settings", "add_options", "read_settings"]

#: Where the clusters of the fixtures come from.
BACKENDS = ("fake", "real", "external")
#: How long one fake cluster lives: one per test, per module or per session.
SCOPES = ("function", "module", "session")
AUTOSTART_VAR = "FLAMEPY_FAKE_AUTOSTART"

#: The settings that only a fake cluster has (a real or external cluster is configured elsewhere).
FAKE_ONLY = ClusterOptions.names()


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    return parse


def _backend(value: str) -> str:
    if value not in BACKENDS + EXECUTORS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(BACKENDS)}; got {value!r}")
    return value


def _url(value: str) -> str:
    return value


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false; got {value!r}")


# name, parser, metavar, help: the plugin's own, then every cluster option (fake only)
_OPTIONS: tuple[tuple[str, Callable[[str], Any], str, str], ...] = (
    ("backend", _backend, "fake|real|external", "where clusters come from: fake (default), real, external"),
    *(
        (spec.name, spec.parse, spec.metavar, f"fake only: {spec.help_text()}")
        for spec in ClusterOptions.specs()
    ),
    ("scope", _choice(SCOPES), "function|module|session", "lifetime of a fake cluster (default: function)"),
    ("endpoint", _url, "URL", "session manager of --flame-backend external (http://host:port)"),
    ("cache_endpoint", _url, "URL", "object cache of --flame-backend external (grpc://host:port)"),
    ("ca_file", _url, "PATH", "CA file for an external cluster's TLS endpoints"),
)


def add_options(parser: pytest.Parser) -> None:
    """Register the ``--flame-*`` options and their ini settings."""
    group = parser.getgroup("flame", "fake Flame cluster (flamepy_fake)")
    for name, parse, metavar, text in _OPTIONS:
        group.addoption(
            "--flame-" + name.replace("_", "-"), type=parse, default=None, metavar=metavar, help=text
        )
        parser.addini("flame_" + name, f"default of --flame-{name.replace('_', '-')}", default="")
    group.addoption(
        "--flame-autostart",
        action="store_true",
        default=None,
        help=f"start one cluster per pytest process before collection and export FLAME_ENDPOINT / "
        f"FLAME_CACHE_ENDPOINT to the whole run (also {AUTOSTART_VAR}=1)",
    )
    parser.addini("flame_autostart", "default of --flame-autostart", default="")


@dataclass(frozen=True)
class Settings:
    """The run-wide settings after command line > ini > default; ``explicit`` names those given.

    ``cluster`` holds the fake cluster options given (by name, parsed): the defaults of every
    ``@pytest.mark.flame``.
    """

    backend: str = "fake"
    scope: str = "function"
    endpoint: str | None = None
    cache_endpoint: str | None = None
    ca_file: str | None = None
    autostart: bool = False
    cluster: dict[str, Any] = field(default_factory=dict)
    explicit: dict[str, str] = field(default_factory=dict)

    def fake_defaults(self) -> dict[str, Any]:
        """The defaults of ``@pytest.mark.flame`` options that these settings give."""
        return dict(self.cluster)


def read_settings(config: pytest.Config) -> Settings:
    """Resolve every setting (command line, then ini, then default) and check they fit together.

    Raises:
        pytest.UsageError: a bad ini value, fake-only settings with a real or external backend, or
            an external backend without its endpoints.
    """
    values: dict[str, Any] = {}
    explicit: dict[str, str] = {}
    for name, parse, _, _ in _OPTIONS:
        option = "--flame-" + name.replace("_", "-")
        value = config.getoption("flame_" + name, None)
        if value is not None:
            explicit[name] = option
        else:
            raw = str(config.getini("flame_" + name)).strip()
            if raw:
                try:
                    value = parse(raw)
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    raise pytest.UsageError(f"ini setting flame_{name}: {exc}") from None
                explicit[name] = f"the ini setting flame_{name}"
        if value is not None:
            values[name] = value
    backend = values.get("backend", "fake")
    if backend in EXECUTORS:  # the spelling before --flame-executors existed
        where = explicit["backend"]
        config.issue_config_time_warning(
            pytest.PytestDeprecationWarning(deprecated_backend_text(f"{where} = {backend}")), stacklevel=2
        )
        values.setdefault("executors", backend)
        explicit.setdefault("executors", where)
        values["backend"] = "fake"
        del explicit["backend"]
    cluster = {name: values.pop(name) for name in FAKE_ONLY if name in values}
    autostart = config.getoption("flame_autostart", None)
    if autostart is None:
        raw = str(config.getini("flame_autostart")).strip() or os.environ.get(AUTOSTART_VAR, "")
        try:
            autostart = _flag(raw)
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"flame_autostart / {AUTOSTART_VAR}: {exc}") from None
    settings = Settings(**values, autostart=bool(autostart), cluster=cluster, explicit=explicit)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    if settings.backend == "fake":
        for name in ("endpoint", "cache_endpoint", "ca_file"):
            if name in settings.explicit:
                raise pytest.UsageError(
                    f"{settings.explicit[name]} is for --flame-backend external "
                    f"(the backend is {settings.backend})"
                )
        return
    given = [settings.explicit[name] for name in FAKE_ONLY if name in settings.explicit]
    if given:
        raise pytest.UsageError(
            f"{', '.join(given)}: fake-only, but the backend is {settings.backend} "
            f"(a real cluster is configured by its own flame-cluster.yaml)"
        )
    if settings.scope != "function" and "scope" in settings.explicit:
        raise pytest.UsageError(
            f"{settings.explicit['scope']}: fake-only, but the backend is {settings.backend} "
            f"(a {settings.backend} cluster is always shared by the whole run)"
        )
    if settings.backend == "external":
        missing = [
            "--flame-" + name.replace("_", "-")
            for name in ("endpoint", "cache_endpoint")
            if getattr(settings, name) is None
        ]
        if missing:
            raise pytest.UsageError(
                f"--flame-backend external needs {' and '.join(missing)} "
                f"(or the ini settings flame_endpoint / flame_cache_endpoint)"
            )
    elif "endpoint" in settings.explicit or "cache_endpoint" in settings.explicit:
        raise pytest.UsageError(
            "--flame-endpoint and --flame-cache-endpoint are for --flame-backend external"
        )
