"""Stopping a test's cluster off the test's critical path.

A function-scoped fake cluster whose instances are processes is stopped in a background thread
once the test's teardown has checked what the test left on it (open sessions, unfinished
tasks): killing and reaping its instances (~5 ms each, most of it the kernel ending a
multi-threaded process), closing its ports and removing its files then overlap the next test
instead of delaying it. Real Flame does not wait either: dropping an instance's shim sends
SIGTERM and moves on.

The check that ``stop()`` left nothing behind (the cluster's directory, its instance processes)
still runs, on the stopped cluster, and still fails the run: :meth:`Retirement.wait` (at the
session's end) returns whatever any retired cluster left, naming the test it served, in the
order the clusters were retired. At most ``max_in_flight`` clusters are being stopped at once;
one more waits for the oldest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["MAX_IN_FLIGHT", "Retirement"]

#: Clusters being stopped at once; one more waits for the oldest (bounded threads and processes).
MAX_IN_FLIGHT = 2
_JOIN_TIMEOUT = 120.0  # seconds; stop() bounds itself well below this (SIGKILL after its grace)


class Retirement:
    """The clusters of a pytest run being stopped in the background, and what they left.

    Args:
        max_in_flight: clusters being stopped at once.
        join_timeout: seconds :meth:`wait` gives each stop before reporting it as hung.
    """

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT, join_timeout: float = _JOIN_TIMEOUT) -> None:
        self._max = max_in_flight
        self._join_timeout = join_timeout
        self._ended = threading.Condition()  # notified when a stop ends
        self._running: dict[threading.Thread, tuple[int, str]] = {}  # in retirement order
        self._problems: dict[int, list[str]] = {}  # by retirement order, whatever the finishing order
        self._count = 0

    def retire(self, finish: Callable[[], None], check: Callable[[], list[str]], owner: str) -> None:
        """Run ``finish`` (the rest of a cluster's stop), then ``check`` (the lines of what it
        left behind), in a background thread; ``owner`` names the test, for the report.
        Returns at once unless ``max_in_flight`` stops are running: then when one has ended."""
        with self._ended:
            while len(self._running) >= self._max:
                oldest = next(iter(self._running))
                if not self._ended.wait(self._join_timeout) and oldest in self._running:
                    self._give_up(oldest)
            self._count += 1
            thread = threading.Thread(
                target=self._run,
                args=(self._count, finish, check, owner),
                name=f"flamepy-fake-retire-{self._count}",
                daemon=True,
            )
            self._running[thread] = (self._count, owner)
            thread.start()

    def _run(
        self, number: int, finish: Callable[[], None], check: Callable[[], list[str]], owner: str
    ) -> None:
        found: list[str] = []
        try:
            finish()
        except Exception as exc:  # a bug in stop(): reported with the rest, never lost
            found.append(f"- stop() failed: {exc!r}")
        try:
            found += check()
        except Exception as exc:
            found.append(f"- the check of what stop() left failed: {exc!r}")
        with self._ended:
            if found and threading.current_thread() in self._running:
                self._problems[number] = [f"  {owner}:", *(f"    {line}" for line in found)]
            self._running.pop(threading.current_thread(), None)
            self._ended.notify_all()

    def _give_up(self, thread: threading.Thread) -> None:
        """Report a stop that outlived the timeout and stop waiting for it (lock held)."""
        number, owner = self._running.pop(thread)
        self._problems[number] = [f"  {owner}:", f"    - stop() did not end within {self._join_timeout:g} s"]

    def wait(self) -> list[str]:
        """Wait for every retiring cluster; the report lines of what they left (empty: nothing)."""
        with self._ended:
            while self._running:
                oldest = next(iter(self._running))
                if not self._ended.wait(self._join_timeout) and oldest in self._running:
                    self._give_up(oldest)
            problems, self._problems = self._problems, {}
        return [line for number in sorted(problems) for line in problems[number]]

    def pending(self) -> int:
        """How many clusters are still being stopped."""
        with self._ended:
            return len(self._running)
