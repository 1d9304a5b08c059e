"""kernels._http: a loopback server in a thread answers, refuses non-loopback hosts, and is closed afterwards."""

import functools
import http.server
import urllib.request

import pytest

from kernels._http import serve_in_thread


def test_serves_a_folder_on_a_free_loopback_port_and_stops(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with serve_in_thread(handler) as server:
        port = server.server_address[1]
        assert server.server_address[0] == "127.0.0.1" and port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/a.txt", timeout=10) as r:
            assert r.read() == b"hello"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/a.txt", timeout=2)


def test_refuses_a_host_that_is_not_loopback():
    with pytest.raises(ValueError, match="^host:"):
        with serve_in_thread(http.server.SimpleHTTPRequestHandler, host="0.0.0.0"):
            pass
