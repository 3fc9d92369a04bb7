"""A real `tribind serve` subprocess on a loopback port, for the service tests (no tests of its own).

The server runs the `test` preset from random init (`--checkpoint none`), so a start costs seconds;
it binds port 0 and the harness reads the chosen port from the ready line, so parallel runs never race
for a port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r"SERVING on ([\d.]+):(\d+)")


class ServerProcess:
    started: list["ServerProcess"] = []   # every server of this test session, for `reap_servers`
    def __init__(self, data_dir: Path, *extra: str, seed_cases: int = 0, env: dict[str, str] | None = None,
                 preset: str = "test", port: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.args = [
            sys.executable, "-m", "tribind", "serve", "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{port}",
            "--preset", preset, "--checkpoint", "none", "--seed-cases", str(seed_cases), "--threads", "1",
            "--workers", "4", "--grace-s", "3", "--log-level", "WARNING", *extra,
        ]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._drains: list[threading.Thread] = []

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 300.0) -> "ServerProcess":
        self.proc = subprocess.Popen(self.args, cwd=REPO_ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        ServerProcess.started.append(self)
        self._drain_into(self.proc.stderr, self.stderr)
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.stdout.append(line)
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                self._drain_into(self.proc.stdout, self.stdout)
                return self
        self.kill()
        raise RuntimeError("server did not become ready:\n" + "".join(self.stdout) + "".join(self.stderr[-40:]))

    def _drain_into(self, stream, sink: list[str]) -> None:
        def drain() -> None:
            for line in stream:
                sink.append(line)

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        self._drains.append(thread)

    def terminate(self, timeout_s: float = 120.0) -> int:
        """SIGTERM, wait for the exit, and read stdout/stderr to their end (the tests read what it printed last)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        for thread in self._drains:
            thread.join(10)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    @staticmethod
    def free_port() -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def client(self, api_key: str | None = None, **kwargs):
        from service.client import TribindClient

        return TribindClient(self.target, api_key, **kwargs)


@pytest.fixture(scope="module", autouse=True)
def reap_servers():
    """Import into a test module: after its tests, kill every server a failed test left running."""
    yield
    for server in ServerProcess.started:
        server.kill()
    ServerProcess.started.clear()
