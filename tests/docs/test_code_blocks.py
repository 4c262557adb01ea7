"""Every Python code block of the README and the docs runs, against the fake.

A block runs as a program under ``flamepy-fake run`` (an embedded fake cluster, as a reader would
try it), unless the HTML comment on the line before its fence says otherwise:

* ``<!-- run: with a cluster -->``: a fragment that goes on from a running cluster. It gets
  :data:`CLUSTER_PRELUDE`'s names: ``cluster`` (a started ``FakeCluster``), and the
  ``session_id`` and ``executor_id`` of one Runner call on it (the Runner stays open: closing
  it would unregister its application, and its sessions with it).
* ``<!-- run: pytest -->``: a test module, run by pytest in a project of its own; every test in
  it must pass.
* ``<!-- run: pytest in DIR -->``: the same, added to the tests of a copy of the repository's DIR.

Blocks whose fence is not ``python`` (signatures, output, shell) are not run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
FLAMEPY_FAKE = Path(sys.executable).parent / "flamepy-fake"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

CLUSTER_PRELUDE = """\
from flamepy_fake import FakeCluster
from flamepy_runner import Runner

def _square(x):
    return x * x

cluster = FakeCluster().start()
_runner = Runner("prelude", config=cluster.config)
assert _runner.service(_square)(7).get() == 49
session_id = cluster.sessions()[-1].id
executor_id = cluster.executors_of(session_id)[0]
"""
# Closed by the script itself: at interpreter exit (atexit) the fake's thread pools refuse work.
CLUSTER_EPILOGUE = """\
finally:
    _runner.close()
    cluster.stop()
"""

_BLOCK = re.compile(r"^(?:<!-- run: (?P<how>[^>]+?) -->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S)
_SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s(?: \([\d:]+\))?\s*=*$")


class Block(NamedTuple):
    where: str  # page:line of the fence
    how: str
    code: str


def blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            fence = match.start("code") - len("```python\n")
            line = text.count("\n", 0, fence) + 1
            found.append(Block(f"{page.relative_to(ROOT)}:{line}", match["how"] or "program", match["code"]))
    return found


BLOCKS = blocks()


def test_the_collector_finds_the_blocks_and_knows_each_context() -> None:
    assert len(BLOCKS) >= 9
    hows = {b.how for b in BLOCKS}
    assert hows <= {"program", "with a cluster", "pytest", "pytest in examples/shop"}, hows
    assert {b.where.split(":")[0] for b in BLOCKS} >= {
        "README.md",
        "docs/getting-started.md",
        "docs/testing.md",
    }


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLAME_", "PYTEST_"))}
    env["HOME"] = str(tmp_path)  # never a developer's ~/.flame/flame.yaml
    return env


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own process group; on timeout the whole group is killed (a pipe held
    by an instance process would keep a plain ``subprocess.run`` waiting)."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += "\n[test] the block did not end within 240 s and was killed"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _passed_all(proc: subprocess.CompletedProcess[str], code: str) -> None:
    tests = len(re.findall(r"^def test_", code, re.M))
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    match = _SUMMARY.match(last)
    assert match is not None and proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    counts = {name: int(n) for n, name in (part.split(" ") for part in match["counts"].split(", "))}
    assert counts == {"passed": tests}, proc.stdout[-4000:]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_the_code_block_runs(block: Block, tmp_path: Path) -> None:
    project = tmp_path / "project"
    if block.how.startswith("pytest in "):
        shutil.copytree(ROOT / block.how.removeprefix("pytest in "), project)
        target = project / "tests" / "test_doc_block.py"
    else:
        project.mkdir()
        (project / "pyproject.toml").write_text('[project]\nname = "doc-block"\nversion = "0"\n')
        target = project / ("test_doc_block.py" if block.how == "pytest" else "doc_block.py")
    if block.how.startswith("pytest"):
        target.write_text(block.code)
        proc = _run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(target.relative_to(project)),
            ],
            project,
            _env(tmp_path),
        )
        _passed_all(proc, block.code)
        return
    if block.how == "with a cluster":
        target.write_text(CLUSTER_PRELUDE + "try:\n" + textwrap.indent(block.code, "    ") + CLUSTER_EPILOGUE)
        argv = [sys.executable, target.name]
    else:
        target.write_text(block.code)
        argv = [str(FLAMEPY_FAKE), "run", "--", sys.executable, target.name]
    proc = _run(argv, project, _env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
