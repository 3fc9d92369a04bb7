"""One encoder of a checkpoint as a plain `torch.nn.Module`, for fine-tuning in anyone's code, and its ONNX export.

    from encoders.backbone import load_encoder
    ecg = load_encoder("default", "ecg")              # or a checkpoint directory
    signals, mask = ecg.preprocess(signal_mv, fs, lead_names)   # the model's own preprocessing
    features = ecg(signals[None], mask[None])          # [1, ecg.feature_dim]
    head = torch.nn.Linear(ecg.feature_dim, n_classes)

`forward` returns the tower's features (before the projection into the shared space), the usual
input for a task head; `project=True` returns the unit-norm joint-space embedding instead (what
retrieval and zero-shot use). The module holds only that tower, so its parameters are the ones to
fine-tune or freeze.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from encoders.errors import InvalidInputError

MODALITIES = ("xray", "ecg", "text")


class EncoderBackbone(nn.Module):
    """A single tower (+ its projection) with the bundle's preprocessing attached."""

    def __init__(self, bundle, modality: str, project: bool = False) -> None:
        super().__init__()
        if modality not in MODALITIES:
            raise InvalidInputError("modality", f"must be one of {', '.join(MODALITIES)}, got {modality!r}")
        model = bundle.model
        self.modality = modality
        self.project = project
        self.tower: nn.Module = getattr(model, modality)
        self.projection: nn.Module = getattr(model, f"{modality}_proj")
        self.feature_dim = int(model.embed_dim if project else self.tower.width)
        self.config: dict[str, Any] = bundle.config
        self.model_version: str = bundle.model_version
        self._bundle = bundle  # preprocessing and tokenizer only; not a registered sub-module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """xray: (pixels [B,1,S,S]); ecg: (signals [B,12,T], lead_mask [B,12] optional); text: (input_ids, attention_mask)."""
        if self.modality == "ecg":
            signals = inputs[0]
            mask = inputs[1] if len(inputs) > 1 else torch.ones(signals.shape[:2], dtype=torch.bool,
                                                                  device=signals.device)
            features = self.tower(signals, mask)
        else:
            features = self.tower(*inputs)
        if self.project:
            return F.normalize(self.projection(features), dim=-1)
        return features

    def preprocess(self, *args: Any) -> Any:
        """xray: image (array / PIL / bytes / path) -> [1,S,S]; ecg: (signal mV, fs, lead_names) ->
        ([12,T], [12]); text: list[str] -> tokenizer dict."""
        if self.modality == "xray":
            return self._bundle.preprocess_xray(*args)
        if self.modality == "ecg":
            return self._bundle.preprocess_ecg(*args)
        return self._bundle.tokenizer(*args)

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of the right shapes and dtypes (for tracing, export and smoke tests)."""
        from encoders.config import ecg_num_samples

        generator = torch.Generator().manual_seed(0)
        if self.modality == "xray":
            size = int(self.config["xray"]["image_size"])
            return (torch.randn(batch, 1, size, size, generator=generator),)
        if self.modality == "ecg":
            mask = torch.ones(batch, 12, dtype=torch.bool)
            mask[0, 3] = False
            return (0.3 * torch.randn(batch, 12, ecg_num_samples(self.config), generator=generator), mask)
        tokens = self._bundle.tokenizer(["sinus rhythm with left ventricular hypertrophy",
                                         "small left pleural effusion"][:batch] * max(1, batch // 2))
        return tokens["input_ids"], tokens["attention_mask"]


def load_encoder(checkpoint: str | Path | None = "default", modality: str = "ecg", project: bool = False,
                 preset: str | dict | None = None) -> EncoderBackbone:
    """The `modality` encoder of a checkpoint ("default" or a directory); `checkpoint=None` with a
    `preset` gives the same architecture with random weights (the baseline for a fine-tuning run)."""
    from encoders.factory import create_model

    if checkpoint is None:
        if preset is None:
            raise InvalidInputError("checkpoint", "give a checkpoint directory, 'default', or a preset for random init")
        bundle = create_model(preset)
    else:
        bundle = create_model(None, checkpoint=checkpoint)
    backbone = EncoderBackbone(bundle, modality, project=project)
    backbone.eval()
    return backbone


def export_onnx(checkpoint: str | Path, modality: str, out: str | Path, tolerance: float = 1e-4,
                project: bool = True, opset: int = 17) -> dict[str, Any]:
    """Export one encoder to ONNX (dynamic batch) and compare onnxruntime with PyTorch on example inputs.

    The default output is the joint-space embedding (`project=True`), what a deployment needs for
    retrieval; `project=False` exports the tower features for fine-tuning elsewhere.
    """
    import numpy as np
    import onnxruntime

    backbone = load_encoder(checkpoint, modality, project=project)
    inputs = backbone.example_inputs(batch=2)
    names = {"xray": ["pixels"], "ecg": ["signals", "lead_mask"], "text": ["input_ids", "attention_mask"]}[modality]
    dynamic = {name: {0: "batch"} for name in names}
    if modality == "text":
        dynamic = {name: {0: "batch", 1: "tokens"} for name in names}
    dynamic["embedding"] = {0: "batch"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The towers' input checks become constants in the traced graph; that is the intent.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(backbone, inputs, str(out), input_names=names, output_names=["embedding"],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    diff = 0.0
    # The traced batch (2) and a different one (1): a shape baked into the graph would show here.
    checks = [inputs, tuple(tensor[:1] for tensor in inputs)]
    if modality == "text":
        # Longer, and more sentences than the traced texts: a sentence count baked in would show here.
        tokens = backbone.preprocess(["Sinus rhythm. Left axis deviation. Left ventricular hypertrophy. No acute ST changes.",
                                      "Small left pleural effusion.\nNo pneumothorax."])
        checks.append((tokens["input_ids"], tokens["attention_mask"]))
    for batch in checks:
        with torch.no_grad():
            expected = backbone(*batch).numpy()
        actual = session.run(["embedding"], {name: tensor.numpy() for name, tensor in zip(names, batch)})[0]
        if actual.shape != expected.shape:
            raise RuntimeError(f"ONNX output shape {actual.shape} differs from PyTorch {expected.shape}")
        diff = max(diff, float(np.abs(actual - expected).max()))
    return {
        "modality": modality, "out": str(out), "format": "onnx", "opset": opset, "inputs": names,
        "output": "embedding" if project else "features", "output_dim": int(expected.shape[-1]),
        "model_version": backbone.model_version, "max_abs_diff": diff, "tolerance": tolerance,
        "ok": diff <= tolerance, "bytes": out.stat().st_size,
    }
