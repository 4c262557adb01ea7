"""Public surface: ``__all__`` is exactly the public names of each package, and each is documented."""

from __future__ import annotations
import __future__

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = ("flamepy_runner", "flamepy_fake")


def _public_names(module: types.ModuleType) -> set[str]:
    # dir() rather than vars(): it also lists names a module loads lazily (module __dir__).
    return {
        name
        for name in dir(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), types.ModuleType)  # imported submodules
        and not isinstance(getattr(module, name), __future__._Feature)  # `from __future__ import annotations`
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_exactly_the_public_names(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:  # resolve lazily loaded names first
        getattr(module, name)
    assert len(module.__all__) == len(set(module.__all__)), "duplicates in __all__"
    assert set(module.__all__) == _public_names(module)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_export_resolves_and_is_documented(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        value = getattr(module, name)
        if isinstance(value, (type, types.FunctionType)):
            assert value.__doc__, f"{package}.{name} has no docstring"


def test_fake_exports_show_the_public_module() -> None:
    import flamepy_fake

    for name in flamepy_fake.__all__:
        assert getattr(flamepy_fake, name).__module__ == "flamepy_fake", name


def test_fake_cluster_is_importable_as_documented() -> None:
    from flamepy_fake import ClusterStartError, FakeCluster

    assert issubclass(ClusterStartError, RuntimeError)
    assert FakeCluster.__init__.__kwdefaults__ is not None  # keyword-only options
    assert FakeCluster.__init__.__kwdefaults__["host"] == "127.0.0.1"


def test_importing_flamepy_fake_stays_cheap() -> None:
    # grpc and pyarrow load when a cluster starts, not on import (the speed target is in
    # benchmarks/bench_cluster.py; this pins the reason it holds).
    code = (
        "import sys, flamepy_fake, flamepy_fake.plugin; "
        "print(sorted(m for m in ('grpc', 'pyarrow', 'google.protobuf') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


def test_package_error_is_exported_in_the_flame_error_tree() -> None:
    import flamepy_runner

    assert "PackageError" in flamepy_runner.__all__
    assert issubclass(flamepy_runner.PackageError, flamepy_runner.FlameError)
    assert not issubclass(flamepy_runner.PackageError, flamepy_runner.ClusterError)
