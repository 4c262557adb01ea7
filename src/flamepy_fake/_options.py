"""The options of a fake cluster, validated in one place.

``ClusterOptions`` holds what tells one fake cluster from another (how instances run, which
flmrun, scheduling and cache limits). ``FakeCluster`` builds one from its keyword arguments,
``@pytest.mark.flame`` (``_plugin._options.FlameOptions``) from the marker's, so each value is
checked once, with one text per mistake. ``executors`` is the instance mode everywhere;
``backend``, its former name, still works with one ``DeprecationWarning`` from
:func:`executors_from`.

Light on purpose (no grpc, no pyarrow): the pytest plugin imports it in every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from typing import Any

from ._control._policies import DEFAULT_POLICIES, check_policies
from ._values import INSTANCE_IMPORTS, parse_size

__all__ = [
    "EXECUTORS",
    "FLMRUN_MODES",
    "INSTANCE_IMPORTS",
    "ClusterOptions",
    "executors_from",
    "memory_limit",
]

#: How instances run: processes where possible (``auto``, ``process``) or threads (``thread``).
EXECUTORS: tuple[str, ...] = ("auto", "thread", "process")
#: What runs ``flmrun`` sessions: our worker (``builtin``) or flamepy's stock runpy (``flamepy``).
FLMRUN_MODES: tuple[str, ...] = ("builtin", "flamepy")


def executors_from(executors: str | None, backend: str | None, where: str, *, warn: bool = True) -> str:
    """The instance mode given as ``executors`` or by its former name ``backend`` (one warning).

    Args:
        executors: the value under its name, or None.
        backend: the value under its former name, or None.
        where: who was given it, for the warning (``"FakeCluster"``).
        warn: warn about ``backend`` (False where the caller already warned its own way).

    Raises:
        TypeError: both were given.
    """
    if backend is None:
        return "auto" if executors is None else executors
    if executors is not None:
        raise TypeError("give executors or its former name backend, not both")
    if not warn:
        return backend
    warnings.warn(
        f"{where}(backend=...) is deprecated: the instance mode is now executors=... "
        f"(backend names where clusters come from: fake, real, external)",
        DeprecationWarning,
        stacklevel=3,
    )
    return backend


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _positive(name: str, value: Any, *, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        suffix = " or None" if optional else ""
        raise ValueError(f"{name} must be a positive integer{suffix}; got {value!r}")


def memory_limit(value: int | str | None) -> int | None:
    """``cache_max_memory`` in bytes: a positive int, or a size string such as ``512M``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_size(value)
        except argparse.ArgumentTypeError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(
        f"cache_max_memory must be a positive number of bytes or a size such as 512M or 2G; got {value!r}"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """What a fake cluster is made with, validated when built (see ``FakeCluster`` for each).

    Attributes:
        executors: ``auto``, ``thread`` or ``process``.
        flmrun: ``builtin`` or ``flamepy``.
        fork_server: fork instance processes from a zygote (``None``: where supported).
        instance_imports: ``declared`` (what a Flame executor has) or ``all``.
        max_executors: the fake's cap on live instances (``None``: none, as v0.6.0).
        policies: v0.6.0's scheduling policies (a list without ``gang`` is refused).
        retry_limit: failed bindings of a session before event 1002.
        default_resreq: ``(cpu, memory, gpu)`` for sessions that name none.
        cache_max_memory: object cache memory limit in bytes (:func:`memory_limit` converts a
            size such as ``"512M"``).

    Raises:
        ValueError: a value out of range or not one of the choices; the text names the option.
    """

    executors: str = "auto"
    flmrun: str = "builtin"
    fork_server: bool | None = None
    instance_imports: str = "declared"
    max_executors: int | None = None
    policies: tuple[str, ...] = DEFAULT_POLICIES
    retry_limit: int = 5
    default_resreq: tuple[int, int, int] | None = None
    cache_max_memory: int | None = None

    def __post_init__(self) -> None:
        _choice("executors", self.executors, EXECUTORS)
        _choice("flmrun", self.flmrun, FLMRUN_MODES)
        _choice("instance_imports", self.instance_imports, INSTANCE_IMPORTS)
        if self.fork_server is not None and not isinstance(self.fork_server, bool):
            raise ValueError(f"fork_server must be True, False or None; got {self.fork_server!r}")
        _positive("max_executors", self.max_executors, optional=True)
        object.__setattr__(self, "policies", check_policies(self.policies))
        _positive("retry_limit", self.retry_limit, optional=False)
        resreq = self.default_resreq
        if resreq is not None and (
            not isinstance(resreq, (tuple, list))
            or len(resreq) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in resreq)
        ):
            raise ValueError(f"default_resreq must be (cpu, memory, gpu) non-negative ints; got {resreq!r}")
        if resreq is not None:
            object.__setattr__(self, "default_resreq", tuple(resreq))
        object.__setattr__(self, "cache_max_memory", memory_limit(self.cache_max_memory))

    @classmethod
    def build(cls, **values: Any) -> ClusterOptions:
        """Options from keyword values as users give them: ``policies`` any sequence,
        ``cache_max_memory`` a size string too (``"512M"``).

        Raises:
            TypeError: a name that is not an option.
            ValueError: as the constructor.
        """
        if "policies" in values:
            values["policies"] = tuple(values["policies"])
        if "cache_max_memory" in values:
            values["cache_max_memory"] = memory_limit(values["cache_max_memory"])
        return cls(**values)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in their documented order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        """The options by name."""
        return {name: getattr(self, name) for name in self.names()}
