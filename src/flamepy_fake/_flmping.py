"""The fake's ``flmping``: upstream's ``flmping-service`` (v0.6.0), served from Python.

A task's input is JSON for ``PingRequest { duration: Option<u64>, memory: Option<u64> }`` (no
input, empty bytes, ``{}`` and unknown keys mean the defaults; serde's array form
``[duration, memory]`` is accepted too). The service allocates ``memory`` zero bytes, sleeps
``duration`` milliseconds, and answers compact JSON
``{"message":"Completed on <host> in <ms> milliseconds with <bytes> memory"}`` (the angle
brackets are literal). Input that does not parse fails the task with serde_json's text, e.g.
``expected value at line 1 column 1``: :func:`parse_request` reproduces serde_json's messages
and positions for this one struct.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time

from flamepy_runner._for_fake import pb

__all__ = ["PingError", "PingService", "parse_request", "ping"]

_STRUCT = "struct PingRequest"
_FIELDS = ("duration", "memory")
_WHITESPACE = b" \n\t\r"
_U64_MAX = 2**64 - 1


class PingError(ValueError):
    """Input that serde_json refuses; ``str()`` is serde_json's text with its position."""


class _Fail:
    """A serde_json error before its position is attached (``peek``: at the next byte)."""

    def __init__(self, text: str, *, peek: bool = False) -> None:
        self.text = text
        self.peek = peek


def _float_text(value: float) -> str:
    text = repr(value)
    if math.isfinite(value) and not any(c in text for c in ".eE"):
        text += ".0"
    return text


class _Parser:
    """A serde_json reader over bytes, tracking its index as serde_json does."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.i = 0

    # -- positions and errors ------------------------------------------------------------------

    def error(self, fail: _Fail) -> PingError:
        index = min(self.i + 1, len(self.data)) if fail.peek else self.i
        line, column = 1, 0
        for byte in self.data[:index]:
            if byte == 0x0A:
                line, column = line + 1, 0
            else:
                column += 1
        return PingError(f"{fail.text} at line {line} column {column}")

    def fail(self, text: str, *, peek: bool = False) -> PingError:
        """A serde_json error positioned now (``peek``: at the next byte), as its ``error``/``peek_error``."""
        return self.error(_Fail(text, peek=peek))

    def peek(self) -> int | None:
        return self.data[self.i] if self.i < len(self.data) else None

    def skip_ws(self) -> int | None:
        while self.i < len(self.data) and self.data[self.i] in _WHITESPACE:
            self.i += 1
        return self.peek()

    # -- scalars -------------------------------------------------------------------------------

    def ident(self, rest: bytes) -> None:
        for expected in rest:
            got = self.peek()
            if got is None:
                raise self.fail("EOF while parsing a value")
            self.i += 1
            if got != expected:
                raise self.fail("expected ident")

    def string(self) -> str:
        start = self.i  # at the opening quote
        self.i += 1
        while True:
            byte = self.peek()
            if byte is None:
                raise self.fail("EOF while parsing a string")
            self.i += 1
            if byte == 0x22:
                break
            if byte == 0x5C:
                if self.peek() is None:
                    raise self.fail("EOF while parsing a string")
                self.i += 1
            elif byte < 0x20:
                raise self.fail("control character (\\u0000-\\u001F) found while parsing a string")
        raw = self.data[start : self.i]
        try:
            text: str = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise self.fail("invalid escape") from None
        return text

    def number(self) -> tuple[str, int | float]:
        """Parse a JSON number at the cursor; ('int', value) or ('float', value)."""
        start = self.i
        if self.peek() == 0x2D:
            self.i += 1
        first = self.peek()
        if first is None or not 0x30 <= first <= 0x39:
            raise self.fail("invalid number", peek=first is not None)
        self.i += 1
        if first == 0x30:
            nxt = self.peek()
            if nxt is not None and 0x30 <= nxt <= 0x39:
                raise self.fail("invalid number", peek=True)
        else:
            self._digits()
        is_float = False
        if self.peek() == 0x2E:
            self.i += 1
            if not self._digits():
                raise self.fail("invalid number", peek=self.peek() is not None)
            is_float = True
        if self.peek() in (0x65, 0x45):
            self.i += 1
            if self.peek() in (0x2B, 0x2D):
                self.i += 1
            if not self._digits():
                raise self.fail("invalid number", peek=self.peek() is not None)
            is_float = True
        text = self.data[start : self.i].decode()
        if not is_float:
            value = int(text)
            if -(2**63) <= value <= _U64_MAX:
                return "int", value
        return "float", float(text)

    def _digits(self) -> bool:
        start = self.i
        while (b := self.peek()) is not None and 0x30 <= b <= 0x39:
            self.i += 1
        return self.i > start

    # -- values --------------------------------------------------------------------------------

    def invalid_type(self, expected: str) -> PingError:
        """serde_json's ``peek_invalid_type``: describe (and consume) the value at the cursor."""
        byte = self.peek()
        if byte == 0x6E:
            self.i += 1
            self.ident(b"ull")
            what = "null"
        elif byte in (0x74, 0x66):
            self.i += 1
            self.ident(b"rue" if byte == 0x74 else b"alse")
            what = f"boolean `{'true' if byte == 0x74 else 'false'}`"
        elif byte == 0x2D or (byte is not None and 0x30 <= byte <= 0x39):
            kind, value = self.number()
            what = f"integer `{value}`" if kind == "int" else f"floating point `{_float_text(float(value))}`"
        elif byte == 0x22:
            what = f"string {json.dumps(self.string(), ensure_ascii=False)}"
        elif byte == 0x5B:
            what = "sequence"
        elif byte == 0x7B:
            what = "map"
        else:
            return self.fail("expected value", peek=True)
        return self.fail(f"invalid type: {what}, expected {expected}")

    def option_u64(self) -> int | None:
        byte = self.skip_ws()
        if byte is None:
            raise self.fail("EOF while parsing a value", peek=True)
        if byte == 0x6E:
            self.i += 1
            self.ident(b"ull")
            return None
        if byte == 0x2D or 0x30 <= byte <= 0x39:
            kind, value = self.number()
            if kind == "float":
                raise self.fail(f"invalid type: floating point `{_float_text(float(value))}`, expected u64")
            if int(value) < 0:
                raise self.fail(f"invalid value: integer `{value}`, expected u64")
            return int(value)
        raise self.invalid_type("u64")

    def ignore_value(self) -> None:
        byte = self.skip_ws()
        if byte is None:
            raise self.fail("EOF while parsing a value", peek=True)
        if byte == 0x6E:
            self.i += 1
            self.ident(b"ull")
        elif byte in (0x74, 0x66):
            self.i += 1
            self.ident(b"rue" if byte == 0x74 else b"alse")
        elif byte == 0x2D or 0x30 <= byte <= 0x39:
            self.number()
        elif byte == 0x22:
            self.string()
        elif byte == 0x5B:
            self.i += 1
            first = True
            while self._has_next(0x5D, first, "EOF while parsing a list"):
                first = False
                self.ignore_value()
            self.i += 1
        elif byte == 0x7B:
            self.i += 1
            first = True
            while self._has_next_key(first):
                first = False
                self.string()
                self._colon()
                self.ignore_value()
            self.i += 1
        else:
            raise self.fail("expected value", peek=True)

    def _has_next(self, close: int, first: bool, eof: str) -> bool:
        byte = self.skip_ws()
        if byte is None:
            raise self.fail(eof, peek=True)
        if byte == close:
            return False
        if byte == 0x2C and not first:
            self.i += 1
            byte = self.skip_ws()
        elif not first:
            raise self.fail("expected `,` or `]`", peek=True)
        if byte is None:
            raise self.fail("EOF while parsing a value", peek=True)
        if byte == close:
            raise self.fail("trailing comma", peek=True)
        return True

    def _has_next_key(self, first: bool) -> bool:
        byte = self.skip_ws()
        if byte is None:
            raise self.fail("EOF while parsing an object", peek=True)
        if byte == 0x7D:
            return False
        if byte == 0x2C and not first:
            self.i += 1
            byte = self.skip_ws()
        elif not first:
            raise self.fail("expected `,` or `}`", peek=True)
        if byte == 0x22:
            return True
        if byte == 0x7D:
            raise self.fail("trailing comma", peek=True)
        if byte is None:
            raise self.fail("EOF while parsing a value", peek=True)
        raise self.fail("key must be a string", peek=True)

    def _colon(self) -> None:
        byte = self.skip_ws()
        if byte == 0x3A:
            self.i += 1
            return
        raise self.fail("EOF while parsing an object" if byte is None else "expected `:`", peek=True)

    # -- the struct ----------------------------------------------------------------------------

    def request(self) -> tuple[int | None, int | None]:
        byte = self.skip_ws()
        if byte is None:
            raise self.fail("EOF while parsing a value", peek=True)
        if byte == 0x7B:
            self.i += 1
            result, error = self._map()
            self._end(0x7D, "EOF while parsing an object", error)
        elif byte == 0x5B:
            self.i += 1
            result, error = self._seq()
            self._end(0x5D, "EOF while parsing a list", error)
        else:
            raise self.invalid_type(_STRUCT)
        if error is not None:
            raise self.error(error)  # a visitor error is positioned after the closing bracket
        if self.skip_ws() is not None:
            raise self.fail("trailing characters", peek=True)
        return result

    def _end(self, close: int, eof: str, error: _Fail | None) -> None:
        """serde_json's end_map/end_seq; the visitor's own error wins over theirs."""
        byte = self.skip_ws()
        if byte == close:
            self.i += 1
            return
        if error is not None:
            return
        if byte is None:
            raise self.fail(eof, peek=True)
        if byte == 0x2C and close == 0x5D:
            self.i += 1
            raise self.fail("trailing comma" if self.skip_ws() == close else "trailing characters", peek=True)
        raise self.fail("trailing comma" if byte == 0x2C else "trailing characters", peek=True)

    def _map(self) -> tuple[tuple[int | None, int | None], _Fail | None]:
        values: dict[str, int | None] = {}
        first = True
        while self._has_next_key(first):
            first = False
            key = self.string()
            if key in _FIELDS:
                if key in values:
                    return (None, None), _Fail(f"duplicate field `{key}`")
                self._colon()
                values[key] = self.option_u64()
            else:
                self._colon()
                self.ignore_value()
        return (values.get("duration"), values.get("memory")), None

    def _seq(self) -> tuple[tuple[int | None, int | None], _Fail | None]:
        got: list[int | None] = []
        for _ in _FIELDS:
            if not self._has_next(0x5D, not got, "EOF while parsing a list"):
                return (None, None), _Fail(f"invalid length {len(got)}, expected {_STRUCT} with 2 elements")
            got.append(self.option_u64())
        return (got[0], got[1]), None


def parse_request(data: bytes | None) -> tuple[int | None, int | None]:
    """Parse a ping request as flmping-service does: ``(duration_ms, memory_bytes)``.

    Args:
        data: the task input; ``None`` or empty means the defaults.

    Raises:
        PingError: serde_json's text for input it refuses, e.g. ``expected value at line 1 column 1``.
    """
    if not data:
        return None, None
    return _Parser(data).request()


def ping(data: bytes | None, *, host: str, stop: threading.Event | None = None) -> bytes:
    """Serve one ping: hold ``memory`` zero bytes for ``duration`` ms, report the elapsed time.

    Args:
        data: the task input.
        host: the name reported as the node.
        stop: set it to cut the sleep short (the instance is being torn down).

    Raises:
        PingError: the input does not parse.
        MemoryError: the memory cannot be allocated (upstream's instance aborts instead).
    """
    duration, memory = parse_request(data)
    start = time.monotonic()
    try:
        held = bytearray(memory or 0)
    except (MemoryError, OverflowError):  # upstream aborts with Rust's text; the fake fails the task
        raise MemoryError(f"memory allocation of {memory} bytes failed") from None
    if duration:
        (stop or threading.Event()).wait(duration / 1000)
    elapsed = int((time.monotonic() - start) * 1000)
    message = f"Completed on <{host}> in <{elapsed}> milliseconds with <{len(held)}> memory"
    del held
    return json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False).encode()


class PingService:
    """The flmping instance hooks (see :class:`flamepy_runner._worker.InstanceService`)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._host = socket.gethostname()

    def on_session_enter(self, context: pb.SessionContext) -> None:
        """Nothing to prepare."""

    def on_task_invoke(self, context: pb.TaskContext) -> bytes:
        """Answer one ping (see :func:`ping`).

        Raises:
            PingError: the input does not parse (the task fails with serde_json's text).
        """
        data = context.input if context.HasField("input") else None
        return ping(data, host=self._host, stop=self._stop)

    def on_session_leave(self) -> None:
        """Nothing to release."""

    def kill(self) -> None:
        """End a ping that is sleeping (the instance is being torn down)."""
        self._stop.set()
