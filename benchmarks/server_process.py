"""Start `tribind serve` as a child process for a benchmark, and stop it as an orchestrator would.

The server runs in its own process so that the load generator's Python does not share its GIL: the
figures are what a client on the same host sees. The model is the tiny preset with a fixed random
init (`--checkpoint none` seeds torch with 0): cost does not depend on the weights, and the bench
needs no trained checkpoint. `served_model_version()` reproduces that model's version in-process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PRESET = "tiny"
READY = re.compile(r"SERVING on (\S+):")


def served_model_version(preset: str = PRESET) -> tuple[str, int]:
    """(model_version, dim) of what `serve --preset P --checkpoint none` loads."""
    import torch

    from encoders import create_model

    torch.manual_seed(0)  # as service.servicer does for a random-init model
    bundle = create_model(preset)
    return bundle.model_version, int(bundle.config["embed_dim"])


@dataclass
class ServerProcess:
    process: subprocess.Popen
    target: str
    ready_s: float                      # process start -> SERVING printed
    log: list[str] = field(default_factory=list)

    def stop(self, timeout_s: float = 120.0) -> float:
        """SIGTERM (drain, snapshot, exit); returns seconds to exit."""
        start = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return time.monotonic() - start


def start_server(data_dir: Path, *, max_batch: int = 32, max_wait_ms: float = 5.0, threads: int | None = None,
                 workers: int = 16, timeout_s: float = 600.0, extra: tuple[str, ...] = ()) -> ServerProcess:
    """Start a server on a free loopback port; returns once it prints SERVING (health is SERVING then)."""
    cmd = [sys.executable, "-m", "tribind", "serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
           "--preset", PRESET, "--checkpoint", "none", "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms),
           "--workers", str(workers), "--max-concurrent-rpcs", str(max(64, workers)), "--log-level", "WARNING", *extra]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.monotonic()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               cwd=Path(__file__).resolve().parent.parent)
    log: list[str] = []
    found: list[str] = []
    got = threading.Event()

    def pump() -> None:  # keep reading, or a full pipe would block the server
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line.rstrip())
            match = READY.search(line)
            if match and not found:
                found.append(match.group(1))
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    if not got.wait(timeout_s) or not found:
        process.kill()
        process.wait()
        tail = "\n".join(log[-20:])
        raise RuntimeError(f"the server did not become SERVING within {timeout_s:.0f} s:\n{tail}")
    return ServerProcess(process, found[0], time.monotonic() - start, log)
