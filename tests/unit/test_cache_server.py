"""FakeObjectCache lifecycle: start/stop, addresses, TLS, storage and limits through the server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_runner import FlameConfig, NotFoundError
from flamepy_runner._cache import CacheClient, ObjectRef


def client_for(cache: FakeObjectCache) -> CacheClient:
    return CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=10))


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stop_leaves_no_threads_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    cache = FakeObjectCache().start()
    port = cache.port
    with CacheClient(FlameConfig(cache_endpoint=cache.endpoint, timeout=10)) as client:
        ref = client.put_object("a/s", "x")
        assert client.get_object(ref) == "x"
    assert _port_open(port)
    cache.stop()
    cache.stop()  # idempotent
    assert not _port_open(port)
    assert set(threading.enumerate()) == before


def test_lifecycle_misuse_is_explained() -> None:
    cache = FakeObjectCache()
    with pytest.raises(RuntimeError, match="not started"):
        _ = cache.endpoint
    with cache:
        with pytest.raises(RuntimeError, match="already started"):
            cache.start()
        assert repr(cache).startswith("<FakeObjectCache grpc://127.0.0.1:")
    with pytest.raises(RuntimeError, match="was stopped"):
        cache.start()


def test_two_caches_are_independent() -> None:
    with FakeObjectCache() as one, FakeObjectCache() as two:
        cfg = FlameConfig(cache_endpoint=one.endpoint, timeout=10)
        with CacheClient(cfg) as client:
            client.upload_object("a/s/shared", __file__)
        assert one.store.list_keys() == ["a/s/shared"]
        assert two.store.list_keys() == []


def test_wildcard_host_never_advertises_0000() -> None:
    with FakeObjectCache("0.0.0.0") as cache:
        assert "0.0.0.0" not in cache.endpoint
        host = cache.endpoint.split("//", 1)[1].rsplit(":", 1)[0]
        with CacheClient(FlameConfig(cache_endpoint=f"grpc://127.0.0.1:{cache.port}", timeout=10)) as client:
            ref = client.put_object("a/s", 1)
        assert ref.endpoint == cache.endpoint and host in ref.endpoint


def test_advertise_host_is_used_verbatim() -> None:
    with FakeObjectCache(advertise_host="cache.example") as cache:
        assert cache.endpoint == f"grpc://cache.example:{cache.port}"
        info = flight.FlightClient(f"grpc://127.0.0.1:{cache.port}").get_flight_info(
            flight.FlightDescriptor.for_path("a/s/x")
        )
        assert info.endpoints[0].locations[0].uri.decode() == cache.endpoint


def test_storage_survives_a_restart(tmp_path: Path) -> None:
    with FakeObjectCache(storage_dir=tmp_path) as cache, client_for(cache) as client:
        ref = client.put_object("app/ssn", {"k": 1})
        ref = client.patch_object(ref, 2)
    assert (tmp_path / f"{ref.key}.arrow").is_file()
    assert (tmp_path / f"{ref.key}.deltas" / "0.arrow").is_file()
    with FakeObjectCache(storage_dir=tmp_path) as cache, client_for(cache) as client:
        moved = ObjectRef(cache.endpoint, ref.key, 0)
        assert client.get_object(moved, lambda base, patches: (base, patches)) == ({"k": 1}, [2])


def test_memory_limit_evicts_older_objects() -> None:
    with FakeObjectCache(max_memory=3 * 1024 * 1024) as cache, client_for(cache) as client:
        first = client.put_object("a/s", b"1" * (2 * 1024 * 1024))
        second = client.put_object("a/s", b"2" * (2 * 1024 * 1024))
        assert client.get_object(second)[:1] == b"2"
        with pytest.raises(NotFoundError):
            client.get_object(first)


@pytest.fixture(name="tls_pair")
def _tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_with_ca_from_config(tls_pair: tuple[Path, Path]) -> None:
    cert, key = tls_pair
    with FakeObjectCache(tls_certificates=(cert.read_bytes(), key.read_bytes())) as cache:
        assert cache.endpoint.startswith("grpc+tls://127.0.0.1:")
        config = FlameConfig(
            cache_endpoint=f"grpcs://127.0.0.1:{cache.port}", cache_ca_file=str(cert), timeout=10
        )
        with CacheClient(config) as client:
            ref = client.put_object("a/s", pa.array([1, 2]))
            assert client.get_object(ref).to_pylist() == [1, 2]


def test_port_in_use_is_an_os_error_naming_the_address() -> None:
    with FakeObjectCache() as first:
        second = FakeObjectCache(port=first.port)
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            second.start()
        second.stop()


def test_a_cache_miss_is_not_found_without_the_fakes_python_traceback() -> None:
    with (
        FakeObjectCache() as cache,
        flight.FlightClient(cache.endpoint) as client,
        pytest.raises(pa.ArrowKeyError) as info,
    ):
        client.do_get(flight.Ticket(b"app/ssn/0123")).read_all()
    # NOT_FOUND (ArrowKeyError) with the message; pyarrow's server adds only a class name.
    assert str(info.value) == (
        "object <app/ssn/0123> not found. Detail: Python exception: ObjectNotFound. "
        "gRPC client debug context: NOT_FOUND:object <app/ssn/0123> not found. "
        "Detail: Python exception: ObjectNotFound. "
        "Client context: IOError: Server never sent a data message. Detail: Internal"
    )


def test_a_refused_request_is_invalid_argument_without_the_fakes_python_traceback() -> None:
    with (
        FakeObjectCache() as cache,
        flight.FlightClient(cache.endpoint) as client,
        pytest.raises(pa.ArrowInvalid) as info,
    ):
        list(client.do_action(flight.Action("BOGUS", b"")))
    # INVALID_ARGUMENT (ArrowInvalid) with the message; pyarrow's server adds only a class name.
    assert str(info.value) == (
        "Unknown action type: BOGUS. Only DELETE is supported.. Detail: Python exception: InvalidRequest"
    )
