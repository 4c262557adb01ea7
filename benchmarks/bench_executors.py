"""Executor speed and memory: forked, spawned and thread instances side by side.

Run: ``python benchmarks/bench_executors.py [--quick]``. Prints figures side by side; asserts
nothing (machines are noisy, and the figures move with the load of the machine). Takes about a
minute.

* spawn-to-ready (process start until the socket accepts a connection), median: an instance
  forked by the fork server (zygote), with and without ``GRPC_ENABLE_FORK_SUPPORT`` and with
  and without an import scope (``instance_imports="declared"``, the default: a few ms at
  most), against today's spawn and bare ``python -c pass``; target <= 25 ms for our worker;
* trivial Runner task round trip through flamepy 0.6.0's ``Session.invoke`` (median), on the
  thread backend and through an isolated (forked) instance; target < 3 ms;
* 1,000 trivial tasks over 10 instances (tasks/s), thread and isolated;
* first task of a brand-new session (create session + one ``invoke`` of ``flmping``), the
  latency every unit test pays; target <= 20 ms thread, <= 40 ms isolated;
* a whole ``with flamepy_runner.Runner(...)`` block with one call on a fresh fake (default
  backend); target < 150 ms;
* memory: the zygote's RSS, and each forked child's private (unshared) RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

WORKER = "flamepy_runner._worker"
RUNPY = "flamepy.runner.runpy"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


@contextlib.contextmanager
def _cluster_env(backend: str, **kwargs: object) -> Iterator[object]:
    from flamepy_fake import FakeCluster
    from flamepy_fake.plugin import reset_flamepy_clients

    with FakeCluster(executors=backend, **kwargs) as cluster:  # type: ignore[arg-type]
        saved = dict(os.environ)
        os.environ.update(cluster.env)
        reset_flamepy_clients()
        try:
            yield cluster
        finally:
            reset_flamepy_clients()
            os.environ.clear()
            os.environ.update(saved)


def _wait_zygote(cluster: object) -> None:
    zygote = cluster._manager._zygote  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while zygote is not None and not zygote._ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)


def round_trips(backend: str, invokes: int, batch: int) -> tuple[float, float, float]:
    """Median and p90 of Session.invoke of a trivial Runner task; tasks/s over 10 instances."""
    with _cluster_env(backend) as cluster, tempfile.TemporaryDirectory() as project:
        _wait_zygote(cluster)
        old = os.getcwd()
        os.chdir(project)
        Path("README.md").write_text("bench\n")
        import cloudpickle
        from flamepy.runner.runner import Runner
        from flamepy.runner.types import RunnerRequest

        def trivial(x: int) -> int:
            return x

        try:
            with Runner(f"bench-{backend}") as runner:
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
                one.close()  # free its instance

                ten = runner.service(trivial, autoscale=False, warmup=10)
                session = ten._session
                for f in [session.run(request) for _ in range(20)]:
                    f.result()
                start = time.perf_counter()
                futures = [session.run(request) for _ in range(batch)]
                for f in futures:
                    f.result()
                rate = batch / (time.perf_counter() - start)
        finally:
            os.chdir(old)
    return _median_ms(samples), sorted(samples)[int(len(samples) * 0.9)] * 1000, rate


def spawn_to_ready(runs: int) -> dict[str, float]:
    """Median spawn-to-ready per way of starting an instance (ms)."""
    from flamepy_fake._executors._instance import ProcessInstance
    from flamepy_fake._executors._zygote import ForkServer

    def bare() -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - start

    def instance(module: str, server: ForkServer | None, extra: dict[str, str]) -> float:
        with tempfile.TemporaryDirectory(prefix="ffb-", dir="/tmp") as tmp:
            env = {
                **os.environ,
                **extra,
                "FLAME_CACHE_ENDPOINT": "grpc://127.0.0.1:9",
                "FLAME_ENDPOINT": "http://127.0.0.1:9",
                "FLAME_INSTANCE_ENDPOINT": f"{tmp}/i.sock",
            }
            inst = ProcessInstance(
                [sys.executable, "-m", module],
                env=env,
                cwd=Path(tmp),
                socket_path=Path(tmp) / "i.sock",
                stdout_path=Path(tmp) / "out",
                stderr_path=Path(tmp) / "err",
                stop_grace=2,
                fork_server=server,
            )
            start = time.perf_counter()
            inst.start()
            elapsed = time.perf_counter() - start
            assert inst.forked is (server is not None), inst.logs()
            inst.stop()
            return elapsed

    def forked(module: str, grpc_fork: str, scoped: bool = False) -> float:
        from flamepy_fake._executors._import_scope import ENV_VAR
        from flamepy_fake._executors._visible import instance_scope, zygote_scope

        extra = {"GRPC_ENABLE_FORK_SUPPORT": grpc_fork}
        zygote_env = {**os.environ, **extra}
        zygote_env.pop(ENV_VAR, None)
        if scoped:  # instance_imports="declared": the zygote and each child apply a scope
            zygote_env[ENV_VAR] = zygote_scope().to_env()
            program = "builtin" if module == WORKER else "flamepy"
            extra = {**extra, ENV_VAR: instance_scope(program, "bench", [], ["/nonexistent"]).to_env()}
        with tempfile.TemporaryDirectory() as logs:
            server = ForkServer(
                python=sys.executable,
                modules=(WORKER, RUNPY),
                preload=("cloudpickle", "pyarrow", "pyarrow.flight", "flamepy_runner._cache"),
                env=zygote_env,
                log_path=Path(logs) / "zygote.log",
            )
            server.start()
            try:
                instance(module, server, extra)  # the first one also waits for the imports
                return _median_ms([instance(module, server, extra) for _ in range(runs)])
            finally:
                server.stop()

    return {
        "python -c pass": _median_ms([bare() for _ in range(runs)]),
        f"spawn  {WORKER}": _median_ms([instance(WORKER, None, {}) for _ in range(runs)]),
        f"spawn  {RUNPY}": _median_ms([instance(RUNPY, None, {}) for _ in range(runs)]),
        f"fork   {WORKER}": forked(WORKER, "0"),
        f"fork   {WORKER}, instance_imports=declared": forked(WORKER, "0", scoped=True),
        f"fork   {WORKER} (GRPC_ENABLE_FORK_SUPPORT=1)": forked(WORKER, "1"),
        f"fork   {RUNPY}": forked(RUNPY, "0"),
        f"fork   {RUNPY}, instance_imports=declared": forked(RUNPY, "0", scoped=True),
    }


def first_task(backend: str, runs: int) -> tuple[float, float]:
    """Median (create_session + first invoke of flmping) and the second invoke, in ms."""
    import flamepy

    firsts, seconds = [], []
    with _cluster_env(backend) as cluster:
        _wait_zygote(cluster)
        for _ in range(runs + 1):
            start = time.perf_counter()
            ssn = flamepy.create_session("flmping", b"", session_id=f"first-{uuid.uuid4().hex[:8]}")
            ssn.invoke(b"{}")
            middle = time.perf_counter()
            ssn.invoke(b"{}")
            end = time.perf_counter()
            ssn.close()
            firsts.append(middle - start)
            seconds.append(end - middle)
    return _median_ms(firsts[1:]), _median_ms(seconds[1:])  # the first opens the connections


def runner_block(runs: int) -> tuple[float, float, float]:
    """A whole `with Runner(...)` block with one call, each on a fresh fake (default backend).

    Returns the medians of: the fake's start, the block right after the start, and the block
    once the zygote is ready (ms).
    """
    from flamepy_fake import FakeCluster
    from flamepy_runner import Runner

    def one(wait: bool) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as project:
            (Path(project) / "README.md").write_text("bench\n")
            start = time.perf_counter()
            with FakeCluster() as cluster:
                started = time.perf_counter()
                if wait:
                    _wait_zygote(cluster)
                    started = time.perf_counter()
                with Runner("bench-block", config=cluster.config, project_dir=project) as runner:
                    assert runner.service(abs)(-3).get() == 3
                end = time.perf_counter()
        return started - start, end - started

    one(False)  # imports
    cold = [one(False) for _ in range(runs)]
    warm = [one(True) for _ in range(runs)]
    return (
        _median_ms([c[0] for c in cold]),
        _median_ms([c[1] for c in cold]),
        _median_ms([w[1] for w in warm]),
    )


def _smaps(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        values[key] = int(value.split()[0])
    return values


def _private_kib(pid: int) -> int:
    values = _smaps(pid)
    return values["Private_Clean"] + values["Private_Dirty"]


def memory(children: int) -> tuple[int, int, list[int], list[int]]:
    """Zygote RSS and PSS, each forked worker's private RSS, and a spawned worker's (KiB)."""
    from flamepy_fake import FakeCluster
    from flamepy_runner import Runner

    found: dict[bool, list[int]] = {}
    zygote_kib = (0, 0)
    for fork in (True, False):
        with FakeCluster(fork_server=fork) as cluster, tempfile.TemporaryDirectory() as project:
            _wait_zygote(cluster)
            (Path(project) / "README.md").write_text("bench\n")
            with Runner("bench-mem", config=cluster.config, project_dir=project) as runner:
                svc = runner.service(abs, autoscale=False, warmup=children if fork else 1)
                runner.get([svc(-i) for i in range(children * 2)])
                pids = [e.pid for e in cluster.executors() if e.pid is not None]
                found[fork] = [_private_kib(p) for p in pids]
                if fork:
                    zygote = _smaps(cluster._manager._zygote.pid)  # type: ignore[attr-defined]
                    zygote_kib = (zygote["Rss"], zygote["Pss"])
    return zygote_kib[0], zygote_kib[1], found[True], found[False]


def _timed(what: str, fn: Callable[[], object]) -> object:
    print(f"... {what}", file=sys.stderr, flush=True)
    return fn()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    invokes, batch, runs = (100, 300, 3) if args.quick else (300, 1000, 9)

    ready = spawn_to_ready(runs)
    bare = ready["python -c pass"]
    print(f"instance spawn-to-ready (median of {runs}; target <= 25 ms for our worker forked):")
    for label, ms in ready.items():
        print(f"  {label:<58} {ms:7.1f} ms  ({ms / bare:.2f}x python -c pass)")

    for backend, label in (("thread", "thread  "), ("auto", "isolated")):
        median_ms, p90_ms, rate = round_trips(backend, invokes, batch)
        print(
            f"{label} Session.invoke round trip: median {median_ms:.2f} ms, p90 {p90_ms:.2f} ms "
            f"(target < 3 ms); {batch} tasks over 10 instances: {rate:,.0f} tasks/s"
        )

    for backend, label, target in (("thread", "thread  ", 20), ("auto", "isolated", 40)):
        first, second = first_task(backend, runs)
        print(
            f"{label} first task of a new session (create + invoke flmping): median {first:.1f} ms "
            f"(target <= {target} ms); second invoke {second:.1f} ms"
        )

    start_ms, cold_ms, warm_ms = runner_block(runs)
    print(
        f"with Runner(...) block, one call, fresh fake (default backend): {cold_ms:.0f} ms right after "
        f"the fake started ({start_ms:.0f} ms), {warm_ms:.0f} ms once its zygote is ready (target < 150 ms)"
    )

    zrss, zpss, private, spawned = memory(4)
    print(
        f"memory: zygote RSS {zrss / 1024:.1f} MiB (PSS {zpss / 1024:.1f} MiB); private RSS of each forked "
        f"worker: {', '.join(f'{p / 1024:.1f}' for p in private)} MiB; of a spawned worker: "
        f"{', '.join(f'{p / 1024:.1f}' for p in spawned)} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
