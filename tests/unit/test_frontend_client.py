"""FrontendClient: endpoints, deadlines and the one gRPC-error boundary, against the fake."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from flamepy_fake import FakeCluster
from flamepy_runner import (
    AlreadyExistsError,
    ConfigError,
    DeadlineExceededError,
    FlameConfig,
    FlameError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from flamepy_runner._frontend import FrontendClient, channel_target, rpc_errors
from flamepy_runner._proto import pb


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


@pytest.fixture
def client(cluster: FakeCluster) -> Iterator[FrontendClient]:
    with FrontendClient(cluster.config) as c:
        yield c


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("http://127.0.0.1:8080", ("127.0.0.1:8080", False)),
        ("https://flame.example:443", ("flame.example:443", True)),
        ("https://flame.example", ("flame.example:443", True)),
        ("http://flame", ("flame:80", False)),
        ("http://[::1]:8080", ("[::1]:8080", False)),
    ],
)
def test_channel_target(endpoint: str, target: tuple[str, bool]) -> None:
    assert channel_target(endpoint) == target


@pytest.mark.parametrize("endpoint", ["grpc://127.0.0.1:8080", "127.0.0.1:8080", "http://", "http:///x"])
def test_bad_endpoint(endpoint: str) -> None:
    with pytest.raises(ConfigError) as err:
        channel_target(endpoint)
    assert str(err.value) == (
        f"session manager endpoint {endpoint!r} is not an http://host:port or https://host:port URL"
    )


def test_unknown_application_is_none(client: FrontendClient) -> None:
    assert client.get_application("no-such-app") is None
    assert client.get_application("flmrun").metadata.name == "flmrun"


def test_not_found_names_the_session(client: FrontendClient, cluster: FakeCluster) -> None:
    with pytest.raises(NotFoundError) as err:
        client.get_session("ghost")
    assert str(err.value) == "cannot get session 'ghost': ghost"
    assert (err.value.session_id, err.value.endpoint) == ("ghost", cluster.endpoint)


def test_invalid_argument(client: FrontendClient) -> None:
    client.open_session("fc-ssn", pb.SessionSpec(application="flmping"))
    try:
        with pytest.raises(InvalidArgumentError) as err:
            client.get_task("fc-ssn", "not-a-number")
        assert str(err.value) == "cannot get task not-a-number of session 'fc-ssn': invalid task id"
        assert err.value.task_id == "not-a-number"
    finally:
        client.close_session("fc-ssn")


def test_result_refusals(client: FrontendClient) -> None:
    spec = pb.ApplicationSpec(command="/bin/true")
    client.register_application("fc-app", spec)
    try:
        with pytest.raises(AlreadyExistsError) as err:
            client.register_application("fc-app", spec)
        assert str(err.value) == "cannot register application 'fc-app': Application 'fc-app' already exists"
    finally:
        client.unregister_application("fc-app")
    with pytest.raises(InvalidArgumentError) as bad:
        client.register_application("-bad", spec)
    assert str(bad.value) == (
        "cannot register application '-bad': application name cannot start with '.' or '-': -bad"
    )


def test_unreachable_and_closed() -> None:
    config = FlameConfig(endpoint="http://127.0.0.1:1", timeout=2)
    with FrontendClient(config) as client:
        with pytest.raises(UnavailableError) as err:
            client.get_session("s")
        assert str(err.value).startswith(
            "cannot get session 's': session manager http://127.0.0.1:1 is unreachable: "
        )
    with pytest.raises(UsageError) as closed:
        client.get_session("s")
    assert str(closed.value) == "cannot get session 's': the client of http://127.0.0.1:1 is closed"
    client.close()  # idempotent


# -- the error-mapping boundary: every gRPC status code -----------------------------------------

_ENDPOINT = "http://sm.example:8080"
_MAPPED = {
    "NOT_FOUND": (NotFoundError, "cannot open session 's-1': boom"),
    "ALREADY_EXISTS": (AlreadyExistsError, "cannot open session 's-1': boom"),
    "INVALID_ARGUMENT": (InvalidArgumentError, "cannot open session 's-1': boom"),
    "OUT_OF_RANGE": (InvalidArgumentError, "cannot open session 's-1': boom"),
    "FAILED_PRECONDITION": (InvalidStateError, "cannot open session 's-1': boom"),
    "UNAVAILABLE": (
        UnavailableError,
        f"cannot open session 's-1': session manager {_ENDPOINT} is unreachable: boom",
    ),
    "DEADLINE_EXCEEDED": (
        DeadlineExceededError,
        f"cannot open session 's-1': no answer from session manager {_ENDPOINT} in time: boom",
    ),
    **{
        name: (InternalError, "cannot open session 's-1': boom")
        for name in (
            "CANCELLED",
            "UNKNOWN",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "ABORTED",
            "UNIMPLEMENTED",
            "INTERNAL",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        )
    },
}


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_the_mapping_names_every_status_code_but_ok() -> None:
    assert set(_MAPPED) == {c.name for c in grpc.StatusCode} - {"OK"}


@pytest.mark.parametrize("name", sorted(_MAPPED))
def test_every_status_code_maps_to_one_error_with_the_full_text(name: str) -> None:
    cls, text = _MAPPED[name]
    refused = _Refused(grpc.StatusCode[name], "boom")
    with (
        pytest.raises(FlameError) as err,
        rpc_errors("cannot open session 's-1'", _ENDPOINT, session_id="s-1"),
    ):
        raise refused
    assert type(err.value) is cls
    assert str(err.value) == err.value.message == text
    assert (err.value.endpoint, err.value.session_id, err.value.task_id) == (_ENDPOINT, "s-1", None)
    assert err.value.__cause__ is refused


def test_an_error_without_a_code_or_details_is_internal_with_its_text() -> None:
    class Bare(grpc.RpcError):
        def __str__(self) -> str:
            return "no code"

    with pytest.raises(InternalError) as err, rpc_errors("cannot list", _ENDPOINT):
        raise Bare()
    assert str(err.value) == "cannot list: no code"


def test_our_own_errors_pass_the_boundary_unchanged() -> None:
    mine = UsageError("already mapped")
    with pytest.raises(UsageError) as err, rpc_errors("cannot list", _ENDPOINT):
        raise mine
    assert err.value is mine
