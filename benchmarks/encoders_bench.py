"""Encoder throughput: items/s per modality at several batch sizes (tiny on CPU; base too on a GPU).

Inputs are already preprocessed tensors of the preset's shapes, so the figures are the forward
passes alone (decoding a PNG or a WFDB record is per-item work the service does in request threads).
Text is tokenised inside the timed loop: the service does that per batch too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.config import BenchConfig

REPORT = ("Findings: the heart is enlarged. Small left pleural effusion. No pneumothorax. "
          "Impression: cardiomegaly with small left effusion. ECG: sinus rhythm, left ventricular hypertrophy.")


def _inputs(bundle: Any, batch: int, device: Any) -> dict[str, Any]:
    import torch

    from encoders.config import ecg_num_samples

    cfg = bundle.config
    size = int(cfg["xray"]["image_size"])
    generator = torch.Generator().manual_seed(0)
    return {
        "xray": torch.rand(batch, 1, size, size, generator=generator).to(device),
        "ecg": (0.3 * torch.randn(batch, 12, ecg_num_samples(cfg), generator=generator).to(device),
                torch.ones(batch, 12, dtype=torch.bool, device=device)),
        "text": [REPORT] * batch,
    }


def _run(bundle: Any, modality: str, inputs: Any, device: Any) -> None:
    model = bundle.model
    if modality == "xray":
        model.encode_xray(inputs)
    elif modality == "ecg":
        model.encode_ecg(*inputs)
    else:
        tokens = bundle.tokenizer(inputs)
        model.encode_text(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))


def throughput(bundle: Any, batches: tuple[int, ...], min_seconds: float, device: str = "cpu") -> dict[str, dict[str, float]]:
    """{modality: {str(batch): items/s}}; each figure runs for at least `min_seconds` after a warm-up pass."""
    import torch

    dev = torch.device(device)
    bundle.model.to(dev).eval()
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for modality in ("xray", "ecg", "text"):
            out[modality] = {}
            for batch in batches:
                inputs = _inputs(bundle, batch, dev)[modality]
                _run(bundle, modality, inputs, dev)  # warm-up: allocator, kernels, tokenizer caches
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                items, start = 0, time.perf_counter()
                while time.perf_counter() - start < min_seconds:
                    _run(bundle, modality, inputs, dev)
                    items += batch
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                out[modality][str(batch)] = round(items / (time.perf_counter() - start), 1)
    return out


def run(config: BenchConfig) -> dict[str, Any]:
    import torch

    from encoders import create_model

    torch.manual_seed(0)
    result: dict[str, Any] = {
        "unit": "items/s (forward pass on preprocessed inputs)",
        "cpu_threads": torch.get_num_threads(),
        "tiny_cpu": throughput(create_model("tiny"), config.encoder_batches, config.encoder_min_seconds, "cpu"),
    }
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        result["gpu"] = {"device": name,
                         "tiny": throughput(create_model("tiny"), config.encoder_batches, config.encoder_min_seconds, "cuda"),
                         "base": throughput(create_model("base"), config.encoder_batches, config.encoder_min_seconds, "cuda")}
    else:
        result["gpu"] = {"device": None, "note": "not measured: no GPU on this machine"}
    # The baseline of a batch size is batch 1: how much batching buys, per modality.
    result["batching_gain_vs_batch1"] = {
        m: {b: round(v / result["tiny_cpu"][m]["1"], 2) for b, v in per.items()}
        for m, per in result["tiny_cpu"].items() if per.get("1")
    }
    return result
