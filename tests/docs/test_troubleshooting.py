"""The Runner guide's troubleshooting table quotes messages the code really produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.py"))
# The code builds its messages from f-string pieces, split across source lines.
_JOINED = re.sub(r"""["']\s*\n\s*f?["']""", "", SOURCES)


def _messages() -> list[str]:
    section = (ROOT / "docs" / "runner.md").read_text().split("## Troubleshooting", 1)[1]
    return re.findall(r"^\| `(.+?)` \|", section, re.M)


def test_the_table_lists_the_messages() -> None:
    assert len(_messages()) == 9


@pytest.mark.parametrize("message", _messages())
def test_each_quoted_message_is_the_codes(message: str) -> None:
    # Every literal run between the <placeholders> is a piece of a message in the code (pieces
    # such as a hint may be built apart, so their order is not checked).
    pieces = [p.strip(" ;:,.") for p in re.split(r"<[^>]+>", message) if len(p.strip(" ;:,.")) > 2]
    missing = [p for p in pieces if p not in _JOINED]
    assert not missing, f"not in src/: {missing}"
