"""Server settings as data: one dataclass, filled from CLI flags by `tribind serve`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from service.auth import ApiKeys

MIB = 1024 * 1024


@dataclass
class ServerConfig:
    data_dir: Path
    listen: str = "127.0.0.1:50051"
    # Model: a preset name/path and a checkpoint ("default" = the bundled one; None = random init,
    # only meaningful for tests with the `test` preset).
    preset: str | None = None
    checkpoint: str | None = "default"
    # gRPC: worker threads, RPCs in flight before RESOURCE_EXHAUSTED, message size both directions.
    workers: int = 8
    max_concurrent_rpcs: int = 32
    max_message_bytes: int = 64 * MIB
    # Encoder micro-batching: inputs per forward pass, and how long the first input waits for company.
    max_batch: int = 32
    max_wait_ms: float = 5.0
    # Threads for torch and FAISS; default: the cores this process may run on.
    threads: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    # Request limits: hits per page, items per Embed/Upsert request.
    max_k: int = 1000
    max_items: int = 512
    api_keys: ApiKeys = field(default_factory=ApiKeys)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # SIGTERM: seconds in-flight RPCs get to finish before they are cancelled.
    grace_s: float = 10.0
    # SIGTERM: seconds to let an index retraining that runs aside finish, so the snapshot holds the
    # retrained index. Without it every start after a bulk import retrains again (1M vectors: about a
    # minute of both cores) and serves the outgrown index meanwhile. Past it, the current (correct,
    # outgrown) index is snapshotted. Keep it under the orchestrator's kill deadline.
    retrain_wait_s: float = 120.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        for name in ("workers", "max_concurrent_rpcs", "max_message_bytes", "max_batch", "threads", "max_k", "max_items"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("grace_s", "retrain_wait_s", "max_wait_ms"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_concurrent_rpcs < self.workers:
            # grpc only refuses RPCs above the limit; a limit below the worker count would idle workers.
            self.max_concurrent_rpcs = self.workers
