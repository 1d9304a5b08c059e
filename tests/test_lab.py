"""`make lab`, tested the way a reader uses it: a headless JupyterLab on a free 127.0.0.1 port, every chapter
opened through the server's REST API with the book's kernel, one chapter run at SCALE="smoke" through that
kernel over the server's websocket, and nothing listening beyond 127.0.0.1. The server is stopped at the end,
also when a test fails (`booktools.lab.running_server`)."""

from __future__ import annotations

import json
import uuid

import nbformat
import pytest

from booktools import lab
from booktools.toc import ROOT, chapters

SMOKE_CHAPTER = "book/appendix/roofline.ipynb"  # the quickest at smoke scale


@pytest.fixture(scope="module")
def server():
    lab.install_kernel()
    with lab.running_server() as s:
        yield s


def test_the_kernelspec_is_the_books():
    spec = lab.kernelspec()
    assert spec["display_name"] == lab.DISPLAY_NAME and spec["argv"][1:3] == ["-m", "booktools.kernel"]
    assert "{connection_file}" in spec["argv"]


def test_the_server_offers_the_books_kernel(server):
    specs = server.api("api/kernelspecs")
    assert specs["kernelspecs"][lab.KERNEL_NAME]["spec"]["display_name"] == lab.DISPLAY_NAME


@pytest.mark.parametrize("nb", chapters(), ids=str)
def test_every_chapter_opens_with_the_books_kernel(server, nb):
    path = str(nb.relative_to("book"))
    model = server.api(f"api/contents/{path}?content=1")
    assert model["type"] == "notebook"
    name = model["content"]["metadata"]["kernelspec"]["name"]
    assert name == lab.KERNEL_NAME, f"{nb} asks for kernel {name!r}"
    session = server.api("api/sessions", "POST", {"path": path, "type": "notebook", "kernel": {"name": name}})
    try:
        assert session["kernel"]["name"] == lab.KERNEL_NAME
    finally:
        server.api(f"api/sessions/{session['id']}", "DELETE")


def _execute(ws, code: str, session: str, timeout_s: float = 120.0) -> tuple[str, list[str]]:
    """Run one cell over the kernel's websocket; returns (status, error texts)."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    errors, status, idle = [], None, False
    ws.settimeout(timeout_s)
    while status is None or not idle:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "error":
            errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        elif kind == "execute_reply":
            status = msg["content"]["status"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return status, errors


def test_a_chapter_runs_at_smoke_scale_through_the_servers_kernel(server):
    import websocket  # websocket-client, a dependency of jupyter_server

    path = SMOKE_CHAPTER.removeprefix("book/")
    session = server.api("api/sessions", "POST", {"path": path, "type": "notebook",
                                                  "kernel": {"name": lab.KERNEL_NAME}})
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels",
                                     header=[f"Authorization: token {server.token}"])
    try:
        nb = nbformat.read(str(ROOT / SMOKE_CHAPTER), as_version=4)
        ran = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            code = cell.source
            if "parameters" in cell.metadata.get("tags", []):
                code += '\nSCALE = "smoke"'
            status, errors = _execute(ws, code, session["id"])
            assert status == "ok" and not errors, f"{SMOKE_CHAPTER}, code cell {ran + 1}: {errors}"
            ran += 1
        status, errors = _execute(ws, "import sys, os, kernels\n"
                                      "assert sys.argv[0].endswith(os.path.join('booktools', 'kernel.py')), sys.argv\n"
                                      "assert os.environ['OMP_NUM_THREADS'] == '1'", session["id"])
        assert status == "ok" and not errors, f"not the book's kernel: {errors}"
        assert ran >= 10
    finally:
        ws.close()
        server.api(f"api/sessions/{session['id']}", "DELETE")


def test_nothing_listens_beyond_localhost(server):
    session = server.api("api/sessions", "POST", {"path": SMOKE_CHAPTER.removeprefix("book/"), "type": "notebook",
                                                  "kernel": {"name": lab.KERNEL_NAME}})
    try:
        addresses = server.listening()
        assert any(a.endswith(f":{server.port}") for a in addresses), addresses
        outside = [a for a in addresses if not a.startswith(("127.0.0.1:", "::1:", "::ffff:127.0.0.1:"))]
        assert not outside, f"listening beyond 127.0.0.1: {outside}"
    finally:
        server.api(f"api/sessions/{session['id']}", "DELETE")


def test_the_server_is_stopped_even_when_the_block_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with lab.running_server() as s:
            process = s.process
            raise RuntimeError("boom")
    assert process.poll() is not None
