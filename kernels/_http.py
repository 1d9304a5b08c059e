"""One loopback HTTP server in a background thread, for the book's local pages and APIs (the rendered book in the
browser tests, the WebLLM page, the OpenAI-style endpoint). Nothing listens beyond the loopback interface."""

from __future__ import annotations

import contextlib
import http.server
import threading
from typing import Callable, Iterator

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def serve_in_thread(handler: Callable[..., http.server.BaseHTTPRequestHandler], host: str = "127.0.0.1",
                    port: int = 0) -> Iterator[http.server.ThreadingHTTPServer]:
    """Serve ``handler`` on ``host:port`` (0: a free port) until the block ends; yields the server, whose
    ``server_address[1]`` is the port. Raises ``ValueError`` for a host that is not a loopback address."""
    if host not in LOOPBACK:
        raise ValueError(f"host: expected a loopback address {LOOPBACK}, received {host!r}")
    server = http.server.ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
