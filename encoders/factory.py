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
from encoders.sentences import sentence_spans
from encoders.text_encoder import SENTENCE_POOLING, resolve_model_path

_ARCHITECTURE_KEYS = ("embed_dim", "xray", "ecg", "text")


class Tokenizer:
    """texts -> {"input_ids", "attention_mask"}: padded to the batch's longest, truncated to max_length.

    For "sentence_query" text towers each sentence is tokenised on its own, with its own [CLS] ...
    [SEP], and the pieces are concatenated: the tower finds the sentences again by their [CLS], so a
    prompt and the same sentence inside a report are the same tokens. Truncation then keeps whole
    sentences and cuts only the last one (closed by its [SEP]).
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        from transformers import AutoTokenizer

        self.max_length = int(cfg["max_length"])
        self.per_sentence = cfg.get("pooling") == SENTENCE_POOLING
        self._tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg.get("tokenizer") or cfg["model"]))
        if self._tok.pad_token is None:  # decoder LLMs ship without one
            self._tok.pad_token = self._tok.eos_token
        if self.per_sentence and (self._tok.cls_token_id is None or self._tok.sep_token_id is None):
            raise InvalidInputError("config.text.pooling", f"{SENTENCE_POOLING} needs a tokenizer with [CLS] and [SEP] "
                                    "tokens (BERT family)")

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise InvalidInputError("texts", "expected a non-empty list of strings")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"texts[{i}]", "is empty or not a string; send the report or prompt text")
        if self.per_sentence:
            return self.pad(self.encode_each(texts))
        encoded = self._tok(list(texts), padding="longest", truncation=True, max_length=self.max_length,
                            return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def encode_each(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, truncated like `__call__` and not padded: tokenise a corpus once,
        then `pad` any subset of it into the same tensors `__call__` would give."""
        if not texts:  # the HF tokenizer rejects an empty batch
            return []
        if self.per_sentence:
            return [[token for token, _ in self._sentence_tokens(text)] for text in texts]
        return [list(ids) for ids in self._tok(list(texts), truncation=True, max_length=self.max_length)["input_ids"]]

    def pad(self, rows: list[Any]) -> dict[str, torch.Tensor]:
        """Rows from `encode_each` (lists or 1-D integer arrays), padded to the longest (on the
        tokenizer's own padding side)."""
        ids = [r.tolist() if hasattr(r, "tolist") else list(r) for r in rows]
        encoded = self._tok.pad({"input_ids": ids}, padding="longest", return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def token_spans(self, text: str) -> list[tuple[int, int, int] | None]:
        """Per token of `self([text])` (same truncation): (start, end, word), its [start, end) characters
        in `text` and a word number unique within the text, or None for a special token."""
        if self.per_sentence:
            return [span for _, span in self._sentence_tokens(text)]
        encoded = self._tok(text, truncation=True, max_length=self.max_length, return_offsets_mapping=True)
        return [None if word is None else (start, end, word)
                for word, (start, end) in zip(encoded.word_ids(), encoded["offset_mapping"])]

    def _sentence_tokens(self, text: str) -> list[tuple[int, tuple[int, int, int] | None]]:
        """(token id, span as in `token_spans`) of every sentence's [CLS] ... [SEP], up to max_length."""
        spans = sentence_spans(text) or [(0, len(text))]
        encoded = self._tok([text[a:b] for a, b in spans], return_offsets_mapping=True)
        out: list[tuple[int, tuple[int, int, int] | None]] = []
        words_before = 0
        for k, (start, _) in enumerate(spans):
            ids = encoded["input_ids"][k]
            word_ids = encoded.word_ids(k)
            pieces = [(token, None if word is None else (start + a, start + b, words_before + word))
                      for token, word, (a, b) in zip(ids, word_ids, encoded["offset_mapping"][k])]
            words_before += 1 + max((w for w in word_ids if w is not None), default=-1)
            room = self.max_length - len(out)
            if len(pieces) > room:
                if room >= 3:  # [CLS], at least one token, [SEP]
                    out.extend(pieces[: room - 1])
                    out.append((self._tok.sep_token_id, None))
                break
            out.extend(pieces)
        return out


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
