"""`tribind inspect`: read a source without ingesting it, decode every file, and report what was read.

Reading a source only checks that files exist; inspection also decodes each X-ray and ECG through the
same preprocessing the model uses, so a record that would fail at ingest or training time is reported
here, with its reason, instead.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from encoders.errors import InvalidInputError
from training.data.records import CaseRecord
from training.data.sources import CaseSource

# The check runs the model's own preprocessing at a typical contract (500 Hz, 10 s; 224 px).
CHECK_ECG_FS = 500.0
CHECK_ECG_SAMPLES = 5000
CHECK_XRAY_SIZE = 224
MAX_LISTED_SKIPS = 50


def inspect_source(source: CaseSource, verify: bool = True) -> dict[str, Any]:
    """Counts, skips with reasons, label vocabulary and one sample record of a source."""
    read = 0
    decode_failures: list[tuple[str, str]] = []
    labels: Counter[str] = Counter()
    modalities: Counter[str] = Counter()
    splits: Counter[str] = Counter()
    ecg_rates: Counter[str] = Counter()
    sample: CaseRecord | None = None
    for record in source:
        if verify:
            problem = decode_problem(record, ecg_rates)
            if problem:
                decode_failures.append((record.case_id, problem))
                continue
        read += 1
        sample = sample or record
        labels.update(record.labels)
        modalities.update(record.modalities())
        splits[record.split or "none"] += 1
    skipped = list(source.skipped) + decode_failures
    reasons = Counter(text.split(":", 1)[0] for _, text in skipped)
    return {
        "source": source.name,
        "records_read": read,
        "records_skipped": len(skipped),
        "skipped_by_reason": dict(reasons.most_common()),
        "skipped": [{"id": rid, "reason": text} for rid, text in skipped[:MAX_LISTED_SKIPS]],
        "verified": verify,
        "modalities": dict(modalities),
        "splits": dict(splits),
        "ecg_sampling_rates": dict(ecg_rates),
        "label_vocabulary": list(source.label_vocabulary),
        "label_counts": dict(labels.most_common()),
        "sample_record": dataclasses.asdict(sample) if sample else None,
    }


def decode_problem(record: CaseRecord, ecg_rates: Counter[str] | None = None) -> str | None:
    """None when every file of the record decodes through the model's preprocessing; else why not."""
    from encoders.preprocess.ecg import prepare_ecg, read_ecg
    from encoders.preprocess.xray import decode_xray, prepare_xray

    try:
        if record.xray_path:
            prepare_xray(decode_xray(record.xray_path), CHECK_XRAY_SIZE)
        if record.ecg_path:
            ecg = read_ecg(record.ecg_path)
            prepare_ecg(ecg.signal, ecg.fs, ecg.lead_names, CHECK_ECG_FS, CHECK_ECG_SAMPLES)
            if ecg_rates is not None:
                ecg_rates[f"{ecg.fs:g}"] += 1
    except InvalidInputError as exc:
        return f"undecodable {exc.field.split('.')[0]}: {exc.reason}"
    return None


def format_inspection(report: dict[str, Any]) -> str:
    """A human-readable summary (the --json output carries everything)."""
    lines = [
        f"source            {report['source']}",
        f"records read      {report['records_read']}",
        f"records skipped   {report['records_skipped']}"
        + (f"  ({', '.join(f'{n} x {r}' for r, n in report['skipped_by_reason'].items())})" if report["skipped"] else ""),
        f"modalities        {report['modalities']}",
        f"splits            {report['splits']}",
    ]
    if report["ecg_sampling_rates"]:
        lines.append(f"ECG rates (Hz)    {report['ecg_sampling_rates']}")
    lines.append(f"labels ({len(report['label_vocabulary'])})       " + ", ".join(
        f"{label}={report['label_counts'].get(label, 0)}" for label in report["label_vocabulary"][:40]))
    for item in report["skipped"][:10]:
        lines.append(f"  skipped {item['id']}: {item['reason']}")
    sample = report["sample_record"]
    if sample:
        lines.append("sample record:")
        for key, value in sample.items():
            if value not in (None, "", (), [], {}):
                text = str(value)
                lines.append(f"  {key:<11} {text[:160] + ('...' if len(text) > 160 else '')}")
    return "\n".join(lines)
