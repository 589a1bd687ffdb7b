"""A local HTTP server for uri tests: ``/m/slow`` drips one byte every 0.2 s for a minute
(httpx's per-read timeout never trips), ``/m/hop`` redirects to a doubly encoded ``..``,
any other path is a small page. Importable as ``from _drip import drip_server``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Drip(BaseHTTPRequestHandler):
    stop = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path == "/m/hop":
            self.send_response(302)
            self.send_header("Location", "/m/%252e%252e/secret.txt")
            self.end_headers()
            return
        body = b"The lamp of Gullspire is lit at dusk."
        self.send_response(200)
        self.send_header("Content-Length", str(300 if self.path == "/m/slow" else len(body)))
        self.end_headers()
        if self.path != "/m/slow":
            self.wfile.write(body)
            return
        for _ in range(300):
            if self.stop.wait(0.2):
                return
            self.wfile.write(b"x")
            self.wfile.flush()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def drip_server() -> Iterator[str]:
    """The server's base URL while the block runs; a drip in progress ends with it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    _Drip.stop.clear()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Drip.stop.set()
        server.shutdown()
        server.server_close()
