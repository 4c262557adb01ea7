"""The object cache's gRPC front: refusals reach clients as v0.6.0 sends them (no traceback)."""

from __future__ import annotations

import grpc
import pyarrow.flight as flight
import pytest

from flamepy_fake._cache_front import clean_message
from flamepy_fake._cache_server import FakeObjectCache


@pytest.mark.parametrize(
    ("details", "trailers", "expected"),
    [
        ("boom. Detail: Python exception: Traceback ...", [("x-arrow-status-message-bin", b"boom")], "boom"),
        ("boom. Detail: Python exception: Traceback ...", [], "boom"),
        ("Invalid version column. Detail: Internal", None, "Invalid version column"),
        ("plain", [("other", "x")], "plain"),
        (None, None, ""),
    ],
)
def test_clean_message(details: str | None, trailers: object, expected: str) -> None:
    assert clean_message(details, trailers) == expected


def test_a_refusal_is_the_bare_status_without_arrow_trailers() -> None:
    with FakeObjectCache() as cache:
        channel = grpc.insecure_channel(f"127.0.0.1:{cache.port}")
        try:
            do_get = channel.unary_stream("/arrow.flight.protocol.FlightService/DoGet")
            ticket = b"\n\x0ba/s/missing"  # Ticket{ticket: "a/s/missing"}
            with pytest.raises(grpc.RpcError) as exc:
                list(do_get(ticket, timeout=10))
            error = exc.value
            assert (error.code(), error.details()) == (
                grpc.StatusCode.NOT_FOUND,
                "object <a/s/missing> not found",
            )
            assert not [k for k, _ in error.trailing_metadata() or () if k.startswith("x-arrow-")]
        finally:
            channel.close()


def test_pyarrow_sees_what_a_real_cache_sends() -> None:
    with FakeObjectCache() as cache:
        client = flight.FlightClient(cache.endpoint)
        try:
            with pytest.raises(KeyError) as exc:  # pyarrow.lib.ArrowKeyError
                client.do_get(flight.Ticket(b"a/s/missing")).read_all()
            assert str(exc.value).startswith(
                "Flight returned not found error, with message: object <a/s/missing> not found. "
                "gRPC client debug context: "
            )
            assert "Traceback" not in str(exc.value)
        finally:
            client.close()
