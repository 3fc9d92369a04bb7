"""Writes a phantom population to disk in the formats real data arrives in.

PNG X-rays, WFDB ECG records, plain-text reports, mask files and a manifest CSV in the column format of
docs/architecture.md, so the loader that serves real data later is exercised by the phantom too.
Everything written is a pure function of (n, seed, size, missing_rate): reruns are byte-identical.
"""

from __future__ import annotations

import csv
import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from training.phantom.errors import invalid_input
from training.phantom.case import PhantomCase, generate_case
from training.phantom.ecg import LEAD_NAMES

MANIFEST_COLUMNS: tuple[str, ...] = (
    "case_id", "patient_id", "study_time", "split", "age", "sex", "xray_path", "ecg_path", "report",
    "xray_report", "ecg_report", "labels", "xray_masks", "ecg_masks", "attributes",
)
# 1 digital unit = 1 uV: the quantisation error (0.5 uV) is far below the 0.01 mV Einthoven tolerance,
# and +-32.7 mV covers any ECG.
ADC_GAIN = 1000.0


def split_of(patient_id: str) -> str:
    """80/10/10 train/val/test by patient, so no patient straddles two splits."""
    bucket = zlib.crc32(patient_id.encode()) % 10
    return "test" if bucket == 0 else ("val" if bucket == 1 else "train")


def ecg_digital(signal: np.ndarray) -> np.ndarray:
    """int16 samples [n, 12] with III, aVR, aVL, aVF derived from the quantised I and II.

    Deriving after quantisation keeps Einthoven's law (III = II - I) exact in the stored integers.
    """
    d = np.rint(signal.astype(np.float64) * ADC_GAIN).astype(np.int64)
    i, ii = d[0], d[1]
    d[2] = ii - i
    d[3] = np.rint(-(i + ii) / 2)
    d[4] = np.rint(i - ii / 2)
    d[5] = np.rint(ii - i / 2)
    if np.abs(d).max() > 32767:
        raise invalid_input("ecg", "a lead exceeds +-32.7 mV and cannot be stored in WFDB format 16")
    return d.T.astype(np.int16)


def write_wfdb_16(directory: Path, record: str, digital: np.ndarray, fs: int, lead_names, comments=()) -> None:
    """A WFDB record in format 16 (interleaved little-endian int16), gain ADC_GAIN per mV, baseline 0.

    Byte-for-byte what `wfdb.wrsamp(..., fmt="16", adc_gain=ADC_GAIN, baseline=0)` writes (a test checks
    this); written directly because wrsamp's per-field validation cost ~0.15 s a record.
    """
    n, n_sig = digital.shape
    lines = [f"{record} {n_sig} {fs} {n}"]
    checksums = digital.astype(np.int64).sum(axis=0) % 65536
    for k, name in enumerate(lead_names):
        lines.append(f"{record}.dat 16 {ADC_GAIN}(0)/mV 16 0 {int(digital[0, k])} {int(checksums[k])} 0 {name}")
    lines += [f"# {c}" for c in comments]
    (directory / f"{record}.hea").write_text("\n".join(lines) + "\n")
    digital.astype("<i2").tofile(directory / f"{record}.dat")


def _write_case(case: PhantomCase, out: Path) -> dict:
    cid = case.case_id
    row = {
        "case_id": cid, "patient_id": case.patient_id, "study_time": case.study_time,
        "split": split_of(case.patient_id), "age": case.attributes["age"], "sex": case.attributes["sex"],
        "xray_path": "", "ecg_path": "", "report": case.report or "", "xray_report": case.xray_report or "",
        "ecg_report": case.ecg_report or "", "labels": ";".join(case.labels), "xray_masks": "{}", "ecg_masks": "",
    }
    attrs = dict(case.attributes)
    if case.xray is not None:
        rel = f"xray/{cid}.png"
        Image.fromarray(case.xray).save(out / rel, optimize=False, compress_level=6)
        row["xray_path"] = rel
        masks = {}
        for label, mask in sorted(case.xray_masks.items()):
            mrel = f"masks/{cid}_{label}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / mrel, compress_level=6)
            masks[label] = mrel
        row["xray_masks"] = json.dumps(masks, sort_keys=True)
        attrs["xray_geometry"] = {k: round(v, 3) for k, v in case.xray_geometry.items()}
    if case.ecg is not None:
        write_wfdb_16(out / "ecg", cid, ecg_digital(case.ecg), case.ecg_fs, LEAD_NAMES,
                      comments=[f"phantom case {cid}", f"labels: {';'.join(case.labels)}"])
        row["ecg_path"] = f"ecg/{cid}"
        mrel = f"ecg_masks/{cid}.json"
        (out / mrel).write_text(json.dumps(case.ecg_masks, sort_keys=True))
        row["ecg_masks"] = mrel
    if case.report:
        (out / "reports" / f"{cid}.txt").write_text(case.report + "\n")
    row["attributes"] = json.dumps(attrs, sort_keys=True)
    return row


def _write_range(args: tuple[int, int, int, str, int, float]) -> list[dict]:
    seed, start, stop, out, size, missing = args
    return [_write_case(generate_case(seed, i, xray_size=size, missing_rate=missing), Path(out))
            for i in range(start, stop)]


def write_phantom(n: int, seed: int, out_dir: str | os.PathLike, *, xray_size: int = 512,
                  missing_rate: float = 0.15, workers: int | None = None) -> Path:
    """Write cases 0..n-1 under out_dir; returns the path of manifest.csv."""
    if n < 1:
        raise invalid_input("n", f"got {n}; ask for at least one case")
    out = Path(out_dir)
    for sub in ("xray", "ecg", "reports", "masks", "ecg_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    chunks = min(n, workers * 4)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    jobs = [(seed, int(a), int(b), str(out), xray_size, missing_rate) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if workers == 1 or n < 8:
        rows = [r for job in jobs for r in _write_range(job)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rows = [r for part in pool.map(_write_range, jobs) for r in part]
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest
