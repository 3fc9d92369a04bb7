"""`create_model`: one call that returns the model with its tokenizer and preprocessors.

Training, ingest and the gRPC request path all go through the bundle, so the pixels and samples a
model sees at serving time are prepared exactly as in training (the preprocessing itself lives in
`encoders/preprocess/`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.checkpoint import compute_model_version, load_state, read_config, save_state, trainable_state
from encoders.config import ecg_num_samples, resolve_config
from encoders.errors import InvalidInputError
from encoders.joint_model import TriBindModel
from encoders.text_encoder import resolve_model_path

_ARCHITECTURE_KEYS = ("embed_dim", "xray", "ecg", "text")


class Tokenizer:
    """texts -> {"input_ids", "attention_mask"}: padded to the batch's longest, truncated to max_length."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from transformers import AutoTokenizer

        self.max_length = int(cfg["max_length"])
        self._tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.get("tokenizer") or cfg["model"]))
        if self._tok.pad_token is None:  # decoder LLMs ship without one
            self._tok.pad_token = self._tok.eos_token

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InvalidInputError("texts", "expected a non-empty list of strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"texts[{i}]", "is empty or not a string; send the report or prompt text")
        encoded = self._tok(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                            return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def encode_each(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, truncated like `__call__` and not padded: tokenise a corpus once,
        then `pad` any subset of it into the same tensors `__call__` would give."""
        if not texts:  # the HF tokenizer rejects an empty batch
            return []
        return [list(ids) for ids in self._tok(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def pad(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        """Rows from `encode_each` (lists or 1-D integer arrays), padded to the longest (on the
        tokenizer's own padding side)."""
        ids = [r.tolist() if hasattr(r, "tolist") else list(r) for r in rows]
        encoded = self._tok.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


@dataclass
class ModelBundle:
    """The model, its resolved config, tokenizer and preprocessors, and the version stamp."""

    model: TriBindModel
    config: dict[str, Any]
    tokenizer: Tokenizer
    model_version: str
    checkpoint: Path | None = None

    def preprocess_xray(self, image: Any) -> torch.Tensor:
        """np.ndarray HxW (any dtype) / PIL image / encoded bytes / file path -> FloatTensor [1, S, S]."""
        from encoders.preprocess.xray import decode_xray, prepare_xray

        if isinstance(image, (bytes, bytearray, str, Path)):
            image = decode_xray(bytes(image) if isinstance(image, bytearray) else image)
        elif not isinstance(image, np.ndarray):
            if hasattr(image, "save"):  # PIL: re-encode losslessly so one decoder handles every mode
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                image = decode_xray(buffer.getvalue())
            else:
                raise InvalidInputError("image", f"unsupported type {type(image).__name__}; "
                                        "send a 2-D array, a PIL image, PNG/JPEG/DICOM bytes or a file path")
        return torch.from_numpy(prepare_xray(image, int(self.config["xray"]["image_size"])))

    def preprocess_ecg(self, signal: Any, fs: float, lead_names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """[n_leads, n_samples] mV at fs Hz -> (FloatTensor [12, T], BoolTensor [12]) at the preset's rate."""
        from encoders.preprocess.ecg import prepare_ecg

        ecg = self.config["ecg"]
        samples, mask = prepare_ecg(np.asarray(signal), fs, list(lead_names), float(ecg["sample_rate"]),
                                    ecg_num_samples(self.config))
        return torch.from_numpy(np.ascontiguousarray(samples)), torch.from_numpy(np.asarray(mask, dtype=bool))

    def refresh_version(self) -> str:
        """Recompute model_version from the current weights (after training)."""
        self.model_version = compute_model_version(self.config, trainable_state(self.model))
        return self.model_version


def create_model(preset_or_config: str | Path | dict[str, Any] | None = "tiny",
                 checkpoint: str | Path | None = None) -> ModelBundle:
    """Build a preset (name, JSON path or dict), optionally loading a checkpoint directory or "default".

    With a checkpoint, its own config.json defines the model; a preset given alongside must describe
    the same architecture.
    """
    if checkpoint is not None:
        config = resolve_config(read_config(checkpoint))
        if preset_or_config is not None:
            wanted = resolve_config(preset_or_config)
            differs = [k for k in _ARCHITECTURE_KEYS if wanted.get(k) != config.get(k)]
            if differs:
                raise InvalidInputError("checkpoint", f"was trained with a different architecture ({', '.join(differs)} "
                                        "differ from the preset); pass preset None to use the checkpoint's own")
    elif preset_or_config is None:
        raise InvalidInputError("preset", "give a preset name, a preset path or a checkpoint")
    else:
        config = resolve_config(preset_or_config)
    model = TriBindModel(config)
    if checkpoint is not None:
        version = load_state(model, config, checkpoint)
    else:
        version = compute_model_version(config, trainable_state(model))
    model.eval()
    return ModelBundle(model=model, config=config, tokenizer=Tokenizer(config["text"]), model_version=version,
                       checkpoint=Path(checkpoint) if checkpoint is not None else None)


def load_model(checkpoint: str | Path = "default") -> ModelBundle:
    """The whole bundle stored in a checkpoint directory ("default" = the bundled one).

    One encoder as a plain nn.Module is `encoders.load_encoder(checkpoint, modality)` (encoders/backbone.py).
    """
    return create_model(None, checkpoint=checkpoint)


def save_checkpoint(bundle: ModelBundle, directory: str | Path) -> str:
    """Write bundle.model to `directory`; updates and returns bundle.model_version."""
    bundle.model_version = save_state(bundle.model, bundle.config, directory)
    return bundle.model_version
