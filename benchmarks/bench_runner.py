"""Runner speed: ours against flamepy 0.6.0's, side by side on the same fake cluster.

Run: ``python benchmarks/bench_runner.py [--quick]``. Prints figures and ratios measured in the
same run; asserts nothing (machines are noisy).

* throughput: N calls of a trivial function submitted, then gathered (target: ours >= 3x);
* one call round trip, median (target: ours no slower);
* a whole ``with Runner(...)`` block with one call on a fresh fake, thread backend (target
  < 100 ms), next to the fake's own start+stop;
* 10,000 outstanding futures: peak threads of the process, open watch streams, RSS per future;
* how the task watcher was chosen: one ``ListTask`` of a 10,000-task session (what polling
  would pay per sweep) against the per-task cost of watching.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def trivial(x: int) -> int:
    return x


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def _project() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-runner-") as tmp:
        root = Path(tmp)
        (root / "README.md").write_text("bench\n")
        old = os.getcwd()
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(old)


@contextlib.contextmanager
def _flamepy_on(cluster: Any) -> Iterator[None]:
    from flamepy_fake.plugin import reset_flamepy_clients

    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    reset_flamepy_clients()
    try:
        yield
    finally:
        reset_flamepy_clients()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _PeakThreads:
    def __init__(self) -> None:
        self.peak = threading.active_count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, threading.active_count())

    def __enter__(self) -> _PeakThreads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _throughput(make: Callable[[], Any], calls: int, gather: Callable[[Any, list[Any]], list[Any]]) -> float:
    with make() as runner:
        svc = runner.service(trivial)
        gather(runner, [svc(i) for i in range(50)])  # warm: instances up, connections open
        start = time.perf_counter()
        futures = [svc(i) for i in range(calls)]
        values = gather(runner, futures)
        elapsed = time.perf_counter() - start
        assert values == list(range(calls))
    return calls / elapsed


def _round_trip(make: Callable[[], Any], samples: int) -> float:
    with make() as runner:
        svc = runner.service(trivial, autoscale=False, warmup=1)
        for i in range(20):
            svc(i).get()
        times = []
        for i in range(samples):
            start = time.perf_counter()
            svc(i).get()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _outstanding(make: Callable[[], Any], count: int) -> tuple[int, int, float, float]:
    """(threads before, peak threads, RSS KiB per outstanding future, seconds to complete)."""
    with make() as runner:
        svc = runner.service(trivial)
        svc(0).get()
        gc.collect()
        threads_before = threading.active_count()
        rss_before = _rss_kib()
        with _PeakThreads() as peak:
            start = time.perf_counter()
            futures = [svc(i) for i in range(count)]
            rss_after = _rss_kib()
            for f in futures:
                f.wait()
            elapsed = time.perf_counter() - start
        per_future = (rss_after - rss_before) / count
    return threads_before, peak.peak, per_future, elapsed


def _list_vs_watch(cluster: Any, tasks: int) -> tuple[float, float]:
    """ms for one ListTask of a ``tasks``-task session, and ms of watch work per task."""
    from flamepy_runner import Runner
    from flamepy_runner._proto import pb

    with Runner("bench-list", config=cluster.config) as runner:
        svc = runner.service(trivial)
        start = time.perf_counter()
        futures = [svc(i) for i in range(tasks)]
        runner.wait(futures)
        per_task = (time.perf_counter() - start) / tasks * 1000
        stub = runner.frontend._stub
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            n = sum(1 for _ in stub.ListTask(pb.ListTaskRequest(session_id=svc.session_id), timeout=60))
            times.append(time.perf_counter() - t0)
            assert n == tasks
    return statistics.median(times) * 1000, per_task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    calls, samples, blocks, outstanding = (300, 50, 5, 2000) if args.quick else (1000, 200, 15, 10000)

    from flamepy.runner import Runner as FlamepyRunner

    from flamepy_fake import FakeCluster
    from flamepy_runner import Runner

    with _project(), FakeCluster(executors="thread", max_executors=10) as cluster:

        def ours() -> Runner:
            return Runner("bench-ours", config=cluster.config)

        def theirs() -> Any:
            return FlamepyRunner("bench-flamepy")

        with _flamepy_on(cluster):
            flamepy_rate = _throughput(theirs, calls, lambda r, fs: r.get(fs))
            flamepy_rt = _round_trip(theirs, samples)
        our_rate = _throughput(ours, calls, lambda r, fs: r.get(fs))
        our_rt = _round_trip(ours, samples)
        print(f"throughput, {calls} trivial calls submitted then gathered (thread backend, 10 executors):")
        print(f"  flamepy 0.6.0 Runner  {flamepy_rate:8,.0f} calls/s  (1.00x)")
        ratio = our_rate / flamepy_rate
        print(f"  flamepy_runner        {our_rate:8,.0f} calls/s  ({ratio:.2f}x, target >= 3x)")
        print(f"one call round trip, median of {samples}:")
        print(f"  flamepy 0.6.0 Runner  {flamepy_rt:8.2f} ms  (1.00x)")
        print(f"  flamepy_runner        {our_rt:8.2f} ms  ({our_rt / flamepy_rt:.2f}x, target <= 1x)")

        with _flamepy_on(cluster):
            f_before, f_peak, f_rss, f_secs = _outstanding(theirs, outstanding)
        o_before, o_peak, o_rss, o_secs = _outstanding(ours, outstanding)
        print(f"{outstanding:,} outstanding futures (threads of the whole process, cluster included):")
        print(
            f"  flamepy 0.6.0 Runner  threads {f_before} -> peak {f_peak}, "
            f"RSS {f_rss:.2f} KiB/future, done in {f_secs:.1f} s"
        )
        print(
            f"  flamepy_runner        threads {o_before} -> peak {o_peak}, "
            f"RSS {o_rss:.2f} KiB/future, done in {o_secs:.1f} s"
        )
        list_ms, watch_ms = _list_vs_watch(cluster, outstanding)
        print(
            f"watcher choice: one ListTask of a {outstanding:,}-task session {list_ms:.1f} ms "
            f"(per poll); watching costs {watch_ms:.3f} ms per task end to end"
        )

    block_times, start_times = [], []
    with _project():
        for i in range(blocks):
            t0 = time.perf_counter()
            with FakeCluster(executors="thread") as fresh:
                t1 = time.perf_counter()
                with Runner(f"bench-block-{i}", config=fresh.config) as runner:
                    assert runner.service(trivial)(1).get() == 1
                t2 = time.perf_counter()
            t3 = time.perf_counter()
            block_times.append(t2 - t1)
            start_times.append((t1 - t0) + (t3 - t2))
    print(f"whole `with Runner(...)` block with one call on a fresh fake (median of {blocks}):")
    print(f"  Runner block          {statistics.median(block_times) * 1000:8.1f} ms  (target < 100 ms)")
    print(f"  FakeCluster start+stop {statistics.median(start_times) * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
