"""``check_importable``: a service that travels by reference must come from a module the package
or an installed distribution provides, checked on the client at ``service()``."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import cloudpickle
import pytest

from flamepy_runner import UsageError
from flamepy_runner._reference import check_importable

SOURCE = """\
def price(x):
    return x


class Pricer:
    def quote(self):
        return 1


def make_nested():
    def nested():
        return 2
    return nested


square = lambda x: x * x
"""


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path, str], ModuleType]]:
    """``load(directory, relative_file)``: import a file as a module the way pytest imports a
    test module (its directory on ``sys.path``); the modules are forgotten at teardown."""
    names: list[str] = []

    def _load(directory: Path, relative: str) -> ModuleType:
        file = directory / relative
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(SOURCE)
        monkeypatch.syspath_prepend(str(file.parent))
        name = file.stem
        names.append(name)
        return importlib.import_module(name)

    yield _load
    for name in names:
        sys.modules.pop(name, None)


def unique(stem: str) -> str:
    return f"{stem}_{uuid.uuid4().hex[:8]}"


def test_a_module_outside_the_project_is_refused_with_the_fixes(
    tmp_path: Path, load: Callable[[Path, str], ModuleType]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    name = unique("test_outside")
    module = load(tmp_path / "elsewhere", f"{name}.py")
    file = (tmp_path / "elsewhere" / f"{name}.py").resolve()
    expected = (
        "cannot serve {label}: it travels by reference to module '{name}' ({file}), which the "
        "package of {root} does not provide, so the executors could not import it. Move it into "
        "the project (importable as '{name}' from {root}), or make it travel by value: "
        "cloudpickle.register_pickle_by_value(sys.modules['{name}'])"
    )
    cases = [
        (module.price, "function price"),
        (module.Pricer, "class Pricer"),
        (module.Pricer(), "instance Pricer"),  # an instance travels with its class by reference
    ]
    for obj, label in cases:
        with pytest.raises(UsageError) as err:
            check_importable(obj, project, label)
        assert str(err.value) == expected.format(label=label, name=name, file=file, root=project.resolve())


def test_a_test_module_inside_the_project_but_not_importable_from_its_root_is_refused(
    tmp_path: Path, load: Callable[[Path, str], ModuleType]
) -> None:
    # pytest imports tests/test_x.py as 'test_x' with tests/ on sys.path: the package holds the
    # file, but the executor, importing from the package root, finds no module 'test_x'.
    name = unique("test_inside")
    module = load(tmp_path, f"tests/{name}.py")
    with pytest.raises(UsageError) as err:
        check_importable(module.price, tmp_path, "function price")
    assert f"travels by reference to module '{name}' ({(tmp_path / 'tests' / name).resolve()}.py)" in str(
        err.value
    )


@pytest.mark.parametrize(
    "where", ["{name}.py", "{name}/__init__.py", "src/{name}.py", "src/{name}/__init__.py"]
)
def test_modules_the_package_provides_pass(
    tmp_path: Path, load: Callable[[Path, str], ModuleType], where: str
) -> None:
    name = unique("tasks")
    relative = where.format(name=name)
    file = tmp_path / relative
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(SOURCE)
    sys.path.insert(0, str(tmp_path / "src" if relative.startswith("src/") else tmp_path))
    try:
        module = importlib.import_module(name)
        for obj in (module.price, module.Pricer, module.Pricer()):
            check_importable(obj, tmp_path, "it")
    finally:
        sys.path.pop(0)
        sys.modules.pop(name, None)


def test_a_module_of_the_same_name_imported_from_another_copy_of_the_project_passes(
    tmp_path: Path, load: Callable[[Path, str], ModuleType]
) -> None:
    # sys.modules keeps the first copy; the executor imports the packaged one, which exists.
    name = unique("tasks")
    module = load(tmp_path / "first", f"{name}.py")
    second = tmp_path / "second"
    second.mkdir()
    with pytest.raises(UsageError):
        check_importable(module.price, second, "function price")
    (second / f"{name}.py").write_text(SOURCE)
    check_importable(module.price, second, "function price")


def test_objects_that_travel_by_value_or_come_from_installed_code_pass(
    tmp_path: Path, load: Callable[[Path, str], ModuleType]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    module = load(tmp_path / "elsewhere", f"{unique('test_outside')}.py")
    by_value = [module.make_nested(), module.square]  # not found again by qualified name
    installed = [json.dumps, json.JSONDecoder, json.JSONDecoder(), len, pytest.raises, cloudpickle.dumps]
    for obj in [*by_value, *installed]:
        check_importable(obj, project, "it")

    cloudpickle.register_pickle_by_value(module)
    try:
        check_importable(module.price, project, "function price")
        check_importable(module.Pricer(), project, "instance Pricer")
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    with pytest.raises(UsageError):
        check_importable(module.price, project, "function price")


def test_main_travels_by_value(tmp_path: Path) -> None:
    def price(x: int) -> int:
        return x

    price.__module__ = "__main__"
    price.__qualname__ = "price"
    check_importable(price, tmp_path, "function price")
