"""The executing reader's front door: ``make lab``.

- :func:`install_kernel` writes the ``python3`` kernelspec of ``.venv`` (display name "Ten Papers from
  Scratch"): it starts :mod:`booktools.kernel`, which applies the same import path and arithmetic settings as
  ``make test``. Every chapter's notebook names the ``python3`` kernel, so JupyterLab, papermill and nbclient
  all start the book's kernel. ``make`` runs it after every install (pip would restore ipykernel's default).
- :func:`lab_command` is JupyterLab on ``book/``, bound to 127.0.0.1.
- :func:`running_server` starts a headless server on a free port for the tests and always stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from booktools.toc import ROOT

KERNEL_NAME = "python3"
DISPLAY_NAME = "Ten Papers from Scratch"


def kernel_dir(prefix: str | None = None) -> Path:
    return Path(prefix or sys.prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def kernelspec(python: str | None = None) -> dict:
    return {"argv": [python or sys.executable, "-m", "booktools.kernel", "-f", "{connection_file}"],
            "display_name": DISPLAY_NAME, "language": "python", "metadata": {"debugger": True}}


def install_kernel(prefix: str | None = None) -> Path:
    """Write the book's kernelspec as the environment's ``python3`` kernel; returns its kernel.json."""
    path = kernel_dir(prefix) / "kernel.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kernelspec(), indent=1) + "\n", encoding="utf-8")
    return path


def lab_command(port: int | None = None, token: str | None = None, open_browser: bool = True,
                root_dir: Path | None = None) -> list[str]:
    """JupyterLab on book/ (or ``root_dir``), listening on 127.0.0.1 only."""
    cmd = [str(Path(sys.executable).parent / "jupyter-lab"), "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.root_dir={root_dir or ROOT / 'book'}", f"--ServerApp.open_browser={open_browser}"]
    if port is not None:
        cmd += [f"--ServerApp.port={port}", "--ServerApp.port_retries=0"]
    if token is not None:
        cmd += [f"--IdentityProvider.token={token}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI run as root; Jupyter refuses without it
        cmd += ["--allow-root"]
    return cmd


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running headless JupyterLab: its base URL, token and process, and a JSON REST helper."""

    def __init__(self, process: subprocess.Popen, port: int, token: str) -> None:
        self.process, self.port, self.token = process, port, token
        self.url = f"http://127.0.0.1:{port}/"

    def api(self, path: str, method: str = "GET", body: dict | None = None) -> dict | list | None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path.lstrip("/"), data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
        return json.loads(text) if text else None

    def listening(self) -> list[str]:
        """Addresses that the server and its kernels listen on (TCP, from /proc), as "ip:port"."""
        return listening_addresses(process_tree(self.process.pid))


@contextlib.contextmanager
def running_server(timeout_s: float = 90.0, root_dir: Path | None = None) -> Iterator[Server]:
    """Start JupyterLab headless on a free 127.0.0.1 port with a random token; stop it on exit, always.

    ``root_dir`` (default: a temporary copy of book/) is what the server serves: a test that runs cells
    must not let JupyterLab's autosave rewrite the committed notebooks.
    """
    import shutil
    import tempfile

    port, token = free_port(), secrets.token_hex(16)
    tmp = None
    if root_dir is None:
        tmp = tempfile.mkdtemp(prefix="book-lab-")
        root_dir = Path(tmp) / "book"
        shutil.copytree(ROOT / "book", root_dir)
    log = open(ROOT / "_build" / "lab-server.log", "w") if (ROOT / "_build").is_dir() else subprocess.DEVNULL
    process = subprocess.Popen(lab_command(port, token, open_browser=False, root_dir=root_dir), cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT, env=dict(os.environ, JUPYTER_PLATFORM_DIRS="1"))
    server = Server(process, port, token)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {process.returncode} before answering "
                                   f"(see _build/lab-server.log)")
            try:
                server.api("api/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not answer on port {port} within {timeout_s:.0f} s")
                time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log is not subprocess.DEVNULL:
            log.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _hex_ip(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def listening_addresses(pids: list[int]) -> list[str]:
    """TCP sockets in LISTEN state owned by ``pids``, as "ip:port" (Linux /proc)."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and f[9] in inodes:  # 0A = LISTEN
                    ip, port = f[1].split(":")
                    out.append(f"{_hex_ip(ip)}:{int(port, 16)}")
    return sorted(set(out))


def main(argv: list[str]) -> int:
    """``python -m booktools lab``: register the kernel and run JupyterLab on book/ (127.0.0.1 only)."""
    path = install_kernel()
    print(f"kernel \"{DISPLAY_NAME}\" ({KERNEL_NAME}) registered in {path.parent.relative_to(ROOT) if path.is_relative_to(ROOT) else path.parent}")
    print("JupyterLab on book/, listening on 127.0.0.1 only; stop it with Ctrl-C")
    os.execv(lab_command()[0], lab_command() + argv)
    return 0  # not reached
