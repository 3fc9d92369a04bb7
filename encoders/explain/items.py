"""What gets explained: one input of one modality, already through the bundle's preprocessing.

An `Item` keeps the model-ready tensors (the explanation is computed on exactly what the model saw)
and, for the pictures, what a person recognises: the decoded X-ray before padding, the report text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInputError

MODALITIES: tuple[str, ...] = ("xray", "ecg", "text")


@dataclass
class Item:
    modality: str
    tensors: dict[str, torch.Tensor]      # xray: pixels [1,S,S]; ecg: signals [12,T] mV, lead_mask [12]
    text: str | None = None               # text: the report or prompt as given
    image: np.ndarray | None = None       # xray: decoded grey [H, W] in [0, 1], before resize and padding
    name: str = ""                        # for titles: a file name or case id
    extra: dict[str, Any] = field(default_factory=dict)


def xray_item(bundle, image: Any, name: str = "") -> Item:
    """An X-ray (path, bytes, [H, W] array or PIL image) as the model sees it."""
    from encoders.preprocess.xray import decode_xray, to_unit_grey

    if isinstance(image, (bytes, bytearray, str, Path)):
        grey = decode_xray(bytes(image) if isinstance(image, bytearray) else image)
        name = name or (Path(image).name if isinstance(image, (str, Path)) else "")
    elif isinstance(image, np.ndarray):
        grey = to_unit_grey(image)
    elif hasattr(image, "save"):
        grey = to_unit_grey(np.asarray(image))
    else:
        raise InvalidInputError("xray", f"unsupported type {type(image).__name__}; send a file path, "
                                "PNG/JPEG/DICOM bytes, a 2-D array or a PIL image")
    return Item("xray", {"pixels": bundle.preprocess_xray(grey)}, image=grey, name=name)


def ecg_item(bundle, signal: np.ndarray, fs: float, lead_names: list[str], name: str = "") -> Item:
    """A 12-lead ECG ([n_leads, n_samples] mV at fs Hz) as the model sees it."""
    from encoders.config import ecg_num_samples
    from encoders.preprocess.ecg import window_start_s

    signals, mask = bundle.preprocess_ecg(signal, fs, lead_names)
    rate = float(bundle.config["ecg"]["sample_rate"])
    # prepare_ecg centre-crops long records: times in the explanation are offset by this from the file's.
    offset = window_start_s(np.asarray(signal).shape[-1] / float(fs), rate, ecg_num_samples(bundle.config))
    return Item("ecg", {"signals": signals, "lead_mask": mask}, name=name, extra={"window_start_s": offset})


def ecg_record_item(bundle, path: str | Path) -> Item:
    """A WFDB record (path with or without extension) as an ECG item."""
    from encoders.preprocess.ecg import read_ecg

    record = read_ecg(path)
    return ecg_item(bundle, record.signal, record.fs, record.lead_names, name=Path(path).name)


def text_item(text: str, name: str = "") -> Item:
    """A report or any free text."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInputError("text", "is empty; send the report or prompt text")
    return Item("text", {}, text=text, name=name)


def check_item(item: Item, field_name: str = "item") -> None:
    if item.modality not in MODALITIES:
        raise InvalidInputError(f"{field_name}.modality",
                                f"must be one of {', '.join(MODALITIES)}, got {item.modality!r}")
    needed = {"xray": ("pixels",), "ecg": ("signals", "lead_mask"), "text": ()}[item.modality]
    missing = [key for key in needed if key not in item.tensors]
    if missing or (item.modality == "text" and not (item.text and item.text.strip())):
        raise InvalidInputError(field_name, f"{item.modality} item lacks {missing or ['text']}; build it with "
                                f"encoders.explain.{item.modality}_item")
