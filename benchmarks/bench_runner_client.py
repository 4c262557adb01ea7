"""The Runner's own cost per call: ours against flamepy 0.6.0's, on a cluster in another process.

Run: ``python benchmarks/bench_runner_client.py [--quick] [--profile]``. Prints figures and
ratios measured in the same run; asserts nothing (machines are noisy).

The cluster is ``flamepy-fake serve`` in a child process, so the fake's own work (scheduling,
instances, the object cache) is not counted as the client's. For each Runner, on a warm service
of a trivial function:

* client CPU per call (``time.process_time`` of this process, every thread included) over N
  sequential calls, each ``get()`` before the next (target: ours <= 0.4 ms and >= 3x better);
* calls/s and client CPU per call for N calls submitted, then gathered (target: ours >= 2x);
* the wire floor: the same call as raw RPCs (``CreateTask`` of ready-made bytes, a ``WatchTask``
  stream, one Flight ``DoGet``), what no Runner can go below on the v0.6.0 wire;
* the session-manager RPCs each Runner makes per call, by method (counted by an in-process
  fake's call record): trivial calls in sequence and in a batch on an autoscaled service, and a
  batch stalled for 2.5 s behind its first call on one instance, where a Runner that sweeps or
  polls its sessions shows it.

``--profile`` prints a cProfile of our sequential calls (the client side only).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def trivial(x: int) -> int:
    return x


@contextlib.contextmanager
def _served_cluster() -> Iterator[dict[str, str]]:
    """``flamepy-fake serve`` in a child process; yields its FLAME_* endpoints."""
    cli = Path(sys.executable).with_name("flamepy-fake")
    proc = subprocess.Popen(
        [str(cli), "serve", "--max-executors", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        env: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("flamepy-fake ready:"):
                env = dict(part.split("=", 1) for part in line.split(":", 1)[1].split())
                break
            if time.monotonic() > deadline:
                break
        if not env:
            raise RuntimeError("flamepy-fake serve did not print its ready line")
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _project() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        root = Path(tmp)
        (root / "README.md").write_text("bench\n")
        old = os.getcwd()
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(old)


def _sequential(svc: Any, calls: int) -> tuple[float, float]:
    """(client CPU ms per call, wall ms per call) of ``calls`` calls, one after the other."""
    for i in range(20):
        svc(i).get()
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(calls):
        assert svc(i).get() == i
    return (time.process_time() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000


def _batch(svc: Any, calls: int, gather: Callable[[list[Any]], list[Any]]) -> tuple[float, float]:
    """(calls/s, client CPU ms per call) of ``calls`` calls submitted, then gathered."""
    gather([svc(i) for i in range(50)])
    cpu, wall = time.process_time(), time.perf_counter()
    futures = [svc(i) for i in range(calls)]
    assert gather(futures) == list(range(calls))
    return calls / (time.perf_counter() - wall), (time.process_time() - cpu) / calls * 1000


def _wire_floor(frontend: str, session_id: str, data: bytes, calls: int) -> tuple[float, float]:
    """(client CPU ms per call, wall ms per call) of what one call is on the v0.6.0 wire, made
    raw: a ``CreateTask`` of ready-made input bytes, a ``WatchTask`` stream read until the task
    ends, and one Flight ``DoGet`` of the result its output names, on a sync gRPC channel and
    a Flight client opened once. No Runner can do less per call on this wire; it bounds the
    CPU targets from below."""
    import grpc
    import pyarrow.flight as flight

    from flamepy_runner._cache_wire import ObjectRef
    from flamepy_runner._proto import pb, rpc

    done = {pb.TaskState.Value(s) for s in ("Succeed", "Failed", "Cancelled")}
    channel = grpc.insecure_channel(frontend.removeprefix("http://"))
    stub = rpc.Stub(channel, pb.FRONTEND_SERVICE)
    clients: dict[str, flight.FlightClient] = {}

    def one() -> None:
        spec = pb.TaskSpec(session_id=session_id, input=data)
        task = stub.CreateTask(pb.CreateTaskRequest(task=spec), timeout=30)
        request = pb.WatchTaskRequest(session_id=session_id, task_id=task.metadata.id)
        for update in stub.WatchTask(request, timeout=30):
            if update.status.state in done:
                break
        ref = ObjectRef.decode(update.spec.output)
        client = clients.get(ref.endpoint)
        if client is None:
            client = clients[ref.endpoint] = flight.FlightClient(ref.endpoint)
        client.do_get(flight.Ticket(f"{ref.key}:0".encode())).read_all()

    try:
        for _ in range(20):
            one()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            one()
        return (time.process_time() - cpu) / calls * 1000, (time.perf_counter() - wall) / calls * 1000
    finally:
        for client in clients.values():
            client.close()
        channel.close()


def _request_of(svc: Any) -> bytes:
    """The input bytes our service sends for ``svc(1)``: the floor sends the same."""
    sent: list[bytes] = []
    frontend = svc._runner.frontend
    create = frontend.create_task

    def spy(session_id: str, data: bytes) -> Any:
        sent.append(data)
        return create(session_id, data)

    frontend.create_task = spy
    try:
        assert svc(1).get() == 1
    finally:
        del frontend.create_task
    return sent[0]


def slow(seconds: float) -> float:
    import time as _time

    _time.sleep(seconds)
    return seconds


def _rpc_load(make_runner: Callable[[str], Any], cluster: Any, quick: bool) -> dict[str, dict[str, float]]:
    """Session-manager RPCs per call, by method, for each of three workloads."""
    import collections

    def per_call(since: int, calls: int) -> dict[str, float]:
        served = cluster.calls(service="flame.v1.Frontend", where=lambda c: c.seq > since)
        return {m: n / calls for m, n in sorted(collections.Counter(c.method for c in served).items())}

    load: dict[str, dict[str, float]] = {}
    count, stalled = (50, 100) if quick else (200, 200)
    with make_runner("rpc-trivial") as runner:
        svc = runner.service(trivial)
        svc(0).get()
        mark = cluster.calls()[-1].seq
        for i in range(count):
            svc(i).get()
        load["sequential"] = per_call(mark, count)
        mark = cluster.calls()[-1].seq
        runner.get([svc(i) for i in range(count)])
        load["batch"] = per_call(mark, count)
    with make_runner("rpc-stalled") as runner:
        # One instance held 2.5 s by the first call while the rest wait, most beyond the
        # watcher's window of 64 streams: the session stalls as on a cluster whose instances
        # take seconds to start.
        svc = runner.service(slow, autoscale=False, warmup=1)
        svc(0.0).get()
        mark = cluster.calls()[-1].seq
        runner.get([svc(2.5), *(svc(0.0) for _ in range(stalled - 1))])
        load["stalled batch"] = per_call(mark, stalled)
    return load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls")
    parser.add_argument("--profile", action="store_true", help="profile our sequential calls")
    args = parser.parse_args()
    sequential, batch = (100, 300) if args.quick else (300, 1000)

    from flamepy.runner import Runner as FlamepyRunner

    from flamepy_fake.plugin import reset_flamepy_clients
    from flamepy_runner import FlameConfig, Runner

    results: dict[str, tuple[float, float, float, float]] = {}
    with _project(), _served_cluster() as env:
        config = FlameConfig(endpoint=env["FLAME_ENDPOINT"], cache_endpoint=env["FLAME_CACHE_ENDPOINT"])
        with Runner("bench-ours", config=config) as runner:
            svc = runner.service(trivial, autoscale=False, warmup=2)
            seq = _sequential(svc, sequential)
            rate = _batch(svc, batch, runner.get)
            results["flamepy_runner"] = (*seq, *rate)
            floor = _wire_floor(env["FLAME_ENDPOINT"], svc.session_id, _request_of(svc), sequential)
            if args.profile:
                profile = cProfile.Profile()
                profile.enable()
                for i in range(sequential):
                    svc(i).get()
                profile.disable()
        os.environ.update(env)
        reset_flamepy_clients()
        with FlamepyRunner("bench-flamepy") as theirs:
            svc = theirs.service(trivial, autoscale=False, warmup=2)
            seq = _sequential(svc, sequential)
            rate = _batch(svc, batch, theirs.get)
            results["flamepy 0.6.0"] = (*seq, *rate)
        reset_flamepy_clients()

    ours, base = results["flamepy_runner"], results["flamepy 0.6.0"]
    print("client-side cost per call, trivial function, cluster in another process (flamepy-fake serve)")
    print(f"{'':16s} {'CPU ms/call':>12s} {'wall ms/call':>13s} {'batch calls/s':>14s} {'batch CPU ms':>13s}")
    for name, (cpu, wall, rate, batch_cpu) in results.items():
        print(f"{name:16s} {cpu:12.3f} {wall:13.3f} {rate:14,.0f} {batch_cpu:13.3f}")
    print(f"{'wire floor':16s} {floor[0]:12.3f} {floor[1]:13.3f}   (raw CreateTask + WatchTask + DoGet)")
    print(
        f"ratios (flamepy / ours): sequential CPU {base[0] / ours[0]:.2f}x (target >= 3x, ours <= 0.4 ms), "
        f"batch calls/s {ours[2] / base[2]:.2f}x (target >= 2x), batch CPU {base[3] / ours[3]:.2f}x"
    )
    from flamepy_fake import FakeCluster

    loads: dict[str, dict[str, dict[str, float]]] = {}
    with _project(), FakeCluster(executors="thread") as cluster:
        loads["flamepy_runner"] = _rpc_load(
            lambda name: Runner(name, config=cluster.config), cluster, args.quick
        )
        os.environ.update(cluster.env)
        reset_flamepy_clients()
        loads["flamepy 0.6.0"] = _rpc_load(FlamepyRunner, cluster, args.quick)
        reset_flamepy_clients()
    print("session-manager RPCs per call, by method (in-process fake, thread instances)")
    for workload in loads["flamepy_runner"]:
        for name, load in loads.items():
            rpcs = ", ".join(f"{m} {n:.3f}" for m, n in load[workload].items())
            print(f"  {workload:16s} {name:16s} {sum(load[workload].values()):6.3f}: {rpcs}")
    if args.profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
