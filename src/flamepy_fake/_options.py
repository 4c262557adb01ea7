"""The options of a fake cluster, validated in one place.

``ClusterOptions`` holds what tells one fake cluster from another (how instances run, which
flmrun, scheduling and cache limits). ``FakeCluster`` builds one from its keyword arguments,
``@pytest.mark.flame`` (``_plugin._options.FlameOptions``) from the marker's, so each value is
checked once, with one text per mistake. ``executors`` is the instance mode everywhere;
``backend``, its former name, still works with one warning whose text is
:func:`deprecated_backend_text` (and :func:`executors_from` raises it for keyword arguments).

Each field also says how it is spelled outside Python (:class:`OptionSpec`: a flag, a metavar,
a help text and a parser of text), so the pytest plugin's ``--flame-*`` options and ``flame_*``
ini settings and ``flamepy-fake``'s flags are generated from this one list.

Light on purpose (no grpc, no pyarrow): the pytest plugin imports it in every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from ._control._policies import DEFAULT_POLICIES, check_policies
from ._values import INSTANCE_IMPORTS, parse_size, positive_int

__all__ = [
    "EXECUTORS",
    "FLMRUN_MODES",
    "INSTANCE_IMPORTS",
    "ClusterOptions",
    "OptionSpec",
    "deprecated_backend_text",
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
    warnings.warn(deprecated_backend_text(f"{where}(backend=...)"), DeprecationWarning, stacklevel=3)
    return backend


def deprecated_backend_text(spelling: str) -> str:
    """The one warning for the instance mode given under its former name ``backend``;
    ``spelling`` is how it was given (``FakeCluster(backend=...)``, ``--backend``)."""
    return (
        f"{spelling} is deprecated: the instance mode is now executors "
        f"(executors=..., --executors, --flame-executors, ini flame_executors; same values: "
        f"{', '.join(EXECUTORS)}); backend names where clusters come from (fake, real, external)"
    )


# -- how each option is written as text (command line, ini file) -----------------------------


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """How one cluster option is spelled outside Python.

    Attributes:
        name: the option's name (``max_executors``); the flag is :attr:`flag`.
        metavar: what the value looks like in help (``N``, ``auto|thread|process``).
        help: one sentence for ``--help`` and the docs (the default is added by :meth:`help_text`).
        parse: the value from its text (ini settings, ``--flame-*``); raises
            ``argparse.ArgumentTypeError`` with the reason.
        choices: the accepted words of a choice option, else None.
        switch: a yes/no/auto option (``flamepy-fake`` spells it ``--x``/``--no-x``).
        default: the default as text, for help and the docs.
    """

    name: str
    metavar: str
    help: str
    parse: Callable[[str], Any]
    choices: tuple[str, ...] | None = None
    switch: bool = False
    default: str = ""

    @property
    def flag(self) -> str:
        """``--max-executors`` for ``max_executors``."""
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        """:attr:`help` with its default."""
        return f"{self.help} (default: {self.default})"


def _words(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}; got {text!r}")
        return value

    return parse


def _switch(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered == "auto":
        return None
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be auto, true or false; got {text!r}")


def _policy_list(text: str) -> tuple[str, ...]:
    try:
        return check_policies([name.strip() for name in text.split(",")])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _resreq(text: str) -> tuple[int, int, int]:
    parts = [part.strip() for part in text.split(",")]
    try:
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
            raise ValueError
        memory = int(parts[1]) if parts[1].isdigit() else parse_size(parts[1])
        return int(parts[0]), memory, int(parts[2])
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"must be CPU,MEMORY,GPU: whole numbers, MEMORY in bytes or a size such as 2G; got {text!r}"
        ) from None


def _spec(value: Any, /, **spec: Any) -> Any:
    """A field defaulting to ``value`` whose metadata says how it is spelled as text."""
    return dataclasses.field(default=value, metadata={"spec": spec})


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

    executors: str = _spec(
        "auto",
        metavar="|".join(EXECUTORS),
        choices=EXECUTORS,
        default="auto",
        help="how instances run: processes, isolated as on a real cluster (auto and process), or "
        "threads of this process for flmrun/flmexec/flmping (thread: faster, but tasks share this "
        "process's module state)",
    )
    flmrun: str = _spec(
        "builtin",
        metavar="|".join(FLMRUN_MODES),
        choices=FLMRUN_MODES,
        default="builtin",
        help="what runs flmrun sessions: flamepy_runner's worker (builtin) or the stock "
        "'python -m flamepy.runner.runpy' (flamepy)",
    )
    fork_server: bool | None = _spec(
        None,
        metavar="auto|true|false",
        switch=True,
        default="auto: on where supported, Linux",
        help="fork instance processes from a zygote that has already imported them; false spawns each one",
    )
    instance_imports: str = _spec(
        "declared",
        metavar="|".join(INSTANCE_IMPORTS),
        choices=INSTANCE_IMPORTS,
        default="declared",
        help="what flmrun instance processes can import: what a Flame executor has (declared: the "
        "standard library, the flmrun program's distributions, the package and its declared "
        "dependencies) or everything this environment has (all)",
    )
    max_executors: int | None = _spec(
        None,
        metavar="N",
        parse=positive_int,
        default="none, as Flame v0.6.0",
        help="the fake's own cap on concurrent instances (on v0.6.0 the priority policy's share "
        "of the node's capacity sets the count)",
    )
    policies: tuple[str, ...] = _spec(
        DEFAULT_POLICIES,
        metavar="LIST",
        parse=_policy_list,
        default=",".join(DEFAULT_POLICIES) + ", as upstream's images",
        help="scheduling policies, comma-separated, from priority, drf, gang; a list without gang "
        "never runs a task on v0.6.0 and is refused",
    )
    retry_limit: int = _spec(
        5,
        metavar="N",
        parse=positive_int,
        default="5",
        help="failed bindings of a session before it stops retrying (event 1002)",
    )
    default_resreq: tuple[int, int, int] | None = _spec(
        None,
        metavar="CPU,MEMORY,GPU",
        parse=_resreq,
        default="1,1G,0, as v0.6.0",
        help="the resources of a session that asks for none, e.g. 2,4G,0",
    )
    cache_max_memory: int | None = _spec(
        None,
        metavar="SIZE",
        parse=parse_size,
        default="none",
        help="object cache memory limit with LRU eviction, e.g. 512M or 2G",
    )

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
    def specs(cls) -> tuple[OptionSpec, ...]:
        """How each option is spelled as text, in the documented order."""
        found = []
        for f in dataclasses.fields(cls):
            spec = dict(f.metadata["spec"])
            if "choices" in spec:
                spec.setdefault("parse", _words(spec["choices"]))
            if spec.get("switch"):
                spec.setdefault("parse", _switch)
            found.append(OptionSpec(name=f.name, **spec))
        return tuple(found)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The options' names, in their documented order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def as_dict(self) -> dict[str, Any]:
        """The options by name."""
        return {name: getattr(self, name) for name in self.names()}
