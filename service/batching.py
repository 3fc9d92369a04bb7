"""Micro-batching of encoder calls from concurrent requests.

A transformer forward pass over 16 inputs costs far less than 16 passes over one, so requests that
arrive together are encoded together: one worker thread per modality takes the waiting inputs, up to
`max_batch`, waiting at most `max_wait_s` after the first for more to arrive, runs the encoder once and
hands each request its rows. Inputs whose caller has gone (cancelled future) are skipped before the
forward pass, so a departed client costs no encoder time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from service.errors import ClientGone

log = logging.getLogger("tribind.service")

EncodeFn = Callable[[list[Any]], np.ndarray]


class MicroBatcher:
    """Collects single inputs from many threads into batches for `encode(list_of_inputs) -> [n, D]`."""

    def __init__(self, name: str, encode: EncodeFn, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.name = name
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[Any, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self.batches_run = 0
        self.items_encoded = 0
        self._thread.start()

    def submit(self, inputs: Sequence[Any]) -> list[Future]:
        futures = []
        for item in inputs:
            future: Future = Future()
            self._queue.put((item, future))
            futures.append(future)
        return futures

    def encode(self, inputs: Sequence[Any], is_active: Callable[[], bool] | None = None,
               timeout_s: float | None = None) -> np.ndarray:
        """Encode `inputs` (possibly together with other callers' inputs); rows in input order.

        `is_active` is polled while waiting; when it turns false (the client went away) the pending
        inputs are cancelled and `ClientGone` is raised.
        """
        if not inputs:
            raise ValueError("nothing to encode")
        futures = self.submit(inputs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        rows = []
        try:
            for future in futures:
                while True:
                    if is_active is not None and not is_active():
                        raise ClientGone()
                    if deadline is not None and time.monotonic() > deadline:
                        raise ClientGone()
                    try:
                        rows.append(future.result(timeout=0.05))
                        break
                    except TimeoutError:
                        continue
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return np.stack(rows)

    def close(self) -> None:
        """Stop the worker; inputs still waiting fail with RuntimeError instead of hanging their callers."""
        self._queue.put(None)
        self._thread.join(timeout=5)
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is not None and entry[1].set_running_or_notify_cancel():
                entry[1].set_exception(RuntimeError(f"the {self.name} encoder is shut down"))

    def _take_batch(self) -> list[tuple[Any, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        wait_until = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = wait_until - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:
                self._queue.put(None)  # finish this batch, stop on the next take
                break
            batch.append(entry)
        return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self._encode([item for item, _ in live])
                if len(out) != len(live):
                    raise RuntimeError(f"{self.name} encoder returned {len(out)} rows for {len(live)} inputs")
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting caller
                for _, future in live:
                    future.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_encoded += len(live)
            for row, (_, future) in zip(out, live):
                future.set_result(row)
