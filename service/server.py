"""The gRPC server's life: bind, report health, load, serve, drain on SIGTERM, snapshot, exit.

Order matters for orchestrators: the port is bound and health answers NOT_SERVING first, then the
model and the case library are loaded (and an empty library optionally seeded), and only then does
health turn SERVING. On SIGTERM/SIGINT health turns NOT_SERVING at once (load balancers stop sending),
in-flight RPCs get `grace_s` to finish, the FAISS indexes are snapshotted, and the process exits 0.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.tribind.v1 import tribind_pb2 as pb
from protos.tribind.v1 import tribind_pb2_grpc as pb_grpc
from service.auth import AuthInterceptor
from service.config import ServerConfig
from service.servicer import TribindServicer

log = logging.getLogger("tribind.service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Tribind"].full_name  # "tribind.v1.Tribind"

# (done, total) after each seeded batch; the CLI draws a progress bar with it.
Progress = Callable[[int, int], None]


def pin_threads(threads: int) -> None:
    """Pin torch and FAISS (OpenMP) to `threads`: both default to every core of the host, which
    oversubscribes a container limited to fewer and makes latency erratic."""
    import faiss
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(max(1, min(threads, 4)))
    except RuntimeError:  # only settable before the first parallel op; a second server in-process keeps it
        pass
    faiss.omp_set_num_threads(threads)


class TribindServer:
    """One server process: `start()`, `load(...)`, then `wait()`; `stop()` from a signal or a test."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.servicer = TribindServicer(config)
        self.port: int | None = None
        self._health = health.HealthServicer()
        self._server: grpc.Server | None = None
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    def start(self) -> int:
        """Bind and start answering (health NOT_SERVING, Tribind RPCs UNAVAILABLE until `load`). Returns the port."""
        cfg = self.config
        interceptors = [AuthInterceptor(cfg.api_keys)] if cfg.api_keys.enabled else []
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="rpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
            options=[
                ("grpc.max_send_message_length", cfg.max_message_bytes),
                ("grpc.max_receive_message_length", cfg.max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
        )
        pb_grpc.add_TribindServicer_to_server(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
        )
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())])
            port = server.add_secure_port(cfg.listen, credentials)
        else:
            port = server.add_insecure_port(cfg.listen)
        if port == 0:
            raise OSError(f"cannot listen on {cfg.listen}: the address is in use or not local")
        server.start()
        self._server = server
        self.port = port
        return port

    def load(self, seed_cases: Iterable[pb.Case] | None = None, seed_count: int = 0,
             progress: Progress | None = None) -> int:
        """Load model and library; seed `seed_cases` if the library is empty. Returns the cases seeded."""
        pin_threads(self.config.threads)
        self.servicer.load()
        seeded = 0
        if seed_cases is not None and seed_count > 0 and self.servicer.store_is_empty():
            seeded = self.servicer.seed(seed_cases, seed_count, progress)
        # Why: torch, transformers and the model leave ~5 x 10^5 long-lived objects that every full
        # collection walks again (313 ms measured on the 2-core machine), landing on whichever request
        # triggers it: the p99. Frozen, the collector skips them; they live as long as the process.
        gc.collect()
        gc.freeze()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return seeded

    def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, drain for the grace period, snapshot, close. Safe to call twice."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace = self.config.grace_s if grace_s is None else grace_s
            self._health.enter_graceful_shutdown()  # every service NOT_SERVING, later sets ignored
            if self._server is not None:
                self._server.stop(grace).wait()
            log.info("RPCs drained; writing the final snapshot")
            self.servicer.close()
            log.info("snapshot written, library closed")
            # Why: frozen objects are never collected, not even at interpreter exit, and the native
            # extensions torch imports (triton's nanobind module) then print a page of "leaked
            # instance" warnings into the log of every clean shutdown.
            gc.unfreeze()
            self._stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stop_lock.locked() or self._stopped.is_set()

    def wait(self) -> None:
        self._stopped.wait()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the server gracefully from a helper thread (handlers must return fast)."""

        def handle(signum: int, frame: Any) -> None:
            log.info("received %s: draining for up to %.0f s", signal.Signals(signum).name, self.config.grace_s)
            threading.Thread(target=self.stop, name="shutdown", daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
