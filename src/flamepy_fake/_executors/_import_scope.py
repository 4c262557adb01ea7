"""What an instance process may import: the executor's environment, not the test's.

A Flame executor has the standard library, its flmrun program's distributions (flamepy 0.6.0
and its requirements), the application's package and the dependencies the package declares. An
instance of the fake is a process of the test's own interpreter, which can see everything the
test's environment has installed. The :class:`ScopeFinder` takes the place of the finders on
``sys.meta_path``, asks them in turn, and hides the rest: a top-level module is importable when
it is built in or in the standard library, when its name belongs to a visible distribution
(:mod:`._visible` computes the set on the cluster side), or when it is found inside one of the
package's directories (its release, its ``deps``) or the instance's working directory.
Anything else is not found, so it fails exactly as on Flame (``ModuleNotFoundError: No module
named 'x'``, the same traceback), and the instance's stderr (shown in failure reports) says
which declaration is missing.

This module is imported by the zygote and by instance processes before anything else, so it uses
the standard library only. The scope travels in the instance's environment (:data:`ENV_VAR`,
JSON), which the instance removes before its program starts.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import json
import os
import runpy
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ENV_VAR",
    "ImportScope",
    "ScopeFinder",
    "activate",
    "guarded_argv",
    "hidden_text",
    "instance_scope",
    "main",
    "spawn_env",
    "with_program",
    "zygote_scope",
]

#: The variable that carries an instance's :class:`ImportScope` (removed before its program runs).
ENV_VAR = "FLAMEPY_FAKE_IMPORT_SCOPE"

# Names sys.modules has without being found on a path.
_ALWAYS = frozenset({"__main__", "__mp_main__", "builtins", "sys"})


@dataclasses.dataclass(frozen=True)
class ImportScope:
    """What one instance may import.

    Attributes:
        names: top-level module names of the visible distributions.
        roots: directories whose modules are visible whatever their names (the package's).
        app: the application, named in the hint of a hidden import.
        executor: what the executor has, in the words of the hint (e.g. "flamepy 0.6.0 and its
            requirements").
        program: the flmrun program (``builtin``, ``flamepy``; ``*``: both) whose
            distributions are visible too. Their names are resolved where it is cheapest: by
            the zygote while it starts (its children inherit them), else on first use
            (:func:`with_program`).
    """

    names: frozenset[str]
    roots: tuple[str, ...] = ()
    app: str = ""
    executor: str = ""
    program: str = ""

    def to_env(self) -> str:
        """The scope as :data:`ENV_VAR`'s value."""
        data = {"names": sorted(self.names), "roots": list(self.roots), "app": self.app}
        return json.dumps({**data, "executor": self.executor, "program": self.program})

    @classmethod
    def from_env(cls, text: str) -> ImportScope:
        """The scope :meth:`to_env` wrote.

        Raises:
            ValueError: the text is not such a scope.
        """
        try:
            data = json.loads(text)
            return cls(
                names=frozenset(str(n) for n in data["names"]),
                roots=tuple(str(r) for r in data["roots"]),
                app=str(data.get("app", "")),
                executor=str(data.get("executor", "")),
                program=str(data.get("program", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{ENV_VAR} is not an import scope: {exc}") from exc


# Top-level names of each flmrun program's distributions, resolved once per process (a forked
# instance inherits its zygote's).
_PROGRAM_NAMES: dict[str, frozenset[str]] = {}


def with_program(scope: ImportScope) -> ImportScope:
    """``scope`` with its program's names among its own (resolved now if this process has not)."""
    if not scope.program:
        return scope
    names = _PROGRAM_NAMES.get(scope.program)
    if names is None:
        from ._visible import program_names  # packaging and importlib.metadata: only when needed

        if scope.program == "*":  # the zygote: its children will ask for each program's
            for program in ("builtin", "flamepy"):
                _PROGRAM_NAMES.setdefault(program, program_names(program))
        names = _PROGRAM_NAMES[scope.program] = program_names(scope.program)
    return dataclasses.replace(scope, names=scope.names | names, program="")


def zygote_scope() -> ImportScope:
    """The zygote's scope: every program it preloads (both flmruns), no package. Cheap: the
    zygote resolves the names itself, while it starts."""
    from ._visible import program_text

    return ImportScope(names=frozenset(), executor=program_text("*"), program="*")


def instance_scope(flmrun: str, app: str, declared: Sequence[str], roots: Sequence[str]) -> ImportScope:
    """The scope of an instance of ``app`` (its program's names are added where it starts).

    Args:
        flmrun: ``builtin`` (our worker) or ``flamepy`` (stock runpy).
        app: the application's name (for the hint).
        declared: the package's declared dependencies (pip requirement strings).
        roots: the package's directories (release, ``deps``).
    """
    from ._visible import program_text, visible_names

    return ImportScope(
        names=visible_names(declared),
        roots=tuple(roots),
        app=app,
        executor=program_text(flmrun),
        program=flmrun,
    )


def hidden_text(module: str, distribution: str | None, scope: ImportScope) -> str:
    """The stderr line of an instance whose import of ``module`` was hidden."""
    app = f"application '{scope.app}'" if scope.app else "the application"
    if distribution:
        where = f"distribution '{distribution}', installed where the tests run"
        declare = distribution
    else:
        where = "found where the tests run, outside the package"
        declare = module
    executor = scope.executor or "its flmrun program's distributions"
    return (
        f"flamepy-fake: module '{module}' ({where}) is hidden from this instance: {app} does not "
        f"declare it, and a Flame executor has only the standard library, {executor}, the package "
        f"and the dependencies it declares. If the task needs it, declare it "
        f"(Runner(..., dependencies=['{declare}']) or [project] dependencies in the package's "
        f"pyproject.toml), or let instances see the test's whole environment with the cluster "
        f"option instance_imports='all'."
    )


class ScopeFinder(importlib.abc.MetaPathFinder):
    """The only finder on ``sys.meta_path``: it asks the finders it replaced (``inner``, in
    their order) and hides what they find outside the scope.

    A hidden module is simply not found, so the import machinery raises its own
    ``ModuleNotFoundError`` with CPython's text and a traceback without this finder's frame,
    exactly as on an executor that lacks the module.

    Args:
        scope: what is visible.
        inner: the finders to ask (``sys.meta_path`` as it was).
        quiet: hide without the stderr hint (the zygote's imports are not a task's).
    """

    def __init__(self, scope: ImportScope, inner: Sequence[Any], *, quiet: bool = False) -> None:
        self.inner = list(inner)
        self.quiet = quiet
        self.hidden: set[str] = set()  # names hidden so far
        self._distributions: dict[str, list[str]] | None = None
        self.scope = scope
        self._visible: dict[str, bool] = {}
        self._roots: tuple[str, ...] = ()
        self._cwd = ""
        self._site: tuple[str, ...] = ()
        self._stdlib: tuple[str, ...] = ()
        self.rescope(scope)

    def rescope(self, scope: ImportScope, *, quiet: bool | None = None) -> None:
        """Use ``scope`` from now on (a forked child narrows or widens its zygote's); what was
        hidden so far is forgotten (the child hints at its own hidden imports)."""
        self.scope = scope
        if quiet is not None:
            self.quiet = quiet
        self.hidden = set()
        self._visible = {}
        self._roots = tuple(_real(r) for r in scope.roots if r)
        self._cwd = _real(os.getcwd())
        self._site = tuple(_real(p) for p in _site_dirs())
        self._stdlib = tuple(_real(p) for p in _stdlib_dirs())

    # -- decisions ------------------------------------------------------------------------------

    def _by_name(self, name: str) -> bool | None:
        if name in self.scope.names or name in _ALWAYS:
            return True
        if name in sys.builtin_module_names or name in sys.stdlib_module_names:
            return True
        return self._visible.get(name)

    def _by_place(self, locations: Iterable[str]) -> bool:
        """Visible when every location is in the package, or in the working directory or the
        standard library but not in a site directory (a virtual environment may well live in
        the working directory); no location (built in, frozen): visible."""
        for place in (_real(p) for p in locations if p):
            if _under(place, self._roots):
                continue
            if _under(place, self._site) or not _under(place, (self._cwd, *self._stdlib)):
                return False
        return True

    def module_visible(self, name: str, module: Any) -> bool:
        """Whether an already imported top-level module is in the scope."""
        known = self._by_name(name)
        if known is not None:
            return known
        visible = self._by_place(_module_locations(module))
        self._visible[name] = visible
        return visible

    # -- the finder -----------------------------------------------------------------------------

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        """The spec the inner finders give, or None when it is outside the scope.

        Only top-level names are judged: a submodule follows its package, which was imported
        (or hidden) first.
        """
        spec = self._find_inner(fullname, path, target)
        if spec is None or path is not None or "." in fullname:
            return spec
        visible = self._by_name(fullname)
        if visible is None:
            visible = self._visible[fullname] = self._by_place(_spec_locations(spec))
        if visible:
            return spec
        self._hint(fullname)
        return None

    def _find_inner(self, fullname: str, path: Any, target: Any) -> Any:
        for finder in self.inner:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        """Forwarded to the inner finders (``importlib.invalidate_caches``)."""
        for finder in self.inner:
            invalidate = getattr(finder, "invalidate_caches", None)
            if invalidate is not None:
                invalidate()

    def find_distributions(self, *args: Any, **kwargs: Any) -> Iterable[Any]:
        """Forwarded to the inner finders (``importlib.metadata`` asks ``sys.meta_path``)."""
        for finder in self.inner:
            find = getattr(finder, "find_distributions", None)
            if find is not None:
                yield from find(*args, **kwargs)

    def _hint(self, name: str) -> None:
        if not self.quiet and name not in self.hidden:
            with _suppress_all():
                sys.stderr.write(hidden_text(name, self._distribution(name), self.scope) + "\n")
                sys.stderr.flush()
        self.hidden.add(name)

    def _distribution(self, name: str) -> str | None:
        if self._distributions is None:
            self._distributions = {}
            with _suppress_all():
                import importlib.metadata

                self._distributions = dict(importlib.metadata.packages_distributions())
        owners = self._distributions.get(name) or []
        return owners[0] if owners else None

    def hide_loaded(self) -> list[str]:
        """Remove out-of-scope modules (and their submodules) from ``sys.modules``; their names."""
        gone: list[str] = []
        tops: dict[str, bool] = {}
        for name in list(sys.modules):
            top = name.partition(".")[0]
            visible = tops.get(top)
            if visible is None:
                module = sys.modules.get(top, sys.modules.get(name))
                visible = tops[top] = self.module_visible(top, module)
            if not visible:
                sys.modules.pop(name, None)
                gone.append(name)
        return gone


class _suppress_all:
    """A hint or a lookup that fails must not turn a refused import into another error."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


@functools.lru_cache(maxsize=8192)
def _real(path: str) -> str:
    # Memoised: resolving every imported module's file (a system call per path component) was
    # most of a forked instance's scope set-up (~1.5 ms of hide_loaded); the zygote resolves
    # its modules once and every child inherits the answers. The paths resolved are installed
    # modules, the interpreter's directories, releases and working directories, none of which
    # is re-pointed while a process lives.
    return os.path.realpath(path)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _site_dirs() -> list[str]:
    dirs = list(_interpreter_site_dirs())
    # Directories named like a site directory anywhere on sys.path (other venvs, pip --user).
    dirs += [p for p in sys.path if os.path.basename(p.rstrip(os.sep)) in ("site-packages", "dist-packages")]
    return [d for d in dirs if d]


@functools.cache
def _interpreter_site_dirs() -> tuple[str, ...]:
    # Once per process (a forked child inherits it): the interpreter's own, fixed at start-up.
    dirs: list[str] = []
    try:
        import site

        dirs += site.getsitepackages()
        dirs.append(site.getusersitepackages())
    except Exception:  # some embedded interpreters lack parts of site
        pass
    paths = sysconfig.get_paths()
    dirs += [paths.get("purelib", ""), paths.get("platlib", "")]
    return tuple(dirs)


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(p for p in (paths.get("stdlib", ""), paths.get("platstdlib", "")) if p)


def _spec_locations(spec: Any) -> list[str]:
    if getattr(spec, "has_location", False) and spec.origin:
        return [str(spec.origin)]
    return [str(p) for p in (getattr(spec, "submodule_search_locations", None) or ())]


def _module_locations(module: Any) -> list[str]:
    spec = getattr(module, "__spec__", None)
    if spec is not None:
        found = _spec_locations(spec)
        if found:
            return found
    where = getattr(module, "__file__", None)
    if where:
        return [str(where)]
    return [str(p) for p in (getattr(module, "__path__", None) or ())]


def current() -> ScopeFinder | None:
    """The scope finder of this process, if one is installed."""
    for finder in sys.meta_path:
        if isinstance(finder, ScopeFinder):
            return finder
    return None


def activate(env: Mapping[str, str] | None = None, *, quiet: bool = False) -> ScopeFinder | None:
    """Apply the scope :data:`ENV_VAR` names in ``env`` (``os.environ`` by default) to this
    process and remove the variable; without one, restore the finders a scope replaced.

    Returns the finder in use (None: everything is visible). Out-of-scope modules already
    imported are removed from ``sys.modules``, so importing them again fails as for new ones.
    """
    source = os.environ if env is None else env
    text = source.get(ENV_VAR)
    os.environ.pop(ENV_VAR, None)
    finder = current()
    if text is None:
        if finder is not None:
            index = sys.meta_path.index(finder)
            sys.meta_path[index : index + 1] = finder.inner
        return None
    scope = with_program(ImportScope.from_env(text))
    if finder is None:
        finder = ScopeFinder(scope, sys.meta_path, quiet=quiet)
        sys.meta_path[:] = [finder]
    else:
        finder.rescope(scope, quiet=quiet)
    finder.hide_loaded()
    fresh_path_importer_cache()
    return finder


_RETIRED_FINDERS: list[dict[str, Any]] = []


def fresh_path_importer_cache() -> None:
    """Give ``sys.path_importer_cache`` a new, empty dict, keeping the old one alive.

    As ``clear()`` would, but without freeing the old finders: in a forked child they live in
    pages shared with the zygote, and freeing them (their directory listings) writes to every
    one of those pages, copying them (~1.3 ms of each instance's start). The import system
    and ``pkgutil`` read the attribute anew on every lookup.
    """
    _RETIRED_FINDERS.append(sys.path_importer_cache)
    sys.path_importer_cache = {}


def guarded_argv(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The argv that spawns ``python -m MODULE ...`` with ``env``'s scope applied first."""
    args = list(argv)
    if ENV_VAR not in env or len(args) < 3 or args[1] != "-m":
        return args
    return [args[0], "-m", __name__, *args[2:]]


def spawn_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a spawned instance: its scope with the program's names resolved here, once
    per process, rather than in every spawned child."""
    text = env.get(ENV_VAR)
    if text is None:
        return dict(env)
    return {**env, ENV_VAR: with_program(ImportScope.from_env(text)).to_env()}


def main(argv: Sequence[str]) -> None:
    """``python -m flamepy_fake._executors._import_scope MODULE ARGS...``: apply the scope, then
    run MODULE as ``python -m MODULE ARGS...`` would."""
    if not argv:
        raise SystemExit(f"usage: python -m {__name__} MODULE [ARGS...]")
    activate()
    module, *args = argv
    sys.argv = [module, *args]
    sys.path[0] = os.getcwd()  # as `python -m MODULE` has it
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
