"""gRPC search and embedding under concurrency, each next to the bare in-process call.

- search-by-vector and search-by-text (target xray, k=10) over gRPC at concurrency 1 / 4 / 16, against
  the same calls in-process on the same library (`CaseStore.search`; text: tokenise + encode +
  search), and the bare FAISS call (`index.search`) at the same concurrency;
- X-ray embedding (Embed, one 128 px PNG per request) at concurrency 16 with micro-batching on
  (max_batch 32) and off (max_batch 1), against the in-process encoder at batch 1.
Load comes from threads in this process, each a closed loop on one shared channel.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig
from benchmarks.library import build_library
from benchmarks.server_process import PRESET, served_model_version, start_server
from benchmarks.synthetic import clustered_unit_vectors
from benchmarks.timing import closed_loop, ratio

QUERY_TEXTS = ("large left pleural effusion", "enlarged heart with pulmonary oedema", "no acute cardiopulmonary findings",
               "right lower lobe consolidation", "small apical pneumothorax", "atrial fibrillation with rapid ventricular rate")


def xray_png(size: int = 128, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = (rng.random((size, size)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def in_process(store: Any, queries: np.ndarray, config: BenchConfig) -> dict[str, Any]:
    """The baselines: CaseStore.search and the bare FAISS call, at each concurrency."""
    from index.faiss_index import single_threaded

    index = store._indexes["xray"].index  # the bare FAISS object behind the store's search
    out: dict[str, Any] = {"store_search": {}, "bare_faiss": {}}
    for c in config.service_concurrency:
        out["store_search"][str(c)] = closed_loop(
            lambda w, i: store.search("xray", queries[(w * 7919 + i) % len(queries)], k=10), c, config.service_seconds)

        def bare(w: int, i: int) -> None:
            with single_threaded():
                index.search(queries[(w * 7919 + i) % len(queries)].reshape(1, -1), 10)

        out["bare_faiss"][str(c)] = closed_loop(bare, c, config.service_seconds)
    return out


def served_bundle() -> Any:
    """The served model, built in-process the way the server builds it (`--checkpoint none`)."""
    import torch

    from encoders import create_model

    torch.manual_seed(0)
    return create_model(PRESET)


def text_in_process(bundle: Any, store: Any, config: BenchConfig) -> dict[str, Any]:
    import torch

    def call(w: int, i: int) -> None:
        with torch.inference_mode():
            tokens = bundle.tokenizer([QUERY_TEXTS[(w + i) % len(QUERY_TEXTS)]])
            vec = bundle.model.encode_text(tokens["input_ids"], tokens["attention_mask"])[0].numpy()
        store.search("xray", vec, k=10)

    return {str(c): closed_loop(call, c, config.service_seconds) for c in config.service_concurrency}


def xray_in_process(bundle: Any, config: BenchConfig) -> dict[str, Any]:
    import torch

    png = xray_png()

    def call(w: int, i: int) -> None:
        pixels = bundle.preprocess_xray(png)
        with torch.inference_mode():
            bundle.model.encode_xray(pixels[None])

    return closed_loop(call, 1, config.xray_seconds)


def over_grpc(target: str, queries: np.ndarray, model_version: str, config: BenchConfig) -> dict[str, Any]:
    from service.client import TribindClient
    from service.client_types import text_item, vector

    messages = [vector(q, "xray", model_version) for q in queries[:512]]
    texts = [text_item(t) for t in QUERY_TEXTS]
    out: dict[str, Any] = {"search_by_vector": {}, "search_by_text": {}}
    with TribindClient(target, timeout_s=60) as client:
        client.wait_ready()
        for c in config.service_concurrency:
            out["search_by_vector"][str(c)] = closed_loop(
                lambda w, i: client.search(messages[(w * 7919 + i) % len(messages)], targets=["xray"], k=10),
                c, config.service_seconds)
            out["search_by_text"][str(c)] = closed_loop(
                lambda w, i: client.search(texts[(w + i) % len(texts)], targets=["xray"], k=10), c, config.service_seconds)
    return out


def xray_embed_over_grpc(target: str, concurrency: int, seconds: float) -> dict[str, Any]:
    from service.client import TribindClient
    from service.client_types import xray_item

    items = [xray_item(xray_png(seed=s)) for s in range(8)]
    with TribindClient(target, timeout_s=120) as client:
        client.wait_ready()
        return closed_loop(lambda w, i: client.embed([items[(w + i) % len(items)]]), concurrency, seconds, warmup_s=1.0)


def run(config: BenchConfig, work_dir: Path | None = None) -> dict[str, Any]:
    model_version, dim = served_model_version()
    queries = clustered_unit_vectors(2000, dim, seed=7)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="bench-service-") as tmp:
        data_dir = Path(tmp) / "library"
        started = time.perf_counter()
        store = build_library(data_dir, config.service_library, model_version, dim)
        build_s = time.perf_counter() - started
        kind = store.stats().modalities["xray"].index_kind
        baseline = in_process(store, queries, config)
        bundle = served_bundle()
        baseline["text_search"] = text_in_process(bundle, store, config)
        store.close()
        baseline["xray_embed_batch1"] = xray_in_process(bundle, config)
        del bundle

        server = start_server(data_dir, max_batch=32)
        try:
            grpc_figures = over_grpc(server.target, queries, model_version, config)
            batched = xray_embed_over_grpc(server.target, 16, config.xray_seconds)
        finally:
            server.stop()
        unbatched_server = start_server(data_dir, max_batch=1)
        try:
            unbatched = xray_embed_over_grpc(unbatched_server.target, 16, config.xray_seconds)
        finally:
            unbatched_server.stop()

    result: dict[str, Any] = {"library_vectors": config.service_library, "index_kind": kind, "library_build_s": round(build_s, 1),
                              "server_ready_s": round(server.ready_s, 1), "model": f"{PRESET} preset (random init), dim {dim}",
                              "grpc": grpc_figures, "baseline": baseline, "ratios": {}}
    ratios = result["ratios"]
    for c in map(str, config.service_concurrency):
        vec, txt = grpc_figures["search_by_vector"][c], grpc_figures["search_by_text"][c]
        ratios[f"vector_qps_vs_store_c{c}"] = ratio(vec["qps"], baseline["store_search"][c]["qps"])
        ratios[f"vector_qps_vs_bare_faiss_c{c}"] = ratio(vec["qps"], baseline["bare_faiss"][c]["qps"])
        ratios[f"text_qps_vs_in_process_c{c}"] = ratio(txt["qps"], baseline["text_search"][c]["qps"])
    result["xray_embed_c16"] = {"micro_batching_on": batched, "micro_batching_off": unbatched,
                                "speedup_on_vs_off": ratio(batched["qps"], unbatched["qps"]),
                                "on_vs_in_process_batch1": ratio(batched["qps"], baseline["xray_embed_batch1"]["qps"])}
    return result
