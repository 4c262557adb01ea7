"""A module of the quick-start project: executors import it from the uploaded package."""

from __future__ import annotations


class Inventory:
    """Counts items; served as a stateful instance, its counts survive from call to call."""

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = dict(counts or {})

    def add(self, item: str, quantity: int) -> int:
        """Add ``quantity`` of ``item``; return the new count."""
        self.counts[item] = self.counts.get(item, 0) + quantity
        return self.counts[item]

    def count(self, item: str) -> int:
        """How many of ``item`` there are."""
        return self.counts.get(item, 0)
