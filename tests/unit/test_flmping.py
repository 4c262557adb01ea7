"""The fake's flmping-service: v0.6.0's request parsing (serde_json's texts) and reply."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from flamepy_fake._flmping import PingError, PingService, parse_request, ping
from flamepy_runner._proto import pb


@pytest.mark.parametrize(
    ("data", "parsed"),
    [
        (None, (None, None)),
        (b"", (None, None)),
        (b"{}", (None, None)),
        (b'{"duration":null}', (None, None)),
        (b'{"foo":1}', (None, None)),  # unknown keys are ignored
        (b'{"foo":{"a":[1,"x",null,true]},"memory":3}', (None, 3)),
        (b'{"memory":1048576,"duration":20}', (20, 1048576)),
        (b' { "duration" : 5 } \n', (5, None)),
        (b"[5,0]", (5, 0)),  # serde's array form
        (b"[null,7]", (None, 7)),
        (b'{"duration":18446744073709551615}', (2**64 - 1, None)),  # u64::MAX
    ],
)
def test_accepted_requests(data: bytes | None, parsed: tuple[int | None, int | None]) -> None:
    assert parse_request(data) == parsed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # The probed table of v0.6.0.md section 5, verbatim.
        (b"ping", "expected value at line 1 column 1"),
        (b"null", "invalid type: null, expected struct PingRequest at line 1 column 4"),
        (b'"str"', 'invalid type: string "str", expected struct PingRequest at line 1 column 5'),
        (b'{"duration":"x"}', 'invalid type: string "x", expected u64 at line 1 column 15'),
        (b'{"duration":-1}', "invalid value: integer `-1`, expected u64 at line 1 column 14"),
        (b'{"duration":1.5}', "invalid type: floating point `1.5`, expected u64 at line 1 column 15"),
        (b"[5]", "invalid length 1, expected struct PingRequest with 2 elements at line 1 column 3"),
        (b"{} x", "trailing characters at line 1 column 4"),
        # serde_json's rules beyond the table.
        (b" ", "EOF while parsing a value at line 1 column 1"),
        (b"{", "EOF while parsing an object at line 1 column 1"),
        (b"5", "invalid type: integer `5`, expected struct PingRequest at line 1 column 1"),
        (b"true", "invalid type: boolean `true`, expected struct PingRequest at line 1 column 4"),
        (b'{"duration":[1]}', "invalid type: sequence, expected u64 at line 1 column 12"),
        (b'{"duration":1,}', "trailing comma at line 1 column 15"),
        (b'{"duration":1 "memory":2}', "expected `,` or `}` at line 1 column 15"),
        (b'{"duration":1,"duration":2}', "duplicate field `duration` at line 1 column 24"),
        (b"[]", "invalid length 0, expected struct PingRequest with 2 elements at line 1 column 2"),
        (b'{\n  "memory": nux\n}', "expected ident at line 2 column 15"),
    ],
)
def test_refused_requests_carry_serde_jsons_text(data: bytes, message: str) -> None:
    with pytest.raises(PingError) as exc:
        parse_request(data)
    assert str(exc.value) == message


def test_reply_names_the_host_the_time_and_the_memory() -> None:
    reply = ping(b'{"memory":1048576,"duration":20}', host="fem-3")
    match = re.fullmatch(
        rb'\{"message":"Completed on <fem-3> in <(\d+)> milliseconds with <1048576> memory"\}', reply
    )
    assert match is not None, reply
    assert int(match.group(1)) >= 20
    assert ping(None, host="h") == b'{"message":"Completed on <h> in <0> milliseconds with <0> memory"}'


def test_service_fails_the_task_with_the_parse_error() -> None:
    service = PingService()
    with pytest.raises(PingError, match=r"^expected value at line 1 column 1$"):
        service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s", input=b"ping"))
    out = json.loads(service.on_task_invoke(pb.TaskContext(task_id="2", session_id="s")))
    assert out == {"message": f"Completed on <{socket.gethostname()}> in <0> milliseconds with <0> memory"}


def test_kill_ends_a_sleeping_ping() -> None:
    service = PingService()
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (
            service.on_task_invoke(pb.TaskContext(task_id="1", session_id="s", input=b'{"duration":600000}')),
            done.set(),
        ),
        daemon=True,
    )
    worker.start()
    assert not done.wait(0.2)  # blocked in its 10-minute sleep
    service.kill()
    worker.join(30)
    assert done.is_set()
