"""Runner packaging benchmark: ``build_package`` next to ``tar czf`` of the same tree.

Usage::

    python benchmarks/bench_packaging.py [--quick]

Generates a realistic project (default 50 MiB in 5,000 files; ``--quick``: 10 MiB in 1,000):
mostly source and text files in nested packages, compressible as code is, plus some binary
files (random bytes, incompressible) such as a project's images or model weights. Then times,
alternating in one run, ``flamepy_runner``'s packaging, GNU ``tar czf`` (gzip level 6, the
issue's yardstick) and, for reference, Python's ``tarfile`` in ``w:gz`` mode (what a naive
packager gets: level 9). Prints one table of medians and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MIB = 1024 * 1024
_VOCABULARY = """
def class return import from self value result data config client session task object
if else elif for while in not and or None True False try except finally with as yield
async await lambda assert raise len range list dict set tuple str int float bytes
print logger info debug warning error name path key version endpoint timeout request
response
"""
_WORDS = _VOCABULARY.split()


def _line_pool(rng: random.Random, count: int) -> list[str]:
    pool = []
    for _ in range(count):
        indent = "    " * rng.randint(0, 3)
        words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 10))]
        if rng.random() < 0.3:
            words.append(f"{rng.randint(0, 10**6)}")
        if rng.random() < 0.2:
            words.append(f'"{rng.choice(_WORDS)}_{rng.randint(0, 999)}"')
        pool.append(indent + " ".join(words))
    return pool


def make_tree(root: Path, total: int, files: int, seed: int = 7) -> tuple[int, int]:
    """Write ``files`` files totalling about ``total`` bytes under ``root``: 80 % text, 20 % binary."""
    rng = random.Random(seed)
    pool = _line_pool(rng, 20_000)
    binary_files = max(1, files // 50)
    text_files = files - binary_files
    text_budget, binary_budget = total * 4 // 5, total // 5
    dirs = [root / f"pkg{i}" / f"sub{j}" for i in range(20) for j in range(5)]
    for d in dirs:
        d.mkdir(parents=True)
        (d / "__init__.py").write_text("")
    written = count = 0
    text_avg = text_budget // text_files
    for i in range(text_files - len(dirs)):
        size = int(rng.expovariate(1 / text_avg)) + 64
        lines: list[str] = []
        length = 0
        while length < size:
            line = rng.choice(pool)
            lines.append(line)
            length += len(line) + 1
        suffix = rng.choice((".py", ".py", ".py", ".md", ".txt", ".json", ".yaml"))
        path = dirs[i % len(dirs)] / f"module_{i}{suffix}"
        data = "\n".join(lines).encode()
        path.write_bytes(data)
        written += len(data)
        count += 1
    count += len(dirs)
    data_dir = root / "assets"
    data_dir.mkdir()
    for i in range(binary_files):
        data = rng.randbytes(binary_budget // binary_files)
        (data_dir / f"blob_{i}.bin").write_bytes(data)
        written += len(data)
        count += 1
    return written, count


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10 MiB / 1,000-file tree, 3 runs")
    args = parser.parse_args()
    total, files, runs = (10 * MIB, 1000, 3) if args.quick else (50 * MIB, 5000, 7)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from flamepy_runner import DEFAULT_EXCLUDES
    from flamepy_runner._packaging import build_package

    logging.getLogger("flamepy_runner").setLevel(logging.WARNING)
    if shutil.which("tar") is None:
        sys.exit("tar is not installed")
    work = Path(tempfile.mkdtemp(prefix="bench-packaging-"))
    try:
        tree = work / "project"
        tree.mkdir()
        written, count = make_tree(tree, total, files)
        out = work / "out"
        out.mkdir()
        tar_out, py_out = out / "tar.tar.gz", out / "tarfile.tar.gz"

        def ours() -> None:
            build_package("bench", tree, excludes=DEFAULT_EXCLUDES)

        def tar_czf() -> None:
            # gzip's default level is 6; dist/ (where build_package writes) is left out as ours does.
            cmd = ["tar", "czf", str(tar_out), "--exclude=./dist", "-C", str(tree), "."]
            subprocess.run(cmd, check=True)

        def tarfile_gz() -> None:
            with tarfile.open(py_out, "w:gz") as tar:
                for child in sorted(tree.iterdir()):
                    if child.name != "dist":
                        tar.add(child, arcname=child.name)

        contenders: dict[str, Callable[[], None]] = {
            "flamepy_runner build_package": ours,
            "tar czf": tar_czf,
            "tarfile w:gz (level 9)": tarfile_gz,
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():  # warm the page cache and imports
            fn()
        for _ in range(runs):
            for name, fn in contenders.items():
                times[name].append(timed(fn))
        med = {name: statistics.median(values) for name, values in times.items()}
        ours_size = (tree / "dist" / "bench.tar.gz").stat().st_size
        rows = [
            ("tree", f"{count} files, {written / MIB:.1f} MiB (80 % text/code, 20 % binary)"),
            ("runs (alternating)", str(runs)),
        ]
        for name in contenders:
            rows.append((f"{name} (median)", f"{med[name] * 1000:.0f} ms"))
        rows += [
            (
                "  ratio build_package / tar czf",
                f"{med['flamepy_runner build_package'] / med['tar czf']:.2f}x",
            ),
            ("  ratio tarfile w:gz / tar czf", f"{med['tarfile w:gz (level 9)'] / med['tar czf']:.2f}x"),
            (
                "archive size: build_package / tar czf",
                f"{ours_size / MIB:.2f} / {tar_out.stat().st_size / MIB:.2f} MiB",
            ),
        ]
        width = max(len(label) for label, _ in rows)
        print(f"Runner packaging ({os.cpu_count()} CPUs)")
        for label, value in rows:
            print(f"  {label:<{width}}  {value}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
