"""Names of a module imported on first access (PEP 562): one mechanism for both packages.

``import flamepy_fake`` runs in every pytest process (the plugin) and ``import flamepy_runner``
in every instance; what pulls in pyarrow or grpc is loaded only when a name that needs it is
first used. :func:`lazy_names` makes the module's ``__getattr__`` and ``__dir__``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    module: str, where: Mapping[str, str], *, public: bool = False
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``module``, loading each name of ``where`` once.

    Args:
        module: the module's ``__name__``.
        where: each name's home, a module relative to ``module``'s package (``"._cache"``),
            with ``:attribute`` where the name differs there (``"._worker:serve"``).
        public: give each class the module's name as ``__module__``, so that tracebacks and
            reprs show the public path (``flamepy_fake.FakeCluster``).
    """
    namespace = sys.modules[module].__dict__
    package = namespace["__package__"]

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        home, _, attribute = where[name].partition(":")
        value = getattr(importlib.import_module(home, package), attribute or name)
        if public and isinstance(value, type):
            value.__module__ = module
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__
