"""Which distributions an instance sees: the executor's, the declared ones, their requirements.

A Flame v0.6.0 executor runs flmrun (stock ``flamepy.runner.runpy``) in an environment with
flamepy 0.6.0 and its requirements, where the package and the dependencies its pyproject
declares are installed. The fake resolves the same set from the test's environment through
``importlib.metadata`` (nothing is downloaded): each requirement's installed distribution, then
its requirements (with their markers and extras evaluated), transitively. The top-level module
names of those distributions form the :class:`~._import_scope.ImportScope` of an instance
(made by :mod:`._import_scope`, which asks this module; this one knows nothing of scopes).

The builtin flmrun (flamepy_runner's worker) needs flamepy_runner's own requirements as well;
they are visible to its instances (``jsonschema`` and its requirements, beyond flamepy's set).
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from packaging.requirements import Requirement

__all__ = [
    "FLAMEPY_EXECUTOR_REQUIREMENTS",
    "WORKER_REQUIREMENTS",
    "program_names",
    "program_text",
    "visible_names",
]

#: What a v0.6.0 executor has for flmrun: flamepy 0.6.0 and the requirements its METADATA
#: names (resolved transitively from the test's environment; absent ones are simply absent).
FLAMEPY_EXECUTOR_REQUIREMENTS: tuple[str, ...] = (
    "flamepy",
    "grpcio",
    "grpcio-tools",
    "protobuf",
    "pydantic",
    "fastapi",
    "uvicorn",
    "pyyaml",
    "pymongo",
    "requests",
    "httpx",
    "cloudpickle",
    "pyarrow",
)

#: What the builtin flmrun (flamepy_runner's worker) needs on top.
WORKER_REQUIREMENTS: tuple[str, ...] = ("flamepy-runner",)

_METADATA_DIRS = (".dist-info", ".egg-info", ".data")
_EXECUTOR_TEXT = "flamepy 0.6.0 and its requirements"
_WORKER_TEXT = "flamepy 0.6.0 and flamepy-runner with their requirements"


@functools.lru_cache(maxsize=256)
def _resolved(requirements: tuple[str, ...]) -> frozenset[str]:
    """Top-level module names of ``requirements``' installed distributions and of theirs."""
    from packaging.utils import canonicalize_name  # ~50 ms to import: only when there is work

    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    pending: list[Requirement] = []
    for text in requirements:
        req = _requirement(text)
        if req is not None and _applies(req, ""):
            pending.append(req)
    while pending:
        req = pending.pop()
        key = canonicalize_name(req.name)
        extras = sorted(req.extras)
        todo = [e for e in ["", *extras] if (key, e) not in seen]
        if not todo:
            continue
        found = _distribution(key)
        if found is None:
            continue  # not in the test's environment: the installer installs it into the package
        seen.update((key, e) for e in todo)
        top_level, requires = found
        if "" in todo:
            names |= top_level
        for text in requires:
            sub = _requirement(text)
            if sub is not None and any(_applies(sub, e) for e in todo):
                pending.append(sub)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def _distribution(name: str) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """An installed distribution's top-level names and requirements (None: not installed);
    read once per process, since each program's scope reads most of the same ones."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    return frozenset(_top_level(dist)), tuple(dist.requires or ())


def _requirement(text: str) -> Requirement | None:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text)
    except InvalidRequirement:
        return None  # the installer reports a declaration pip cannot read


def _applies(req: Requirement, extra: str) -> bool:
    from packaging.markers import UndefinedEnvironmentName

    if req.marker is None:
        return extra == ""
    try:
        return bool(req.marker.evaluate({"extra": extra}))
    except UndefinedEnvironmentName:
        return False


def _top_level(dist: importlib.metadata.Distribution) -> set[str]:
    """A distribution's importable top-level names: its ``top_level.txt``, or (for builds that
    write none) the first parts of the paths its ``RECORD`` lists."""
    listed = dist.read_text("top_level.txt")
    if listed:
        return {line.strip() for line in listed.splitlines() if line.strip().isidentifier()}
    names: set[str] = set()
    for file in dist.files or ():
        parts = file.parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(_METADATA_DIRS):
            continue
        if len(parts) > 1:
            names.add(parts[0])
        elif parts[0].endswith(".py"):
            names.add(parts[0][:-3])
        elif parts[0].endswith((".so", ".pyd")):
            names.add(parts[0].split(".", 1)[0])
    return {n for n in names if n.isidentifier()}


def visible_names(requirements: Iterable[str]) -> frozenset[str]:
    """Top-level module names of the distributions ``requirements`` name, transitively."""
    wanted = tuple(sorted({r.strip() for r in requirements if r.strip()}))
    return _resolved(wanted) if wanted else frozenset()


def _program_requirements(flmrun: str) -> tuple[tuple[str, ...], str]:
    if flmrun == "flamepy":
        return FLAMEPY_EXECUTOR_REQUIREMENTS, _EXECUTOR_TEXT
    return (*FLAMEPY_EXECUTOR_REQUIREMENTS, *WORKER_REQUIREMENTS), _WORKER_TEXT  # builtin, or *: both


def program_names(flmrun: str) -> frozenset[str]:
    """Top-level names of what the flmrun program needs (``*``: both programs)."""
    return visible_names(_program_requirements(flmrun)[0])


def program_text(flmrun: str) -> str:
    """How an instance's hint names what the flmrun program's executor has."""
    return _program_requirements(flmrun)[1]
