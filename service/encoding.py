"""The served model: request items -> model inputs -> vectors, micro-batched across requests.

Decoding and preprocessing go through `encoders.preprocess` (the one path shared with training and
ingest) in the request thread, so a bad input fails its own request before it can join a batch; only
the forward passes are shared between requests (see `service.batching`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from encoders.errors import InvalidInputError
from index.records import RawInput
from protos.tribind.v1 import tribind_pb2 as pb
from service.batching import MicroBatcher
from service.convert import ecg_signal_to_array, item_modality
from service.errors import ServiceError, invalid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
ECG_MEDIA_TYPE = "application/x-npz"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"


@dataclass
class PreparedItem:
    """One decoded request item: what the encoder eats and the raw input the case store keeps."""

    modality: str
    model_input: Any            # xray: Tensor [1,S,S]; ecg: (Tensor [12,T], BoolTensor [12]); text: str
    raw: RawInput               # what GetCase returns and Reindex re-embeds


def xray_png_bytes(image: np.ndarray) -> bytes:
    """A decoded [0, 1] image as a 16-bit greyscale PNG (DICOM inputs are stored this way, window applied)."""
    from PIL import Image

    pixels = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 65535.0 + 0.5).astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def ecg_npz_bytes(signal: np.ndarray, rate_hz: float, lead_names: list[str]) -> bytes:
    """The ECG raw-input encoding of the case store (`ECG_MEDIA_TYPE`): signal [leads, samples] mV, fs, lead_names."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        signal=np.asarray(signal, dtype=np.float32),
        fs=np.float64(rate_hz),
        lead_names=np.asarray(lead_names, dtype=str),
    )
    return buffer.getvalue()


def ecg_from_npz(data: bytes) -> tuple[np.ndarray, float, list[str]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["signal"].astype(np.float32), float(npz["fs"]), [str(x) for x in npz["lead_names"]]


def _relocated(exc: InvalidInputError, root: str, prefix: str, renames: dict[str, str] | None = None) -> ServiceError:
    """An encoders error ("ecg.fs: ...") placed at the request field it came from ("items[2].ecg.signal.sampling_rate_hz")."""
    sub = exc.field or ""
    if sub == root:
        sub = ""
    elif sub.startswith(root + "."):
        sub = sub[len(root) + 1:]
    sub = (renames or {}).get(sub, sub)
    return invalid(f"{prefix}.{sub}" if sub else prefix, exc.reason)


class ServedModel:
    """The encoders bundle behind three micro-batchers (one per modality)."""

    def __init__(self, bundle: Any, max_batch: int = 32, max_wait_s: float = 0.005) -> None:
        self.bundle = bundle
        self.model = bundle.model.eval()
        self.model_version: str = str(bundle.model_version)
        self._batchers = {
            "xray": MicroBatcher("xray", self._encode_xray, max_batch, max_wait_s),
            "ecg": MicroBatcher("ecg", self._encode_ecg, max_batch, max_wait_s),
            "text": MicroBatcher("text", self._encode_text, max_batch, max_wait_s),
        }
        self.dim: int = int(self._encode_text(["dimension probe"]).shape[1])

    # -- request items -> model inputs ------------------------------------------------------------

    def prepare(self, item: pb.Item, field: str) -> PreparedItem:
        modality = item_modality(item, field)
        if modality == "xray":
            return self.prepare_xray(item.xray.data, f"{field}.xray.data")
        if modality == "ecg":
            return self.prepare_ecg(item.ecg, f"{field}.ecg")
        return self.prepare_text(item.text, f"{field}.text")

    def prepare_xray(self, data: bytes, field: str) -> PreparedItem:
        from encoders.preprocess.xray import decode_xray

        if not data:
            raise invalid(field, "no image bytes; send a PNG, JPEG or DICOM file")
        data = bytes(data)
        try:
            image = decode_xray(data)
            pixels = self.bundle.preprocess_xray(image)
        except InvalidInputError as exc:
            raise _relocated(exc, "xray", field) from None
        if data.startswith(PNG_MAGIC):
            raw = RawInput(data, "image/png")
        elif data.startswith(JPEG_MAGIC):
            raw = RawInput(data, "image/jpeg")
        else:
            raw = RawInput(xray_png_bytes(image), "image/png")
        return PreparedItem("xray", pixels, raw)

    def prepare_ecg(self, ecg: pb.Ecg, field: str) -> PreparedItem:
        source = ecg.WhichOneof("source")
        if source is None:
            raise invalid(field, "set either signal (samples, shape, leads, rate) or wfdb (header and signal bytes)")
        if source == "signal":
            field = f"{field}.signal"
            signal, rate, leads = ecg_signal_to_array(ecg.signal, field)
        else:
            from encoders.preprocess.ecg import decode_wfdb_bytes

            field = f"{field}.wfdb"
            wfdb = ecg.wfdb
            if not wfdb.header or not (wfdb.signal or wfdb.signal_files):
                raise invalid(field, "send both the .hea header and its signal file (signal, or signal_files)")
            signal_bytes = {name: bytes(data) for name, data in wfdb.signal_files.items()} or bytes(wfdb.signal)
            try:
                record = decode_wfdb_bytes(bytes(wfdb.header), signal_bytes)
            except InvalidInputError as exc:
                raise _relocated(exc, "ecg", field) from None
            signal, rate, leads = np.asarray(record.signal, dtype=np.float32), float(record.fs), list(record.lead_names)
        try:
            model_input = self.bundle.preprocess_ecg(signal, rate, leads)
        except InvalidInputError as exc:
            raise _relocated(exc, "ecg", field, {"fs": "sampling_rate_hz"}) from None
        return PreparedItem("ecg", model_input, RawInput(ecg_npz_bytes(signal, rate, leads), ECG_MEDIA_TYPE))

    def prepare_text(self, text: str, field: str) -> PreparedItem:
        if not text or not text.strip():
            raise invalid(field, "the text is empty; send report text or a finding to search for")
        return PreparedItem("text", text.strip(), RawInput(text.encode("utf-8"), TEXT_MEDIA_TYPE))

    def prepare_raw(self, modality: str, raw: RawInput, field: str) -> PreparedItem:
        """A stored raw input back to model input (Reindex, and queries by a case without vectors)."""
        if modality == "xray":
            return self.prepare_xray(raw.data, field)
        if modality == "ecg":
            signal, rate, leads = ecg_from_npz(raw.data)
            model_input = self.bundle.preprocess_ecg(signal, rate, leads)
            return PreparedItem("ecg", model_input, raw)
        return self.prepare_text(raw.data.decode("utf-8"), field)

    # -- model inputs -> vectors ------------------------------------------------------------------

    def embed(self, items: list[PreparedItem], is_active: Any = None, timeout_s: float | None = None) -> np.ndarray:
        """Vectors [n, dim] (L2-normalised, float32) in the order of `items`."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for modality, batcher in self._batchers.items():
            positions = [i for i, item in enumerate(items) if item.modality == modality]
            if positions:
                rows = batcher.encode([items[i].model_input for i in positions], is_active, timeout_s)
                out[positions] = rows
        return out

    def close(self) -> None:
        for batcher in self._batchers.values():
            batcher.close()

    @torch.inference_mode()
    def _encode_xray(self, inputs: list[torch.Tensor]) -> np.ndarray:
        return self.model.encode_xray(torch.stack(inputs)).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_ecg(self, inputs: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
        signals = torch.stack([torch.as_tensor(s) for s, _ in inputs])
        masks = torch.stack([torch.as_tensor(m) for _, m in inputs])
        return self.model.encode_ecg(signals, masks).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.bundle.tokenizer(list(texts))
        return self.model.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu().numpy()
