"""Checkpoint directories: config.json + model.safetensors (trainable weights only) + model_version.txt.

The frozen base text weights are not stored: they come from the text model path in the config (the
bundled MiniLM package by default), or from `init_seed` for a random-init test tower. Matrices are
stored in fp16 (a tiny-preset checkpoint fits in the repository); vectors and scalars (norms, biases,
the temperature) stay fp32, where fp16 rounding would move LayerNorm gains and the temperature.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.errors import InvalidInputError

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VERSION_FILE = "model_version.txt"


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """'default' -> the bundled checkpoint; otherwise a directory holding the three files."""
    path = DEFAULT_CHECKPOINT if str(checkpoint) == "default" else Path(checkpoint)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise InvalidInputError(
            "checkpoint",
            f"{path} is not a checkpoint directory (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "pass the --out folder of `tribind train`, or 'default'",
        )
    return path


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint stores, in their storage dtype (fp16 for matrices)."""
    state = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tensor = param.detach().cpu().contiguous()
        state[name] = tensor.to(torch.float16) if tensor.ndim >= 2 else tensor.to(torch.float32)
    return state


def compute_model_version(config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    """`<preset name>-<16 hex>`: sha256 of the canonical config JSON and the stored tensors."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        tensor = state[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return f"{config.get('name', 'custom')}-{digest.hexdigest()[:16]}"


def save_state(model: nn.Module, config: dict[str, Any], directory: str | Path) -> str:
    """Write the three files; returns the model_version (which equals the one a later load computes)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = trainable_state(model)
    version = compute_model_version(config, state)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(state, str(out / WEIGHTS_FILE), metadata={"model_version": version})
    (out / VERSION_FILE).write_text(version + "\n")
    return version


def read_config(directory: str | Path) -> dict[str, Any]:
    return json.loads((resolve_checkpoint(directory) / CONFIG_FILE).read_text())


def load_state(model: nn.Module, config: dict[str, Any], directory: str | Path) -> str:
    """Load the stored tensors into `model`; returns the model_version, checked against the file."""
    path = resolve_checkpoint(directory)
    state = load_file(str(path / WEIGHTS_FILE))
    version = compute_model_version(config, state)
    stored = (path / VERSION_FILE).read_text().strip() if (path / VERSION_FILE).is_file() else version
    if stored != version:
        raise InvalidInputError("checkpoint", f"{path}: weights do not match {VERSION_FILE} ({stored} != {version}); "
                                "the files were edited or mixed from two checkpoints")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise InvalidInputError("checkpoint", f"{path} does not fit this architecture (missing {sorted(missing)[:3]}, "
                                f"unexpected {sorted(unexpected)[:3]}); was it written by another preset?")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].dtype))
    return version
