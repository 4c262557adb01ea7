"""What runs remotely: pure functions and a stateful ledger (imported from the uploaded package)."""

from __future__ import annotations

from collections.abc import Mapping

#: VAT by country, applied to each order's net amount.
VAT = {"FR": 0.20, "DE": 0.19, "LU": 0.17}


def order_total(order: Mapping[str, object]) -> float:
    """Gross total of one order: quantity x unit price, plus the country's VAT, in cents."""
    net = int(order["quantity"]) * int(order["unit_price"])  # type: ignore[call-overload]
    country = str(order["country"])
    if country not in VAT:
        raise ValueError(f"no VAT rate for country {country!r}")
    return round(net * (1 + VAT[country]))


class Ledger:
    """Books revenue per country; served as a stateful instance, so bookings accumulate."""

    def __init__(self) -> None:
        self.booked: dict[str, int] = {}

    def book(self, country: str, cents: int) -> int:
        """Add ``cents`` to ``country``; return its running total."""
        self.booked[country] = self.booked.get(country, 0) + int(cents)
        return self.booked[country]

    def total(self) -> int:
        """Everything booked so far."""
        return sum(self.booked.values())
