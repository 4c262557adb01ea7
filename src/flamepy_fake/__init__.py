"""flamepy_fake: a wire-faithful Flame cluster that runs in-process."""

from __future__ import annotations

__all__: list[str] = []
