"""The versions the fake reports: its own (the distribution's) and the Flame release it follows."""

from __future__ import annotations

from flamepy_runner import __version__

__all__ = ["FLAME_VERSION", "__version__"]

#: The Flame release whose wire behaviour the fake reproduces (its images' tag, flamepy on PyPI).
FLAME_VERSION = "v0.6.0"
