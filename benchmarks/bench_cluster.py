"""FakeCluster speed: start+stop, import time, and a Frontend round trip next to a bare grpc echo.

Run: ``python benchmarks/bench_cluster.py [--quick]``. Prints one table with ratios; asserts
nothing (machines are noisy). Takes well under a minute.

* ``FakeCluster()`` start plus stop, median (target < 100 ms);
* ``import flamepy_fake`` in a fresh interpreter, median wall time over several runs, next to
  ``python -c pass`` (target < 300 ms);
* a unary ``GetSession`` through flamepy 0.6.0's client (``flamepy.get_session``), median, next to
  the same call through our own stub and to a bare grpcio echo server (one generic unary
  handler returning its request bytes) started in the same process: the physical limit here.
  The three are sampled interleaved, so a change in machine load affects them alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures

import grpc


def _median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def bench_start_stop(runs: int) -> float:
    from flamepy_fake import FakeCluster

    def once() -> None:
        FakeCluster().start().stop()

    return _median_ms(once, runs)


def bench_import(runs: int) -> tuple[float, float]:
    def run(code: str) -> Callable[[], object]:
        return lambda: subprocess.run([sys.executable, "-c", code], check=True)

    bare = _median_ms(run("pass"), runs, warmup=1)
    ours = _median_ms(run("import flamepy_fake"), runs, warmup=1)
    return ours, bare


def _echo_server() -> tuple[grpc.Server, int]:
    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {"Echo": grpc.unary_unary_rpc_method_handler(echo)},  # bytes in, bytes out (no codec)
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _interleaved_medians(calls: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median ms of each call, sampled in alternating order so load drift hits all alike."""
    for fn in calls.values():
        for _ in range(20):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(runs):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            start = time.perf_counter()
            calls[name]()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def bench_round_trips(runs: int) -> tuple[float, float, float]:
    import flamepy

    from flamepy_fake import FakeCluster
    from flamepy_fake.plugin import reset_flamepy_clients
    from flamepy_runner._proto import pb, rpc

    server, port = _echo_server()
    with FakeCluster() as cluster:
        os.environ.update(cluster.env)
        reset_flamepy_clients()
        ssn = flamepy.create_session("flmping", b"", session_id="bench-session")
        channel = grpc.insecure_channel(cluster.endpoint.removeprefix("http://"))
        stub = rpc.Stub(channel, pb.FRONTEND_SERVICE)
        request = pb.GetSessionRequest(session_id=ssn.id)
        echo_channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        echo = echo_channel.unary_unary("/bench.Echo/Echo")
        payload = request.SerializeToString()
        medians = _interleaved_medians(
            {
                "flamepy": lambda: flamepy.get_session(ssn.id),
                "ours": lambda: stub.GetSession(request, timeout=10),
                "echo": lambda: echo(payload, timeout=10),
            },
            runs,
        )
        echo_channel.close()
        channel.close()
        flamepy.close_session(ssn.id)
        reset_flamepy_clients()
    server.stop(None).wait()
    return medians["flamepy"], medians["ours"], medians["echo"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke test)")
    args = parser.parse_args()
    cluster_runs, import_runs, rpc_runs = (5, 3, 50) if args.quick else (30, 10, 1000)

    start_stop = bench_start_stop(cluster_runs)
    imp, bare = bench_import(import_runs)
    via_flamepy, via_ours, echo = bench_round_trips(rpc_runs)

    vs_echo = f"grpc echo: {echo:.3f} ms"
    rows = [
        ("FakeCluster() start+stop", start_stop, "target < 100 ms", start_stop / 100.0, "x target"),
        ("python -c 'import flamepy_fake'", imp, "target < 300 ms", imp / 300.0, "x target"),
        (
            "python -c pass (interpreter alone)",
            bare,
            f"the import adds {imp - bare:.1f} ms",
            bare / imp,
            "x import",
        ),
        ("GetSession via flamepy 0.6.0", via_flamepy, vs_echo, via_flamepy / echo, "x echo"),
        ("GetSession via our stub", via_ours, vs_echo, via_ours / echo, "x echo"),
        ("bare grpcio echo (same run)", echo, "the limit here", 1.0, "x echo"),
    ]
    print(f"{'benchmark':38} {'median ms':>10}  {'compared with':28} {'ratio':>8}")
    for name, ms, against, ratio, unit in rows:
        print(f"{name:38} {ms:10.3f}  {against:28} {ratio:7.2f} {unit}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
