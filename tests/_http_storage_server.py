"""A tiny HTTP package store for tests: PUT, GET and DELETE of any path, kept in memory.

Run as ``python _http_storage_server.py``: it binds a free port on 127.0.0.1, prints
``http://127.0.0.1:<port>`` on stdout and serves until killed. Paths under ``/status/<code>/``
answer every method with that status and the body ``injected failure <code>``, so tests can
provoke refusals. ``GET /_log`` returns the requests seen so far, one ``METHOD path length``
line each (length is the request body's Content-Length, or ``-``).
"""

from __future__ import annotations

import http.server
import sys
import threading

_STORE: dict[str, bytes] = {}
_LOG: list[str] = []
_LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    """Stores bodies by path."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def _answer(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _injected(self) -> bool:
        parts = self.path.split("/")
        if len(parts) > 2 and parts[1] == "status" and parts[2].isdigit():
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._answer(int(parts[2]), f"injected failure {parts[2]}".encode())
            return True
        return False

    def _record(self) -> None:
        with _LOCK:
            _LOG.append(f"{self.command} {self.path} {self.headers.get('Content-Length', '-')}")

    def do_PUT(self) -> None:
        self._record()
        if self._injected():
            return
        length = self.headers.get("Content-Length")
        if length is None:
            self._answer(411, b"Content-Length required")
            return
        data = self.rfile.read(int(length))
        if len(data) < int(length):  # the client gave up mid-body: store nothing
            self.close_connection = True
            return
        with _LOCK:
            created = self.path not in _STORE
            _STORE[self.path] = data
        self._answer(201 if created else 204)

    def do_GET(self) -> None:
        if self.path == "/_log":
            with _LOCK:
                self._answer(200, "".join(line + "\n" for line in _LOG).encode())
            return
        self._record()
        if self._injected():
            return
        with _LOCK:
            data = _STORE.get(self.path)
        if data is None:
            self._answer(404, b"not found")
        else:
            self._answer(200, data)

    def do_DELETE(self) -> None:
        self._record()
        if self._injected():
            return
        with _LOCK:
            found = _STORE.pop(self.path, None) is not None
        self._answer(204 if found else 404, b"" if found else b"not found")


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
