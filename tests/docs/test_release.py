"""Release hygiene: the sdist and wheel build, pass twine check, and the wheel works installed alone."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("build") is None
    or shutil.which("twine", path=str(Path(sys.executable).parent)) is None,
    reason="build and twine are the [docs] extra: not installed",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No --sdist/--wheel: the wheel is built from the unpacked sdist, in a temporary directory
    # (so the sdist must be complete, and nothing is written to build/ in the checkout that
    # other tests package).
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _wheel(dist: Path) -> Path:
    (wheel,) = dist.glob("flamepy_runner-*-py3-none-any.whl")
    return wheel


def test_twine_check_passes(dist: Path) -> None:
    twine = Path(sys.executable).parent / "twine"
    files = sorted(str(p) for p in dist.iterdir())
    assert len(files) == 2, files  # one sdist, one wheel
    proc = subprocess.run(
        [str(twine), "check", "--strict", *files], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_holds_the_packages_their_bindings_and_entry_points_only(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = wheel.read(info).decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"flamepy_runner", "flamepy_fake"}
    assert {"flamepy_runner/py.typed", "flamepy_fake/py.typed"} <= set(names)
    assert "flamepy_runner/_proto/_flame_v1.py" in names  # the flame.v1 bindings
    assert "[console_scripts]\nflamepy-fake = " in entry_points
    assert "[pytest11]\nflamepy_fake = flamepy_fake.plugin" in entry_points
    assert not [n for n in names if "/tests/" in n or "benchmarks" in n or n.endswith(".pyc")]


def test_the_sdist_carries_the_wire_contract(dist: Path) -> None:
    (sdist,) = dist.glob("flamepy_runner-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name}
    assert {f"protos/{p}.proto" for p in ("backend", "frontend", "shim", "types")} <= names
    assert {"README.md", "CHANGELOG.md", "pyproject.toml"} <= names


def test_the_installed_wheel_runs_the_quick_start_on_its_fake(dist: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(_wheel(dist))],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    project = tmp_path / "project"
    project.mkdir()
    (project / "my_app.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "PYTHONPATH"))}
    env["HOME"] = str(tmp_path)  # no developer's ~/.flame/flame.yaml
    proc = subprocess.run(
        [str(venv / "bin" / "flamepy-fake"), "run", "--", str(python), "my_app.py"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (proc.returncode, proc.stdout) == (0, "[0, 1, 4, 9]\n14\n81\n"), proc.stderr[-3000:]
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import flamepy_runner, flamepy_fake; print(flamepy_runner.__file__, flamepy_fake.__version__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the wheel's copy, not the checkout's
