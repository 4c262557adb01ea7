"""Object cache benchmarks: latency, throughput next to raw Arrow Flight, and server memory.

Usage::

    python benchmarks/bench_cache.py [--quick]

Servers run in subprocesses (so client and server do not share a GIL, and the server's resident
memory can be read from /proc). Prints one table; speed is reported as figures and ratios, never
asserted.

* round trip: median put+get of a 1 KiB object through flamepy_runner's CacheClient, flamepy
  0.6.0's module functions, and a raw pyarrow Flight do_put/do_get, all against the fake cache
  (raw Flight against a trivial in-memory Flight server).
* throughput: a 64 MiB and a 512 MiB ``bytes`` object and a 512 MiB numpy array, put and get
  through CacheClient against the fake cache, next to raw do_put/do_get of the same bytes to the
  trivial server. CacheClient figures include encoding and decoding: pickled ``bytes`` cost one
  copy each way, numpy arrays one copy on put and none on get.
* memory: the fake cache's resident-set growth at peak (VmHWM) while receiving, holding and
  serving the 512 MiB object, relative to the object size.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

MIB = 1024 * 1024
GRPC_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


# --------------------------------------------------------------------------- server side


class RawFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    """The floor: keeps each upload's batches in a dict and streams them back."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.tables: dict[bytes, pa.Table] = {}

    def do_put(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        self.tables[descriptor.path[0]] = reader.read_all()

    def do_get(self, context: Any, ticket: Any) -> Any:
        return flight.RecordBatchStream(self.tables[ticket.ticket])


def _memory() -> tuple[int, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def serve(kind: str) -> None:
    """Run a server and answer ``mem`` / ``reset`` / ``quit`` on stdin."""
    if kind == "fake":
        from flamepy_fake._cache._server import FakeObjectCache

        cache = FakeObjectCache().start()
        endpoint, stop = cache.endpoint, cache.stop
    else:
        raw = RawFlightServer("grpc://127.0.0.1:0")
        endpoint, stop = f"grpc://127.0.0.1:{raw.port}", raw.shutdown
    print(endpoint, flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "mem":
            rss, hwm = _memory()
            print(f"{rss} {hwm}", flush=True)
        elif command == "reset":
            # Linux resets VmHWM to the current RSS when "5" is written to clear_refs.
            try:
                Path("/proc/self/clear_refs").write_text("5")
                print("ok", flush=True)
            except OSError:
                print("unsupported", flush=True)
        elif command == "quit":
            break
    stop()


class ServerProcess:
    """A benchmark server in a child process."""

    def __init__(self, kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.endpoint = self.proc.stdout.readline().strip()
        if not self.endpoint:
            raise RuntimeError(f"{kind} server failed to start")

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def memory(self) -> tuple[int, int]:
        rss, hwm = self._ask("mem").split()
        return int(rss), int(hwm)

    def reset_peak(self) -> bool:
        return self._ask("reset") == "ok"

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._ask("quit")
        self.proc.wait(30)


@contextlib.contextmanager
def server(kind: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(kind)
    try:
        yield proc
    finally:
        proc.close()


# --------------------------------------------------------------------------- client side


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    for _ in range(min(5, runs)):
        fn()
    return statistics.median(timed(fn)[0] for _ in range(runs)) * 1000


def raw_client(endpoint: str) -> flight.FlightClient:
    return flight.FlightClient(endpoint, generic_options=GRPC_OPTIONS)


def raw_put(client: flight.FlightClient, name: bytes, payload: pa.Buffer) -> None:
    schema = pa.schema([("data", pa.binary())])
    offsets = pa.array([0, payload.size], type=pa.int32()).buffers()[1]
    column = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, payload])
    writer, _ = client.do_put(flight.FlightDescriptor.for_path(name), schema)
    writer.write_batch(pa.record_batch([column], schema=schema))
    writer.close()


def raw_get(client: flight.FlightClient, name: bytes) -> pa.Buffer:
    table = client.do_get(flight.Ticket(name)).read_all()
    return table.column(0).chunk(0).buffers()[2]


def flamepy_module(endpoint: str) -> Any:
    home = tempfile.mkdtemp(prefix="bench-cache-home-")
    os.environ["HOME"] = home
    os.environ["FLAME_CACHE_ENDPOINT"] = endpoint
    os.environ.pop("FLAME_CACHE_STORAGE", None)
    from flamepy.core import cache as fc

    fc._context_cache = None
    fc._client_pool.clear()
    fc._object_cache.clear()
    return fc


def bench_round_trip(runs: int) -> list[tuple[str, str]]:
    from flamepy_runner import FlameConfig
    from flamepy_runner._cache import CacheClient

    obj = os.urandom(1024)
    rows: list[tuple[str, str]] = []
    with server("fake") as fake, CacheClient(FlameConfig(cache_endpoint=fake.endpoint, timeout=30)) as ours:

        def ours_rt() -> None:
            ref = ours.put_object("bench/rt", obj)
            assert ours.get_object(ref) == obj

        contenders: dict[str, Callable[[], None]] = {"ours": ours_rt}
        try:
            fc = flamepy_module(fake.endpoint)

            def flamepy_rt() -> None:
                ref = fc.put_object("bench/rt", obj)
                assert fc.get_object(ref) == obj

            contenders["flamepy"] = flamepy_rt
        except ImportError:
            pass
        # Alternate rounds so neither side alone pays for warm-up or a noisy neighbour.
        medians: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(3):
            for name, fn in contenders.items():
                medians[name].append(median_ms(fn, max(1, runs // 3)))
        best = {name: min(values) for name, values in medians.items()}
    with server("raw") as raw:
        client = raw_client(raw.endpoint)
        buf = pa.py_buffer(obj)

        def raw_rt() -> None:
            raw_put(client, b"rt", buf)
            raw_get(client, b"rt")

        raw_ms = median_ms(raw_rt, runs)
        client.close()
    rows.append(("1 KiB put+get, flamepy_runner CacheClient (median)", f"{best['ours']:.2f} ms"))
    if "flamepy" in best:
        rows.append(("1 KiB put+get, flamepy 0.6.0 (median)", f"{best['flamepy']:.2f} ms"))
        rows.append(("  ratio flamepy_runner / flamepy", f"{best['ours'] / best['flamepy']:.2f}x"))
    rows.append(("1 KiB put+get, raw Flight to trivial server (median)", f"{raw_ms:.2f} ms"))
    return rows


def bench_throughput(size: int, reps: int, kind: str = "bytes") -> list[tuple[str, str]]:
    """Best of ``reps`` timed transfers after one warm-up, each side against its own server.

    ``kind`` is the Python value CacheClient sends: ``bytes`` (cloudpickled: one copy each way)
    or ``numpy`` (the Arrow tensor fast path: one copy out, none back).
    """
    from flamepy_runner import FlameConfig
    from flamepy_runner._cache import CacheClient

    raw_bytes = os.urandom(MIB) * (size // MIB)
    payload: Any = raw_bytes
    if kind == "numpy":
        import numpy as np

        payload = np.frombuffer(raw_bytes, dtype=np.uint8).copy()
    label = f"{size // MIB} MiB {kind}"
    put_ours, get_ours, put_raw, get_raw = [], [], [], []
    with server("fake") as fake, CacheClient(FlameConfig(cache_endpoint=fake.endpoint, timeout=600)) as ours:
        for rep in range(reps + 1):
            ours.delete_objects("bench/tp")  # hold one copy at a time on the server
            put_s, ref = timed(lambda: ours.put_object("bench/tp", payload))
            get_s, got = timed(lambda ref=ref: ours.get_object(ref.with_version(0)))
            assert len(got) == size
            del got
            if rep:  # rep 0 warms up both processes
                put_ours.append(put_s)
                get_ours.append(get_s)
    with server("raw") as raw:
        client = raw_client(raw.endpoint)
        buf = pa.py_buffer(raw_bytes)
        for rep in range(reps + 1):
            put_s, _ = timed(lambda: raw_put(client, b"tp", buf))
            get_s, got_buf = timed(lambda: raw_get(client, b"tp"))
            assert got_buf.size == size
            del got_buf
            if rep:
                put_raw.append(put_s)
                get_raw.append(get_s)
        client.close()

    def mbps(times: list[float]) -> float:
        return size / 1e6 / min(times)

    return [
        (f"{label} put, CacheClient / raw Flight", f"{mbps(put_ours):.0f} / {mbps(put_raw):.0f} MB/s"),
        ("  time ratio CacheClient / raw (target <= 1.5x)", f"{min(put_ours) / min(put_raw):.2f}x"),
        (f"{label} get, CacheClient / raw Flight", f"{mbps(get_ours):.0f} / {mbps(get_raw):.0f} MB/s"),
        ("  time ratio CacheClient / raw (target <= 1.5x)", f"{min(get_ours) / min(get_raw):.2f}x"),
    ]


def bench_memory(size: int) -> list[tuple[str, str]]:
    """Resident growth of a fresh fake cache receiving, holding and serving one object."""
    from flamepy_runner import FlameConfig
    from flamepy_runner._cache import CacheClient

    payload = os.urandom(MIB) * (size // MIB)
    label = f"{size // MIB} MiB"
    with server("fake") as fake, CacheClient(FlameConfig(cache_endpoint=fake.endpoint, timeout=600)) as ours:
        base_rss, _ = fake.memory()
        exact_peaks = fake.reset_peak()
        ref = ours.put_object("bench/mem", payload)
        held_rss, put_peak = fake.memory()
        fake.reset_peak()
        got = ours.get_object(ref)
        assert len(got) == size
        del got
        _, get_peak = fake.memory()
    peak = max(put_peak, get_peak) - base_rss
    note = "" if exact_peaks else " (VmHWM since start: clear_refs unsupported)"
    return [
        (f"fake cache RSS growth holding {label}", f"{(held_rss - base_rss) / MIB:.0f} MiB"),
        (
            f"fake cache peak RSS growth, put+get of {label}",
            f"{peak / MIB:.0f} MiB = {peak / size:.2f}x object (target <= 2x){note}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--serve", choices=["fake", "raw"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    runs = 50 if args.quick else 300
    rows = bench_round_trip(runs)
    rows += bench_throughput(64 * MIB, 2 if args.quick else 5)
    rows += bench_throughput(512 * MIB, 1 if args.quick else 2)
    rows += bench_throughput(512 * MIB, 1 if args.quick else 2, kind="numpy")
    rows += bench_memory(512 * MIB)
    width = max(len(name) for name, _ in rows)
    print(f"{'benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
