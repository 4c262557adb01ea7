"""The job: price a batch of orders remotely and book them in a ledger."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flamepy_runner import Runner

from .pricing import Ledger, order_total


def revenue(runner: Runner, orders: Sequence[Mapping[str, object]]) -> int:
    """Price every order remotely (in parallel), book each in a stateful ledger, return the total."""
    price = runner.service(order_total)
    ledger = runner.service(Ledger(), stateful=True)
    totals = [price(order) for order in orders]
    for order, total in zip(orders, totals, strict=True):
        ledger.book(str(order["country"]), total).wait()  # the priced total travels by reference
    return int(ledger.total().get())
