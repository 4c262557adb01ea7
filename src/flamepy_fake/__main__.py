"""``python -m flamepy_fake``: the same command line as ``flamepy-fake``."""

from __future__ import annotations

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
