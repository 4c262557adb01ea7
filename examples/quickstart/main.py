"""flamepy_runner quick start: a function, a stateful instance and chained futures.

On an embedded fake cluster (no Flame installation needed)::

    flamepy-fake run -- python examples/quickstart/main.py

On a real cluster, with ``~/.flame/flame.yaml`` (or FLAME_ENDPOINT / FLAME_CACHE_ENDPOINT)
pointing at it::

    python examples/quickstart/main.py

The Runner packages this directory (``project_dir``), registers the application
``quickstart`` from the cluster's ``flmrun`` template, runs the calls and cleans everything up.
"""

from __future__ import annotations

import sys
from pathlib import Path

from inventory import Inventory  # imported by the executors from the uploaded package

from flamepy_runner import Runner


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def main() -> int:
    results: dict[str, object] = {}
    with Runner("quickstart", project_dir=Path(__file__).resolve().parent) as runner:
        # A function service: autoscaling, every call returns an ObjectFuture at once.
        squares = runner.service(square)
        futures = [squares(i) for i in range(10)]
        results["squares"] = runner.get(futures)

        # A stateful instance: each call sees the changes of the calls before it.
        inventory = runner.service(Inventory({"apples": 3}), stateful=True)
        inventory.add("apples", 2).wait()
        inventory.add("pears", 5).wait()
        results["apples"] = inventory.count("apples").get()

        # Chained futures: the first results travel to the next call as references.
        adder = runner.service(add)
        results["chained"] = adder(squares(3), squares(4)).get()

    expected = {"squares": [i * i for i in range(10)], "apples": 5, "chained": 25}
    for name, value in results.items():
        print(f"{name}: {value}")
    if results != expected:
        print(f"quickstart: FAILED, expected {expected}", file=sys.stderr)
        return 1
    print("quickstart: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
