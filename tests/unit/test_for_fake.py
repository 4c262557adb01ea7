"""flamepy_fake reaches into flamepy_runner through one seam: ``flamepy_runner._for_fake``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import flamepy_runner
from flamepy_runner import _cache_wire, _for_fake, _lazy, _proto, _worker

FAKE_SOURCES = Path(__file__).resolve().parents[2] / "src" / "flamepy_fake"


def _runner_imports() -> list[tuple[str, str, str]]:
    """``(file, module, name)`` of every import of flamepy_runner in flamepy_fake's sources."""
    found = []
    for path in sorted(FAKE_SOURCES.rglob("*.py")):
        where = str(path.relative_to(FAKE_SOURCES))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] == "flamepy_runner"
            ):
                found += [(where, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(where, a.name, "") for a in node.names if a.name.split(".")[0] == "flamepy_runner"]
    return found


def test_the_fake_imports_only_the_public_api_and_the_seam() -> None:
    imports = _runner_imports()
    assert len(imports) > 20  # the scan sees the fake's imports at all
    outside = [(f, m, n) for f, m, n in imports if m not in ("flamepy_runner", "flamepy_runner._for_fake")]
    assert outside == []
    public = {n for _, m, n in imports if m == "flamepy_runner"}
    assert public - set(flamepy_runner.__all__) - {"__version__"} == set()
    seam = {n for _, m, n in imports if m == "flamepy_runner._for_fake"}
    assert seam == set(_for_fake.__all__)  # every name of the seam is used, and nothing else


def test_the_seam_is_small_and_named() -> None:
    assert _for_fake.__all__ == [
        "SIZE_HINT_PREFIX",
        "InstanceService",
        "InstanceServicer",
        "RunnerWorker",
        "data_chunks",
        "lazy_names",
        "pb",
        "rpc",
        "serve_worker",
    ]
    assert set(_for_fake.__all__) <= set(dir(_for_fake))  # listed before it is loaded


def test_each_name_is_the_object_it_stands_for() -> None:
    assert (_for_fake.pb, _for_fake.rpc) == (_proto.pb, _proto.rpc)
    assert (_for_fake.SIZE_HINT_PREFIX, _for_fake.data_chunks) == (
        _cache_wire.SIZE_HINT_PREFIX,
        _cache_wire.data_chunks,
    )
    assert _for_fake.InstanceService is _worker.InstanceService
    assert _for_fake.InstanceServicer is _worker.InstanceServicer
    assert _for_fake.RunnerWorker is _worker.RunnerWorker
    assert _for_fake.serve_worker is _worker.serve
    assert _for_fake.lazy_names is _lazy.lazy_names


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError) as err:
        _for_fake.CacheClient  # noqa: B018 - public: the fake imports it from flamepy_runner
    assert str(err.value) == "module 'flamepy_runner._for_fake' has no attribute 'CacheClient'"


def test_the_seam_loads_what_is_asked_for_only() -> None:
    heavy = "('pyarrow', 'flamepy_runner._cache_wire', 'flamepy_runner._worker')"
    script = (
        "import sys\n"
        "from flamepy_runner._for_fake import pb\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
        "from flamepy_runner._for_fake import data_chunks\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.splitlines() == ["[]", "['flamepy_runner._cache_wire', 'pyarrow']"]
