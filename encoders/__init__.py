"""tribind encoders: the X-ray, ECG and text towers, the joint model, presets, checkpoints, zero-shot.

    from encoders import create_model, load_model, load_encoder
    bundle = load_model("default")                        # = create_model(None, checkpoint="default")
    z = bundle.model.encode_text(**bundle.tokenizer(["cardiomegaly"]))
    ecg = load_encoder("default", "ecg")                  # one encoder as a plain nn.Module

The public names resolve lazily (PEP 562): importing a light submodule such as `encoders.errors`,
`encoders.preprocess` or `encoders.labelsets` must not pay for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EncoderBackbone": "encoders.backbone",
    "ModelBundle": "encoders.factory",
    "Tokenizer": "encoders.factory",
    "TriBindModel": "encoders.joint_model",
    "create_model": "encoders.factory",
    "list_presets": "encoders.config",
    "load_encoder": "encoders.backbone",
    "load_model": "encoders.factory",
    "resolve_config": "encoders.config",
    "save_checkpoint": "encoders.factory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'encoders' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
