"""tribind encoders: the X-ray, ECG and text towers, the joint model, presets, checkpoints, zero-shot.

    from encoders import create_model
    bundle = create_model("tiny", checkpoint="default")
    z = bundle.model.encode_text(**bundle.tokenizer(["cardiomegaly"]))
"""

from encoders.config import list_presets, resolve_config
from encoders.factory import ModelBundle, Tokenizer, create_model, load_encoder, save_checkpoint
from encoders.joint_model import TriBindModel

__all__ = [
    "ModelBundle",
    "Tokenizer",
    "TriBindModel",
    "create_model",
    "list_presets",
    "load_encoder",
    "resolve_config",
    "save_checkpoint",
]
