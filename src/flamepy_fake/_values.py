"""Parsers of option values, shared by the ``flamepy-fake`` command line and the pytest plugin.

Kept apart from ``_cli`` so that the plugin, which pytest imports in every run, does not import
the command line (and, through it, the cluster).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["INSTANCE_IMPORTS", "parse_size", "positive_int"]

#: What flmrun instance processes can import (``FakeCluster(instance_imports=)``): what a
#: Flame executor has (``declared``), or everything the test's environment has (``all``).
INSTANCE_IMPORTS: tuple[str, ...] = ("declared", "all")

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def positive_int(text: str) -> int:
    """argparse type for an integer of at least 1 (shared with the pytest plugin's options)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def parse_size(text: str) -> int:
    """Parse a byte size such as ``1048576``, ``512M``, ``512MiB`` or ``2G`` (powers of 1024).

    Raises:
        argparse.ArgumentTypeError: the text is not a positive size.
    """
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1048576, 512M, 2G)")
    if int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(
            "0 bytes leaves no room for any object; give a positive size such as 512M, "
            "or leave the option out for no limit"
        )
    return int(match.group(1)) * _UNITS[match.group(2).lower()]
