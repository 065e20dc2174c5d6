"""A real ``agentrack serve`` for the tests: the debug binary cargo built, a temporary data
directory, a free loopback port, and the admin token it wrote, to mint agent tokens with."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def eventually(condition: Callable[[], Any], what: str, bound: float = 60.0, pause: float = 0.05) -> Any:
    """Polls ``condition`` until it returns something true (returned), failing with ``what``
    after ``bound`` seconds: a generous bound, as the condition, not the clock, is what a test
    waits for."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(pause)
    raise AssertionError(f"not within {bound} s: {what}")


def binary() -> Path:
    """The ``agentrack`` binary: ``AGENTRACK_BIN``, else cargo's debug build."""
    path = Path(os.environ.get("AGENTRACK_BIN", ROOT / "target" / "debug" / "agentrack"))
    if not path.exists():
        raise RuntimeError(f"{path} does not exist: run `cargo build -p agentrack-server --bin agentrack` first")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(url: str, token: str | None = None, body: Any = None, method: str | None = None) -> tuple[int, Any]:
    """One HTTP request with the standard library; ``(status, JSON body or None)``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


class Server:
    """One ``agentrack serve`` process."""

    def __init__(self, data_dir: Path, *args: str, store: str | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir / f"server-{self.port}.log").open("wb")
        command = [str(binary()), "serve", "--data", str(data_dir), "--listen", f"127.0.0.1:{self.port}", *args]
        if store is not None:
            command += ["--store", store]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRACK_")}
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready()
        # On a shared store only the node that made the admin token writes it.
        token_file = data_dir / "admin.token"
        self.admin_token = token_file.read_text().strip() if token_file.exists() else ""

    def wait_ready(self, bound: float = 60.0) -> None:
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agentrack serve exited with {self.process.returncode}; see {self.log.name}")
            try:
                status, _ = request(f"{self.url}/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agentrack serve not ready after {bound} s; see {self.log.name}")

    def mint(self, role: str = "agent", tenant: str | None = None) -> str:
        """A new token (by default an agent token of a tenant of its own)."""
        tenant = tenant or f"t-{uuid.uuid4().hex[:12]}"
        status, body = request(f"{self.url}/v1/tokens", self.admin_token, {"role": role, "tenant": tenant})
        if status != 201 and status != 200:
            raise RuntimeError(f"minting a token answered {status}: {body}")
        token: str = body["token"]
        return token

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
