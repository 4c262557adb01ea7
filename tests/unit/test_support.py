"""The shared test helpers (``tests/support.py``) do what the tests rely on."""

from __future__ import annotations

import pytest
from support import eventually


def test_eventually_returns_the_first_true_value() -> None:
    values = iter([0, None, "", "found", "later"])
    assert eventually(lambda: next(values), "a value", interval=0) == "found"


def test_eventually_names_what_it_waited_for_when_the_bound_passes() -> None:
    calls = []
    with pytest.raises(AssertionError) as err:
        eventually(lambda: calls.append(1), "the moon", timeout=0.05, interval=0.01)
    assert str(err.value) == "timed out after 0.05 s waiting for the moon"
    assert len(calls) >= 2  # it kept asking until the bound
