"""`write_phantom` / `tribind phantom`: real formats on disk, byte-identical reruns, the manifest contract."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.phantom import write_phantom
from training.phantom.writer import MANIFEST_COLUMNS

N, SEED, SIZE = 10, 31, 256


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom_a")
    write_phantom(N, SEED, out, xray_size=SIZE, missing_rate=0.15, workers=2)
    return out


def test_rerun_is_byte_identical_whatever_the_worker_count(written, tmp_path):
    write_phantom(N, SEED, tmp_path, xray_size=SIZE, missing_rate=0.15, workers=1)
    assert _digest(written) == _digest(tmp_path)


def test_manifest_columns_and_files(written):
    with (written / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == list(MANIFEST_COLUMNS)
    assert [r["case_id"] for r in rows] == [f"ph{SEED}-{i:06d}" for i in range(N)]
    for r in rows:
        assert r["split"] in ("train", "val", "test") and r["labels"]
        if r["xray_path"]:
            img = Image.open(written / r["xray_path"])
            assert img.mode == "L" and img.size == (SIZE, SIZE)
            for label, rel in json.loads(r["xray_masks"]).items():
                assert label in r["labels"].split(";")
                mask = np.asarray(Image.open(written / rel))
                assert mask.shape == (SIZE, SIZE) and set(np.unique(mask)) <= {0, 255}
        if r["ecg_path"]:
            masks = json.loads((written / r["ecg_masks"]).read_text())
            assert set(masks) <= set(r["labels"].split(";"))
        if r["report"]:
            assert (written / "reports" / f"{r['case_id']}.txt").read_text().strip() == r["report"].strip()
            assert r["report"].startswith(r["xray_report"])
        attrs = json.loads(r["attributes"])
        assert attrs["age"] == int(r["age"]) and attrs["sex"] == r["sex"]


def test_wfdb_records_read_back_with_einthoven(written):
    import wfdb

    records = sorted((written / "ecg").glob("*.hea"))
    assert records
    for hea in records:
        rec = wfdb.rdrecord(str(hea.with_suffix("")))
        assert rec.sig_name == ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
        assert rec.fs == 500 and rec.sig_len == 5000 and set(rec.units) == {"mV"}
        s = rec.p_signal
        assert np.abs(s[:, 2] - (s[:, 1] - s[:, 0])).max() < 0.01
        assert np.abs(s[:, 3] + (s[:, 0] + s[:, 1]) / 2).max() < 0.01


def test_cli_writes_cases(tmp_path, capsys):
    from tribind.cli import main

    assert main(["phantom", "--cases", "3", "--seed", "5", "--out", str(tmp_path), "--xray-size", "128",
                 "--workers", "1"]) == 0
    assert "wrote 3 cases" in capsys.readouterr().out
    assert len((tmp_path / "manifest.csv").read_text().splitlines()) >= 4


def test_wfdb_writer_matches_wfdb_wrsamp_byte_for_byte(tmp_path):
    import wfdb

    from training.phantom import generate_case
    from training.phantom.writer import ADC_GAIN, ecg_digital, write_wfdb_16

    case = generate_case(SEED, 1, xray_size=64, missing_rate=0.0)
    digital = ecg_digital(case.ecg)
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    write_wfdb_16(ours, "rec", digital, 500, case.lead_names, comments=["a comment"])
    wfdb.wrsamp("rec", fs=500, units=["mV"] * 12, sig_name=list(case.lead_names), d_signal=digital,
                fmt=["16"] * 12, adc_gain=[ADC_GAIN] * 12, baseline=[0] * 12, write_dir=str(theirs),
                comments=["a comment"])
    for suffix in (".hea", ".dat"):
        assert (ours / f"rec{suffix}").read_bytes() == (theirs / f"rec{suffix}").read_bytes()
