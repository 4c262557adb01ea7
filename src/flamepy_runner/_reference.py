"""Whether the executors can import a service that travels by reference, checked on the client.

cloudpickle sends a function or class of an importable module as a reference (module and
qualified name), and the executor imports that module again. From a module the package does not
provide (a test module outside the packaged directory, say) that import fails on the executor,
after retries, far from the call that caused it. :func:`check_importable` says so at
``service()`` instead, with the fixes.

A module counts as provided when it is ``__main__`` or registered to travel by value (then
nothing is imported), when the package's roots (the project directory and its ``src/``) hold it
under its name, or when it is part of the standard library or an installed distribution.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import cloudpickle

from ._exceptions import UsageError

__all__ = ["check_importable"]


def check_importable(obj: Any, project_dir: Path, label: str) -> None:
    """Raise unless the executors can import what ``obj`` is pickled by reference to.

    Args:
        obj: the execution object (a function, a class, or an instance of a class).
        project_dir: the directory the Runner packaged.
        label: how the error names the object (``function price``).

    Raises:
        UsageError: ``obj`` travels by reference to a module the package does not provide.
    """
    target = obj if inspect.isfunction(obj) or inspect.isclass(obj) else type(obj)
    module_name = getattr(target, "__module__", None)
    if not isinstance(module_name, str) or module_name == "__main__" or _by_value(module_name):
        return  # travels by value: nothing is imported on the executor
    module = sys.modules.get(module_name)
    if module is None or not _by_reference(target, module):
        return
    file = getattr(module, "__file__", None)
    if not file:
        return  # built in, or a namespace package: nothing of the project's
    path = Path(file).resolve()
    root = project_dir.resolve()
    if any(_holds(base, module_name, path) for base in (root, root / "src")):
        return
    if _installed(path, module_name):
        return
    raise UsageError(
        f"cannot serve {label}: it travels by reference to module '{module_name}' ({path}), which "
        f"the package of {root} does not provide, so the executors could not import it. Move it "
        f"into the project (importable as '{module_name}' from {root}), or make it travel by "
        f"value: cloudpickle.register_pickle_by_value(sys.modules['{module_name}'])"
    )


def _by_value(module_name: str) -> bool:
    """Registered (itself or a parent package) with ``cloudpickle.register_pickle_by_value``."""
    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module_name.split(".")
    return any(".".join(parts[:n]) in registered for n in range(1, len(parts) + 1))


def _by_reference(target: Any, module: Any) -> bool:
    """Whether cloudpickle finds ``target`` again by its module and qualified name (else it
    pickles it by value: nested functions, lambdas, classes defined in a function)."""
    found: Any = module
    for part in getattr(target, "__qualname__", "").split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is target


def _holds(base: Path, module_name: str, path: Path) -> bool:
    """Whether the package root ``base`` provides ``module_name``.

    The file the client imported need not be the packaged one (a module of the same name that
    an earlier test imported from another copy of the project stays in ``sys.modules``): the
    executor imports the package's file, so a file under the module's name is what counts.
    """
    expected = base.joinpath(*module_name.split("."))
    if path in (expected.with_suffix(".py"), expected / "__init__.py"):
        return True
    if expected.with_suffix(".py").is_file() or (expected / "__init__.py").is_file():
        return True
    parent = expected.parent
    return parent.is_dir() and any(  # extension modules: name.cpython-312-x86_64-linux-gnu.so
        entry.name.split(".")[0] == expected.name and entry.suffix in (".so", ".pyd")
        for entry in parent.iterdir()
    )


def _installed(path: Path, module_name: str) -> bool:
    """Part of the standard library, or of a distribution installed in this environment."""
    if module_name.split(".")[0] in sys.stdlib_module_names:
        return True
    if any(path.is_relative_to(directory) for directory in _library_dirs()):
        return True
    return module_name.split(".")[0] in _distribution_modules()


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    return tuple(Path(os.path.realpath(paths[n])) for n in names if n in paths)


@functools.lru_cache(maxsize=1)
def _distribution_modules() -> frozenset[str]:
    """Top-level modules of the installed distributions (editable installs included)."""
    return frozenset(importlib.metadata.packages_distributions())
