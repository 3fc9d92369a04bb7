"""Cases prepared once into model-ready tensors, with a presence flag per modality.

Training and evaluation both hold the whole (small) data set in memory as tensors: preprocessing an
ECG (resample + band-pass) or an X-ray costs more than a tiny model's step, so it is done once,
through the bundle's own preprocessors (the same path as ingest and serving). Missing modalities get
zero rows and a False flag; the loss and the metrics read the flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from encoders.factory import ModelBundle
from training.precision import autocast


@dataclass
class CaseTensors:
    case_ids: list[str]
    labels: list[tuple[str, ...]]
    pixels: torch.Tensor        # [N, 1, S, S] float16 (zeros where has_xray is False)
    signals: torch.Tensor       # [N, 12, T] float32 mV
    lead_mask: torch.Tensor     # [N, 12] bool
    reports: list[str | None]
    has_xray: torch.Tensor      # [N] bool
    has_ecg: torch.Tensor       # [N] bool
    has_text: torch.Tensor      # [N] bool

    def __len__(self) -> int:
        return len(self.case_ids)

    def present(self, modality: str) -> torch.Tensor:
        return {"xray": self.has_xray, "ecg": self.has_ecg, "text": self.has_text}[modality]


def build_case_tensors(bundle: ModelBundle, items: Iterable[tuple[str, Sequence[str], object, tuple | None,
                                                                   str | None]]) -> CaseTensors:
    """items: (case_id, labels, X-ray (raw image, or a prepared [1, S, S] tensor) or None,
    (signal, fs, lead_names) or None, report or None)."""
    size = int(bundle.config["xray"]["image_size"])
    n_samples = int(round(bundle.config["ecg"]["sample_rate"] * bundle.config["ecg"]["seconds"]))
    ids, labels, pixels, signals, masks, reports = [], [], [], [], [], []
    has_x, has_e = [], []
    for case_id, case_labels, image, ecg, report in items:
        ids.append(case_id)
        labels.append(tuple(case_labels))
        if isinstance(image, torch.Tensor):  # already through bundle.preprocess_xray
            pixels.append(image.to(torch.float16))
        elif image is not None:
            pixels.append(bundle.preprocess_xray(image).to(torch.float16))
        else:
            pixels.append(torch.zeros(1, size, size, dtype=torch.float16))
        has_x.append(image is not None)
        if ecg is not None:
            samples, lead_mask = bundle.preprocess_ecg(*ecg)
        else:
            samples, lead_mask = torch.zeros(12, n_samples), torch.zeros(12, dtype=torch.bool)
        signals.append(samples)
        masks.append(lead_mask)
        has_e.append(ecg is not None)
        reports.append(report if report and report.strip() else None)
    return CaseTensors(
        case_ids=ids,
        labels=labels,
        pixels=torch.stack(pixels) if pixels else torch.zeros(0, 1, size, size, dtype=torch.float16),
        signals=torch.stack(signals) if signals else torch.zeros(0, 12, n_samples),
        lead_mask=torch.stack(masks) if masks else torch.zeros(0, 12, dtype=torch.bool),
        reports=reports,
        has_xray=torch.tensor(has_x, dtype=torch.bool),
        has_ecg=torch.tensor(has_e, dtype=torch.bool),
        has_text=torch.tensor([r is not None for r in reports], dtype=torch.bool),
    )


def embed_cases(bundle: ModelBundle, data: CaseTensors, batch_size: int = 128,
                modalities: tuple[str, ...] = ("xray", "ecg", "text"), device: torch.device | None = None,
                precision: str = "fp32") -> dict[str, torch.Tensor]:
    """Unit embeddings of `modalities`, [N, D] float32 on the CPU each; rows of absent modalities are zero.

    Inference embeddings: the model runs in eval mode (no DropKey, no dropout) on `device` (default:
    where the model is), under `precision`'s autocast (training.precision)."""
    model = bundle.model
    device = device or next(model.parameters()).device
    dim = model.embed_dim
    out = {m: torch.zeros(len(data), dim) for m in modalities}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(precision, device):
            for modality in ("xray", "ecg"):
                if modality not in modalities:
                    continue
                rows = torch.nonzero(data.present(modality)).flatten()
                for chunk in rows.split(batch_size):
                    if modality == "xray":
                        emb = model.encode_xray(data.pixels[chunk].float().to(device))
                    else:
                        emb = model.encode_ecg(data.signals[chunk].to(device), data.lead_mask[chunk].to(device))
                    out[modality][chunk] = emb.float().cpu()
            if "text" in modalities:
                with model.text.memoised_sentences():
                    _embed_reports(bundle, data, batch_size, device, out["text"])
    finally:
        model.train(was_training)
    return out


def _embed_reports(bundle: ModelBundle, data: CaseTensors, batch_size: int, device: torch.device,
                   out: torch.Tensor) -> None:
    """Fill the rows of `out` [N, D] of the cases that have a report with their text embeddings."""
    rows = torch.nonzero(data.has_text).flatten().tolist()
    # Length-sorted batches: reports vary 2-4x in length, padding would be most of the work.
    rows.sort(key=lambda i: len(data.reports[i]))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        tokens = bundle.tokenizer([data.reports[i] for i in chunk])
        emb = bundle.model.encode_text(**{k: v.to(device) for k, v in tokens.items()})
        out[torch.tensor(chunk)] = emb.float().cpu()
