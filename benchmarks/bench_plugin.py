"""pytest plugin speed: its import, the first cluster of a run, and a Runner suite's per-test cost.

Run: ``python benchmarks/bench_plugin.py [--quick]``. Prints one table with ratios; asserts
nothing (machines are noisy). Takes a few minutes (``--quick``: well under one).

* ``import flamepy_fake.plugin`` in a fresh interpreter (what every pytest run pays), median, next
  to ``import pytest`` alone;
* the first cluster of a run: a one-test suite whose test takes ``flame_cluster``, wall time of
  the whole ``pytest`` run, median, next to the same suite whose test takes no fixture (the
  difference is the cluster's first start, grpc and pyarrow imports included);
* a sample suite of N tests (200; ``--quick``: 20), each calling ``flame_runner()`` and one
  function service, run serially and with ``-n 2``, next to the same N tests calling the function
  locally: per-test overhead = (suite - plain suite) / N. Also with ``--flame-scope session``
  (one shared cluster, cleaned between tests) and with ``--flame-executors thread``.

Python's bytecode cache is on, as on a user's machine (in a private ``PYTHONPYCACHEPREFIX``,
filled before measuring): with ``PYTHONDONTWRITEBYTECODE=1`` (set on this project's shared
machines) every process compiles the packages' sources again, which adds ~20 ms to an import
and ~0.5 s to a first cluster. ``--no-bytecode-cache`` measures with the environment as it is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_MATHLIB = "def square(x):\n    return x * x\n"
_PYPROJECT = """\
[project]
name = "bench-sample"
version = "0"

[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"
"""


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


_ENV: dict[str, str] = dict(os.environ)  # the children's environment (main() sets the cache)


def _python(code: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, "-c", code], check=True, env=_ENV)


def _project(root: Path, tests: int, with_cluster: bool) -> Path:
    """A sample user project: ``mathlib.square`` and ``tests`` tests of it."""
    project = root / ("cluster" if with_cluster else "plain") / str(tests)
    project.mkdir(parents=True)
    (project / "pyproject.toml").write_text(_PYPROJECT)
    (project / "mathlib.py").write_text(_MATHLIB)
    if with_cluster:
        body = (
            "import pytest\nfrom mathlib import square\n\n"
            f"@pytest.mark.parametrize('i', range({tests}))\n"
            "def test_square(flame_runner, i):\n"
            "    runner = flame_runner()\n"
            "    assert runner.service(square)(i).get() == i * i\n"
        )
    else:
        body = (
            "import pytest\nfrom mathlib import square\n\n"
            f"@pytest.mark.parametrize('i', range({tests}))\n"
            "def test_square(i):\n"
            "    assert square(i) == i * i\n"
        )
    (project / "test_sample.py").write_text(body)
    return project


def _pytest(project: Path, *args: str) -> Callable[[], object]:
    env = {k: v for k, v in _ENV.items() if not k.startswith(("FLAME_", "PYTEST_"))}

    def run() -> None:
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *args],
            cwd=project,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    return run


def bench_import(runs: int) -> tuple[float, float]:
    ours = _median_ms(_python("import pytest, flamepy_fake.plugin"), runs)
    bare = _median_ms(_python("import pytest"), runs)
    return ours, bare


def bench_first_cluster(root: Path, runs: int) -> tuple[float, float]:
    with_cluster = root / "first-cluster"
    with_cluster.mkdir()
    (with_cluster / "test_one.py").write_text("def test_one(flame_cluster):\n    pass\n")
    plain = root / "first-plain"
    plain.mkdir()
    (plain / "test_one.py").write_text("def test_one():\n    pass\n")
    return _median_ms(_pytest(with_cluster), runs), _median_ms(_pytest(plain), runs)


def bench_suite(root: Path, label: str, tests: int, *args: str) -> tuple[float, float]:
    """Wall seconds of the cluster suite and of the plain suite (one run each)."""
    cluster = _median_ms(_pytest(_project(root / label, tests, True), *args), 1, 0)
    plain = _median_ms(_pytest(_project(root / label, tests, False), *args), 1, 0)
    return cluster / 1000, plain / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs and tests (a smoke test)")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as the environment has it",
    )
    args = parser.parse_args()
    import_runs, first_runs, tests = (3, 2, 20) if args.quick else (10, 5, 200)

    with tempfile.TemporaryDirectory(prefix="bench-plugin-") as tmp:
        root = Path(tmp)
        if not args.no_bytecode_cache:
            _ENV.pop("PYTHONDONTWRITEBYTECODE", None)
            _ENV["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
            warm = "import pytest, xdist, flamepy_fake.plugin, flamepy_fake._cluster, flamepy_runner._worker"
            _python(warm)()
        imp, bare = bench_import(import_runs)
        first, first_plain = bench_first_cluster(root, first_runs)
        suites = {
            "serial": bench_suite(root, "serial", tests),
            "-n 2": bench_suite(root, "xdist", tests, "-n", "2"),
            "serial, --flame-scope session": bench_suite(root, "shared", tests, "--flame-scope=session"),
            "serial, --flame-executors thread": bench_suite(
                root, "thread", tests, "--flame-executors=thread"
            ),
        }

    rows = [
        ("import pytest + flamepy_fake.plugin", imp, f"import pytest: {bare:.0f} ms", imp - bare, "ms added"),
        (
            "pytest run, 1 test with flame_cluster",
            first,
            f"no fixture: {first_plain:.0f} ms",
            first - first_plain,
            "ms added",
        ),
    ]
    cache = "off (as the environment has it)" if args.no_bytecode_cache else "on, warmed"
    print(f"bytecode cache: {cache}")
    print(f"{'benchmark':44} {'median ms':>10}  {'compared with':26} {'ratio':>10}")
    for name, ms, against, ratio, unit in rows:
        print(f"{name:44} {ms:10.1f}  {against:26} {ratio:9.2f} {unit}")
    print()
    print(
        f"{tests} tests, each flame_runner() + one call   {'suite s':>8} {'plain s':>8} {'per test ms':>12}"
    )
    for label, (cluster, plain) in suites.items():
        per_test = (cluster - plain) / tests * 1000
        print(f"{label:40} {cluster:8.1f} {plain:8.1f} {per_test:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
