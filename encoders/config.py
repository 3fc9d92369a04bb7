"""Model presets: JSON files in `encoders/presets/`, resolved and checked into one plain dict.

Config is data (as in open_clip's model configs): a preset fully describes the architecture, so a
checkpoint's `config.json` is enough to rebuild the model that wrote it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from encoders.errors import InvalidInputError

PRESET_DIR = Path(__file__).resolve().parent / "presets"

_REQUIRED: dict[str, tuple[str, ...]] = {
    "xray": ("image_size", "patch_size", "width", "layers", "heads", "mlp_ratio", "dropkey_start", "dropkey_end"),
    "ecg": ("sample_rate", "seconds", "patch_samples", "width", "layers", "heads", "mlp_ratio",
            "dropkey_start", "dropkey_end"),
    "text": ("pooling", "max_length", "lora"),
}
_POOLINGS = ("mean", "cls", "last", "mean_query", "sentence_query")
_LOSS_TERMS = ("xray_text", "ecg_text", "xray_ecg")
_TEXT_PAIRS = ("xray_text", "ecg_text")


def list_presets() -> list[str]:
    """Names of the registered presets (the JSON files in `encoders/presets/`)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def resolve_config(preset_or_config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """A preset name, a path to a preset JSON, or a dict -> a validated deep copy."""
    if isinstance(preset_or_config, dict):
        config = copy.deepcopy(preset_or_config)
    else:
        text = str(preset_or_config)
        path = Path(text)
        if text in list_presets():
            path = PRESET_DIR / f"{text}.json"
        elif not (path.suffix == ".json" and path.is_file()):
            raise InvalidInputError(
                "preset",
                f"unknown preset {text!r}; valid presets: {', '.join(list_presets())} (or a path to a preset .json file)",
            )
        config = json.loads(path.read_text())
    validate_config(config)
    return config


def validate_config(config: dict[str, Any]) -> None:
    """Raise `InvalidInputError` naming the first missing or unusable key."""
    if not isinstance(config.get("embed_dim"), int) or config["embed_dim"] <= 0:
        raise InvalidInputError("config.embed_dim", "must be a positive integer (the shared embedding size)")
    for tower, keys in _REQUIRED.items():
        section = config.get(tower)
        if not isinstance(section, dict):
            raise InvalidInputError(f"config.{tower}", "missing section; copy one from encoders/presets/tiny.json")
        for key in keys:
            if key not in section:
                raise InvalidInputError(f"config.{tower}.{key}", "missing; see encoders/presets/tiny.json for an example")
    xray = config["xray"]
    if xray["image_size"] % xray["patch_size"]:
        raise InvalidInputError("config.xray.patch_size", "must divide image_size exactly")
    stem = xray.get("stem", "patch")  # not setdefault: the config is hashed into model_version
    if stem not in ("patch", "conv"):
        raise InvalidInputError("config.xray.stem", f"got {stem!r}; use 'patch' (one strided convolution, as in ViT) "
                                "or 'conv' (stride-2 3x3 convolutions, Xiao et al. 2021)")
    patch = int(xray["patch_size"])
    if stem == "conv" and (patch < 2 or patch & (patch - 1)):
        raise InvalidInputError("config.xray.patch_size", f"is {patch}; a conv stem halves the image per layer, "
                                "so the patch size must be a power of two (4, 8, 16, 32)")
    registers = xray.get("registers", 0)  # not setdefault: the config is hashed into model_version
    if isinstance(registers, bool) or not isinstance(registers, int) or not 0 <= registers <= 64:
        raise InvalidInputError("config.xray.registers", f"got {registers!r}; use an integer from 0 (none) to 64 "
                                "(Darcet et al. 2024 compared 1 to 16 register tokens)")
    ecg = config["ecg"]
    ecg_stem = ecg.get("stem", "patch")  # not setdefault: the config is hashed into model_version
    if ecg_stem not in ("patch", "patch_conv"):
        raise InvalidInputError("config.ecg.stem", f"got {ecg_stem!r}; use 'patch' (one strided convolution per "
                                "time patch) or 'patch_conv' (that plus a convolutional event branch, same token grid)")
    if not isinstance(ecg.get("rhythm_token", False), bool):
        raise InvalidInputError("config.ecg.rhythm_token", f"got {ecg['rhythm_token']!r}; use true (a token from the "
                                "record's spectrum after the time tokens) or false")
    n_samples = int(round(ecg["sample_rate"] * ecg["seconds"]))
    if n_samples % ecg["patch_samples"]:
        raise InvalidInputError("config.ecg.patch_samples", "must divide sample_rate * seconds exactly")
    for tower in ("xray", "ecg"):
        section = config[tower]
        if section["width"] % section["heads"]:
            raise InvalidInputError(f"config.{tower}.heads", "must divide width exactly")
        for key in ("dropkey_start", "dropkey_end"):
            if not 0.0 <= section[key] < 1.0:
                raise InvalidInputError(f"config.{tower}.{key}", "is a drop probability; use a value in [0, 1)")
    text = config["text"]
    if text["pooling"] not in _POOLINGS:
        raise InvalidInputError("config.text.pooling", f"must be one of {', '.join(_POOLINGS)}")
    if not text.get("model") and not text.get("hf_config"):
        raise InvalidInputError("config.text.model", "give a Hugging Face model path, or hf_config for a random-init model")
    for key in ("r", "alpha", "dropout", "target_modules"):
        if key not in text["lora"]:
            raise InvalidInputError(f"config.text.lora.{key}", "missing; see encoders/presets/tiny.json")
    loss = config.setdefault("loss", {})
    for term in _LOSS_TERMS:
        loss.setdefault(term, 1.0)
    check_label_targets(loss.get("label_targets", 0.0))
    unknown = set(loss) - set(_LOSS_TERMS) - {"label_targets"}
    if unknown:
        raise InvalidInputError("config.loss", f"unknown terms {sorted(unknown)}; valid: {', '.join(_LOSS_TERMS)}")


def check_label_targets(shares: Any) -> None:
    """`loss.label_targets`: one share for both text pairs, or {pair: share}, each in [0, 1)."""
    per_pair = shares if isinstance(shares, dict) else dict.fromkeys(_TEXT_PAIRS, shares)
    for pair, share in per_pair.items():
        if pair not in _TEXT_PAIRS:
            raise InvalidInputError(f"config.loss.label_targets.{pair}", f"unknown pair {pair!r}: only the pairs with "
                                    "text take label-aware targets (xray_text, ecg_text); X-ray<->ECG matches the "
                                    "same case")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share < 1.0:
            raise InvalidInputError("config.loss.label_targets", f"{pair}={share!r} is the share of a target spread "
                                    "over cases with the same findings; use a value in [0, 1) (0: CLIP's one-hot "
                                    "targets), or one per pair: {\"xray_text\": ..., \"ecg_text\": ...}")


def label_target_shares(loss: dict[str, Any]) -> dict[str, float]:
    """`loss.label_targets` (absent, one share, or one per text pair) as {pair: share} for both text pairs."""
    shares = loss.get("label_targets", 0.0)
    if isinstance(shares, dict):
        return {pair: float(shares.get(pair, 0.0)) for pair in _TEXT_PAIRS}
    return dict.fromkeys(_TEXT_PAIRS, float(shares))


def ecg_num_samples(config: dict[str, Any]) -> int:
    """Samples per lead the ECG tower expects (rate x seconds)."""
    return int(round(config["ecg"]["sample_rate"] * config["ecg"]["seconds"]))
