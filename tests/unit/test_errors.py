"""The fake's exceptions: one module, one root, the tree in its docstring kept true."""

from __future__ import annotations

import re

import flamepy_fake
from flamepy_fake import _errors


def test_every_error_has_the_one_root_and_its_documented_parents() -> None:
    classes = {name: getattr(_errors, name) for name in _errors.__all__}
    assert all(issubclass(cls, _errors.FakeError) for cls in classes.values())
    assert issubclass(_errors.ClusterStartError, RuntimeError)
    assert issubclass(_errors.FaultError, ValueError)
    assert _errors.ResultError.__mro__[1] is _errors.StateError


def test_the_docstring_tree_names_every_error_and_only_them() -> None:
    doc = _errors.__doc__ or ""
    drawn = re.findall(r"^\s*(?:[│├└─\s]*)([A-Z][A-Za-z]+)\s{2,}", doc, re.M)
    assert sorted(drawn) == sorted(_errors.__all__)


def test_the_public_errors_are_the_same_classes() -> None:
    assert flamepy_fake.ClusterStartError is _errors.ClusterStartError
    assert flamepy_fake.FaultError is _errors.FaultError


def test_refusals_keep_their_code_and_text() -> None:
    state = _errors.StateError("NOT_FOUND", "Session <s> not found")
    assert (str(state), state.code, state.message) == (
        "NOT_FOUND: Session <s> not found",
        "NOT_FOUND",
        "Session <s> not found",
    )
    store = _errors.StoreError("INVALID_ARGUMENT", "bad key")
    assert (str(store), store.code, store.message) == ("bad key", "INVALID_ARGUMENT", "bad key")
