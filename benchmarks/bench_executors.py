"""Executor speed: thread-backend round trips and throughput, process-backend spawn-to-ready.

Run: ``python benchmarks/bench_executors.py [--quick]``. Prints figures side by side; asserts
nothing (machines are noisy). Takes well under a minute.

* thread backend: a trivial Runner task through flamepy 0.6.0's ``Session.invoke`` (median
  round trip; target < 3 ms), and 1,000 trivial tasks over 10 instances (tasks/s);
* process backend: median spawn-to-ready of an instance running our worker program (process
  start until its socket accepts a connection), next to bare ``python -c pass`` start-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _thread_backend(invokes: int, batch: int) -> tuple[float, float, float]:
    from flamepy_fake._cluster import FakeCluster

    with FakeCluster(backend="thread") as cluster, tempfile.TemporaryDirectory() as project:
        os.environ.update(cluster.env)
        os.chdir(project)
        Path("README.md").write_text("bench\n")
        import cloudpickle
        from flamepy.runner.runner import Runner
        from flamepy.runner.types import RunnerRequest

        def trivial(x: int) -> int:
            return x

        with Runner("bench-exec") as runner:
            one = runner.service(trivial, autoscale=False, warmup=1)
            session = one._session
            request = cloudpickle.dumps(RunnerRequest(None, (1,), None))
            for _ in range(20):  # warm up connections and the instance
                session.invoke(request)
            samples = []
            for _ in range(invokes):
                start = time.perf_counter()
                session.invoke(request)
                samples.append(time.perf_counter() - start)
            median_ms = statistics.median(samples) * 1000
            p90_ms = sorted(samples)[int(len(samples) * 0.9)] * 1000
            one.close()  # free its instance: the ten below must all fit under the default cap

            ten = runner.service(trivial, autoscale=False, warmup=10)
            session = ten._session
            for f in [session.run(request) for _ in range(20)]:
                f.result()
            start = time.perf_counter()
            futures = [session.run(request) for _ in range(batch)]
            for f in futures:
                f.result()
            rate = batch / (time.perf_counter() - start)
        os.chdir("/")
    return median_ms, p90_ms, rate


def _spawn_to_ready(runs: int) -> tuple[float, float, float]:
    from flamepy_fake._executors._instance import ProcessInstance

    def bare() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - start

    def instance(module: str) -> float:
        with tempfile.TemporaryDirectory(prefix="ffb-", dir="/tmp") as tmp:
            env = {
                **os.environ,
                "FLAME_CACHE_ENDPOINT": "grpc://127.0.0.1:9",
                "FLAME_ENDPOINT": "http://127.0.0.1:9",
            }
            env["FLAME_INSTANCE_ENDPOINT"] = f"{tmp}/i.sock"
            inst = ProcessInstance(
                [sys.executable, "-m", module],
                env=env,
                cwd=Path(tmp),
                socket_path=Path(tmp) / "i.sock",
                stdout_path=Path(tmp) / "out",
                stderr_path=Path(tmp) / "err",
                stop_grace=2,
            )
            start = time.perf_counter()
            inst.start()
            elapsed = time.perf_counter() - start
            inst.stop()
            return elapsed

    bare_ms = statistics.median(bare() for _ in range(runs)) * 1000
    ours_ms = statistics.median(instance("flamepy_runner._worker") for _ in range(runs)) * 1000
    stock_ms = statistics.median(instance("flamepy.runner.runpy") for _ in range(runs)) * 1000
    return bare_ms, ours_ms, stock_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    invokes, batch, runs = (100, 300, 3) if args.quick else (300, 1000, 7)

    median_ms, p90_ms, rate = _thread_backend(invokes, batch)
    print(
        f"thread backend  Session.invoke round trip: median {median_ms:.2f} ms, p90 {p90_ms:.2f} ms "
        f"(target < 3 ms, {invokes} invokes)"
    )
    print(f"thread backend  {batch} trivial tasks over 10 instances: {rate:,.0f} tasks/s")
    bare_ms, ours_ms, stock_ms = _spawn_to_ready(runs)
    print(f"process backend spawn-to-ready (median of {runs}):")
    print(f"  python -c pass                   {bare_ms:7.1f} ms  (1.00x)")
    print(f"  python -m flamepy_runner._worker {ours_ms:7.1f} ms  ({ours_ms / bare_ms:.2f}x)")
    print(f"  python -m flamepy.runner.runpy   {stock_ms:7.1f} ms  ({stock_ms / bare_ms:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
