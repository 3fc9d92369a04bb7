"""Zero-shot and linear-probe evaluation on real data (`tribind eval --data SOURCE`), with the same
numbers for a random-init encoder of the same preset beside them.

- zero-shot: every case with the modality is scored against the label set's positive/negative prompt
  ensembles (`encoders.zero_shot`); for PTB-XL the ECG and the report (text) are both scored;
- probe: logistic regression on the frozen image/ECG tower features (see `training.data.probe`); it
  never touches the text model, so it measures the ECG (or X-ray) encoder alone;
- random_init: the same preset with fresh weights (seeded), same cases, same protocol.

JSON keys follow the phantom evaluation: zero_shot.<modality>.{macro_auroc, per_label},
probe.<modality>.{macro_auroc, per_label}, random_init.{zero_shot, probe}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.data.baseline import random_init_bundle
from training.data.case_tensors import encode_prepared, label_matrix, prepare_cases
from training.data.probe import auroc_table, linear_probe_scores, probe_groups
from training.data.sources import CaseSource, SourceError, open_source, parse_source

# PTB-XL subclasses have no label set in encoders/labelsets; ours lives beside this module.
_PTBXL_SUBCLASS = Path(__file__).with_name("ptbxl_subclass_labelset.json")
# (source kind, task) -> (label set, modalities scored zero-shot, modality probed)
_PROTOCOLS: dict[tuple[str, str], tuple[str, tuple[str, ...], str]] = {
    ("ptbxl", "superclass"): ("ptbxl_super", ("ecg", "text"), "ecg"),
    ("ptbxl", "subclass"): (str(_PTBXL_SUBCLASS), ("ecg", "text"), "ecg"),
    ("ptbxl", "statements"): ("ptbxl_statements", ("ecg", "text"), "ecg"),
    ("nih", "findings"): ("nih14", ("xray",), "xray"),
    ("chexpert", "findings"): ("chexpert14", ("xray",), "xray"),
    ("mimic-cxr", "findings"): ("chexpert14", ("xray", "text"), "xray"),
}
DEFAULT_TASK = {"ptbxl": "superclass", "nih": "findings", "chexpert": "findings", "mimic-cxr": "findings"}


def evaluate_real(bundle, source: str | CaseSource, task: str | None = None, labelset: str | None = None,
                  limit: int | None = None, random_init: bool = True, seed: int = 0,
                  batch_size: int = 64) -> dict[str, Any]:
    """Zero-shot and probe AUROCs of `bundle` on a real source, random-init baseline beside."""
    from encoders.labelsets import load_labelset

    kind = parse_source(source)[0] if isinstance(source, str) else source.name.split(":")[0].split("@")[0]
    task = task or DEFAULT_TASK.get(kind)
    if (kind, task) not in _PROTOCOLS and labelset is None:
        known = ", ".join(f"{k}:{t}" for k, t in _PROTOCOLS)
        raise SourceError(f"no evaluation protocol for source {kind!r} task {task!r}; known: {known} "
                          "(or pass labelset=)")
    set_name, zero_shot_modalities, probe_modality = _PROTOCOLS.get(
        (kind, task), (labelset, ("ecg", "xray", "text"), "ecg"))
    labels_def = load_labelset(labelset or set_name)
    if isinstance(source, str):
        options: dict[str, Any] = {"progress": False}
        if kind == "ptbxl":
            options["task"] = task
        if limit:
            options["limit"] = limit
        source = open_source(source, **options)
    records = list(source)
    if not records:
        raise SourceError(f"{source.name}: no records to evaluate ({len(source.skipped)} skipped)")
    label_key = f"labels_{task}" if kind == "ptbxl" else None

    baseline = random_init_bundle(bundle.config, seed).model if random_init else None
    result: dict[str, Any] = {
        "source": source.name, "task": task, "labelset": labels_def.name, "model_version": bundle.model_version,
        "n_records": len(records), "zero_shot": {}, "probe": {},
        "random_init": {"zero_shot": {}, "probe": {}} if baseline is not None else None,
        "notes": [],
    }
    for modality in dict.fromkeys(zero_shot_modalities + (probe_modality,)):
        modality_labels = labels_def.for_modality(modality)
        ids = [label.id for label in modality_labels]
        if modality == "text":
            cases = [r for r in records if r.report]
            if not cases:
                continue
            targets = label_matrix(cases, ids, label_key)
            for name, model in (("trained", bundle.model), ("random", baseline)):
                if model is None:
                    continue
                embeddings = _embed_reports(bundle, model, [r.report for r in cases], batch_size)
                table = auroc_table(targets, _zero_shot(bundle, model, embeddings, modality_labels), ids)
                _store(result, name, "zero_shot", modality, table)
            continue
        prepared = prepare_cases(bundle, records, modality)
        if prepared.failures:
            result["notes"].append(f"{len(prepared.failures)} {modality} files failed to decode "
                                   f"(first: {prepared.failures[0][0]}: {prepared.failures[0][1]})")
        if not prepared.records:
            continue
        targets = label_matrix(prepared.records, ids, label_key)
        protocol, groups = probe_groups([r.split for r in prepared.records],
                                        [r.metadata.get("strat_fold") for r in prepared.records],
                                        [r.patient_id for r in prepared.records])
        for name, model in (("trained", bundle.model), ("random", baseline)):
            if model is None:
                continue
            if modality in zero_shot_modalities:
                embeddings = torch.from_numpy(encode_prepared(model, prepared, modality, batch_size))
                table = auroc_table(targets, _zero_shot(bundle, model, embeddings, modality_labels), ids)
                _store(result, name, "zero_shot", modality, table)
            if modality == probe_modality:
                features = encode_prepared(model, prepared, modality, batch_size, features=True)
                scores = linear_probe_scores(features, targets, groups, seed=seed)
                held_out = groups >= 0
                table = auroc_table(targets[held_out], scores[held_out], ids)
                table["protocol"] = protocol
                _store(result, name, "probe", modality, table)
    return result


def format_real_eval(result: dict[str, Any]) -> str:
    """A per-label table: trained vs random-init, zero-shot and probe, for every modality."""
    lines = [f"{result['source']}  task={result['task']}  labelset={result['labelset']}  "
             f"records={result['n_records']}  model={result['model_version']}"]
    random = result.get("random_init") or {"zero_shot": {}, "probe": {}}
    for kind in ("zero_shot", "probe"):
        for modality, table in result[kind].items():
            base = random.get(kind, {}).get(modality, {})
            header = f"{kind} {modality}" + (f"  ({table['protocol']})" if "protocol" in table else "")
            lines.append("")
            lines.append(header)
            lines.append(f"  {'label':<28}{'n+':>6}{'trained':>10}{'random':>10}")
            for label, value in table["per_label"].items():
                lines.append(f"  {label:<28}{table['n_positive'][label]:>6}{_fmt(value):>10}"
                             f"{_fmt(base.get('per_label', {}).get(label)):>10}")
            lines.append(f"  {'macro':<28}{'':>6}{_fmt(table['macro_auroc']):>10}{_fmt(base.get('macro_auroc')):>10}")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _store(result: dict[str, Any], name: str, kind: str, modality: str, table: dict) -> None:
    target = result[kind] if name == "trained" else result["random_init"][kind]
    target[modality] = table


def _with_model(bundle, model):
    """The bundle with another model (same tokenizer and preprocessors), for encoders.zero_shot."""
    import dataclasses

    return dataclasses.replace(bundle, model=model)


def _embed_reports(bundle, model, texts: list[str], batch_size: int) -> torch.Tensor:
    from encoders.zero_shot import embed_texts

    return embed_texts(_with_model(bundle, model), texts, batch_size)


def _zero_shot(bundle, model, embeddings: torch.Tensor, labels) -> np.ndarray:
    from encoders.zero_shot import classify

    return classify(_with_model(bundle, model), embeddings, labels).numpy()
