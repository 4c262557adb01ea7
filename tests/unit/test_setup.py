"""README.md and .ci/run agree: CI runs exactly the README's set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup)


def test_readme_opens_with_the_two_setup_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "flamepy-fake run -- " in main_job and "pip install -e '.[test,lint,docs]'" in main_job
    assert tests == ".venv/bin/python -m pytest -n 2"
    # "Near the top": the set-up section comes before any other section.
    assert (ROOT / "README.md").read_text().index("## Set up a fresh machine") < 1200


def test_ci_runs_exactly_the_readme_commands() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    main_job, tests = _readme_commands()
    assert main_job in ci_lines
    assert any(line == tests or line.startswith(tests + " || ") for line in ci_lines)
    assert ci_lines.index(main_job) < next(i for i, line in enumerate(ci_lines) if line.startswith(tests))


def test_ci_fails_on_test_failures_and_on_no_tests() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script
    assert '"$status" -eq 5' in script and "exit 1" in script
    assert 'exit "$status"' in script
