"""`tribind finetune`: a multi-label head on one pretrained encoder, early-stopped on validation,
reported on test beside the same run from a random-init encoder.

Splits: the source's own train/val/test when it has all three; a source with one held-out split
(NIH train/ + valid/) tests on it and validates on 1/8 of the training patients; else PTB-XL strat_folds (highest fold
= test, next = val, the rest train; the full PTB-XL gives 1-8 / 9 / 10); else a patient hash
(80/10/10), so no patient is on two sides. Frozen (default): the encoder's features are computed once
and only the linear head trains. `unfreeze`: the encoder trains too, at a tenth of the head's rate
(large steps would wash out what pretraining learned).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data.baseline import random_init_bundle
from training.data.case_tensors import PreparedCases, batch_slices, label_matrix, prepare_cases
from training.data.probe import auroc_table
from training.data.sources import SourceError, open_source, parse_source
from training.data.splits import patient_split

ENCODER_LR_FACTOR = 0.1


@dataclass
class FinetuneConfig:
    modality: str | None = None     # "ecg" / "xray"; None = what the source carries
    task: str | None = None         # PTB-XL task; None = the source's labels
    unfreeze: bool = False
    epochs: int = 30
    patience: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    limit: int | None = None


def finetune_with_baseline(checkpoint: str | Path, data: str, out: str | Path, config: FinetuneConfig,
                           baseline: bool = True) -> dict[str, Any]:
    """Fine-tune the checkpoint's encoder and (optionally) a random-init one; write `out/`; return metrics."""
    from encoders.backbone import EncoderBackbone, load_encoder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records, labels, modality, source_name = _load_records(data, config)
    pretrained = load_encoder(checkpoint, modality)
    bundle = pretrained._bundle
    prepared = prepare_cases(bundle, records, modality)
    if len(prepared.records) < 10:
        raise SourceError(f"{source_name}: only {len(prepared.records)} usable {modality} records; need at least 10")
    label_key = f"labels_{config.task}" if config.task and "ptbxl" in source_name else None
    targets = label_matrix(prepared.records, labels, label_key)
    keep = targets.sum(axis=0) > 0
    labels = [label for label, k in zip(labels, keep) if k]
    targets = targets[:, keep]
    split, protocol = _splits(prepared)

    result: dict[str, Any] = {
        "source": source_name, "task": config.task, "modality": modality, "labels": labels,
        "split_protocol": protocol, "split_sizes": {s: int((split == s).sum()) for s in ("train", "val", "test")},
        "config": asdict(config), "checkpoint": str(checkpoint), "model_version": pretrained.model_version,
    }
    trained_head, result["finetuned"] = _run(pretrained, prepared, targets, labels, split, config)
    torch.save({"head": trained_head.state_dict(), "labels": labels, "modality": modality,
                "encoder": pretrained.state_dict() if config.unfreeze else None,
                "model_version": pretrained.model_version}, out / "finetuned.pt")
    if baseline:
        random_encoder = EncoderBackbone(random_init_bundle(pretrained.config, config.seed), modality)
        _, result["random_init"] = _run(random_encoder, prepared, targets, labels, split, config)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def _load_records(data: str, config: FinetuneConfig):
    kind = parse_source(data)[0]
    options: dict[str, Any] = {"progress": False}
    if config.task and kind == "ptbxl":
        options["task"] = config.task
    if config.limit:
        options["limit"] = config.limit
    source = open_source(data, **options)
    records = list(source)
    modality = config.modality or ("ecg" if any(r.ecg_path for r in records) else "xray")
    labels = list(source.label_vocabulary)
    if not labels:
        raise SourceError(f"{source.name} has no labels to fine-tune on")
    return records, labels, modality, source.name


def _splits(prepared: PreparedCases) -> tuple[np.ndarray, str]:
    records = prepared.records
    given = {r.split for r in records}
    if {"train", "val", "test"} <= given:
        return np.array([r.split for r in records]), "the source's train/val/test splits"
    if "train" in given and len(given & {"val", "test"}) == 1:
        # One published held-out split (NIH train/ + valid/): it is the test set, and validation is
        # carved from the training patients (by patient hash) so test stays untouched until the end.
        split = np.array(["test" if r.split in ("val", "test") else
                          "val" if patient_split(r.patient_id, (0.875, 0.125, 0.0)) == "val" else "train"
                          for r in records])
        return split, "held-out split as test; val = 1/8 of the training patients"
    folds = [r.metadata.get("strat_fold", "") for r in records]
    distinct = sorted({int(f) for f in folds if f.isdigit()})
    if len(distinct) >= 3:
        test_fold, val_fold = distinct[-1], distinct[-2]
        split = np.array(["test" if f == str(test_fold) else "val" if f == str(val_fold) else "train" for f in folds])
        return split, f"strat_fold {test_fold} test, {val_fold} val, others train"
    return np.array([patient_split(r.patient_id) for r in records]), "patient hash 80/10/10"


def _run(backbone, prepared: PreparedCases, targets: np.ndarray, labels: list[str], split: np.ndarray,
         config: FinetuneConfig) -> tuple[nn.Module, dict[str, Any]]:
    torch.manual_seed(config.seed)
    encoder = copy.deepcopy(backbone) if config.unfreeze else backbone
    head = nn.Linear(encoder.feature_dim, len(labels))
    y = torch.from_numpy(targets.astype(np.float32))
    index = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    if config.unfreeze:
        encoder.train()
        params = [{"params": head.parameters(), "lr": config.lr},
                  {"params": encoder.parameters(), "lr": config.lr * ENCODER_LR_FACTOR}]
        def features(rows: np.ndarray) -> torch.Tensor:
            return encoder(*_inputs(prepared, rows))
    else:
        encoder.eval()
        for p in encoder.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            cached = torch.cat([encoder(*_inputs(prepared, np.arange(len(split))[part]))
                                for part in batch_slices(len(split), 128)])
        params = [{"params": head.parameters(), "lr": config.lr}]
        def features(rows: np.ndarray) -> torch.Tensor:
            return cached[torch.from_numpy(rows)]
    optimiser = torch.optim.AdamW(params, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = np.random.default_rng(config.seed)
    best, best_state, stale, history = -np.inf, None, 0, []
    for epoch in range(config.epochs):
        if config.unfreeze:
            encoder.train()
        order = generator.permutation(index["train"])
        for part in batch_slices(len(order), config.batch_size):
            rows = order[part]
            loss = loss_fn(head(features(rows)), y[torch.from_numpy(rows)])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        val = _evaluate(encoder, head, features, index["val"], targets, labels, config.unfreeze)
        score = val["macro_auroc"] if val["macro_auroc"] is not None else -val["loss"]
        history.append({"epoch": epoch + 1, "val_macro_auroc": val["macro_auroc"], "val_loss": round(val["loss"], 4)})
        if score > best:
            best, stale = score, 0
            best_state = (copy.deepcopy(head.state_dict()),
                          copy.deepcopy(encoder.state_dict()) if config.unfreeze else None)
        else:
            stale += 1
            if stale >= config.patience:
                break
    head.load_state_dict(best_state[0])
    if best_state[1] is not None:
        encoder.load_state_dict(best_state[1])
    test = _evaluate(encoder, head, features, index["test"], targets, labels, config.unfreeze)
    return head, {"test": test, "epochs_run": len(history), "best_val": best if np.isfinite(best) else None,
                  "history": history}


def _evaluate(encoder, head, features, rows: np.ndarray, targets: np.ndarray, labels: list[str],
              unfreeze: bool) -> dict[str, Any]:
    if unfreeze:
        encoder.eval()
    with torch.no_grad():
        logits = torch.cat([head(features(rows[part])) for part in batch_slices(len(rows), 128)]) if len(rows) else \
            torch.zeros(0, len(labels))
    y = torch.from_numpy(targets[rows].astype(np.float32))
    table = auroc_table(targets[rows], torch.sigmoid(logits).numpy(), labels)
    table["loss"] = float(nn.functional.binary_cross_entropy_with_logits(logits, y)) if len(rows) else float("nan")
    return table


def _inputs(prepared: PreparedCases, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    index = torch.from_numpy(np.asarray(rows))
    if "signals" in prepared.inputs:
        return prepared.inputs["signals"][index], prepared.inputs["lead_mask"][index]
    return (prepared.inputs["pixels"][index],)
