"""lazy_names: a module's names imported on first access, once, from where the map says."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def lazy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    package = tmp_path / "ffx_lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from flamepy_runner._lazy import lazy_names\n"
        "__getattr__, __dir__ = lazy_names(\n"
        "    __name__, {'Thing': '._heavy', 'answer': '._heavy:ANSWER'}, public=True\n"
        ")\n"
    )
    (package / "_heavy.py").write_text("LOADS = []\nLOADS.append(1)\nclass Thing: pass\nANSWER = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ffx_lazy_pkg"
    for name in [m for m in sys.modules if m.startswith("ffx_lazy_pkg")]:
        del sys.modules[name]


def test_names_load_on_first_access_once(lazy_package: str) -> None:
    import ffx_lazy_pkg  # type: ignore[import-not-found]

    assert "ffx_lazy_pkg._heavy" not in sys.modules
    assert {"Thing", "answer"} <= set(dir(ffx_lazy_pkg))  # listed before they are loaded
    assert ffx_lazy_pkg.answer == 42  # another attribute name, by ":"
    thing = ffx_lazy_pkg.Thing
    assert thing.__module__ == "ffx_lazy_pkg"  # public: reprs show the package's path
    assert ffx_lazy_pkg.Thing is thing and sys.modules["ffx_lazy_pkg._heavy"].LOADS == [1]


def test_an_unknown_name_is_the_usual_attribute_error(lazy_package: str) -> None:
    import ffx_lazy_pkg

    with pytest.raises(AttributeError) as err:
        ffx_lazy_pkg.Other  # noqa: B018
    assert str(err.value) == "module 'ffx_lazy_pkg' has no attribute 'Other'"
    assert "ffx_lazy_pkg._heavy" not in sys.modules
