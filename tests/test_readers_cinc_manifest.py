"""PhysioNet/CinC 2020-2021 (.mat + .hea with # Dx) and generic manifests (CSV / JSONL)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data.csvfiles import write_rows
from training.data.sources import SourceError, open_source, parse_source
from training.data.splits import patient_split

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def write_cinc(folder, name, dx, fs=500, seconds=10):
    """A challenge record: MATLAB v4 `val` (ADC units, gain 1000/mV) and a .hea with #Age/#Sex/#Dx."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(fs * seconds)) / fs
    adc = np.round(np.stack([np.sin(2 * np.pi * 1.1 * t) * 800 * (k + 1) / 12 for k in range(12)])).astype(np.int16)
    savemat(str(folder / f"{name}.mat"), {"val": adc}, format="4")
    lines = [f"{name} 12 {fs} {adc.shape[1]} 05-Feb-2020 11:39:16"]
    lines += [f"{name}.mat 16+24 1000/mV 16 0 {row[0]} 0 0 {lead}" for lead, row in zip(LEADS, adc)]
    lines += ["#Age: 74", "#Sex: Female", f"#Dx: {dx}", "#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def test_cinc_mat_records_codes_and_decoding(tmp_path):
    write_cinc(tmp_path / "WFDB_CPSC2018", "A0001", "164889003,59118001")
    write_cinc(tmp_path / "WFDB_Ga", "E00001", "426783006,999999999", fs=500, seconds=5)
    write_cinc(tmp_path / "WFDB_Ga", "E00002", "")
    (tmp_path / "WFDB_Ga" / "E00003.hea").write_text((tmp_path / "WFDB_Ga" / "E00001.hea").read_text()
                                                      .replace("E00001", "E00003"))   # .mat missing
    source = open_source(f"cinc:{tmp_path}")
    records = {r.case_id: r for r in source}
    assert set(records) == {"cinc-A0001", "cinc-E00001"}
    af = records["cinc-A0001"]
    assert af.labels == ("atrial_fibrillation", "right_bundle_branch_block")
    assert af.metadata["dx_abbreviations"] == "AF,RBBB" and af.metadata["sex"] == "female"
    assert af.metadata["age"] == "74" and af.metadata["database"] == "WFDB_CPSC2018"
    assert records["cinc-E00001"].labels == ("sinus_rhythm", "snomed_999999999")
    assert dict(source.skip_summary()) == {"no #Dx line": 1, "signal file missing": 1}
    assert "atrial_fibrillation" in source.label_vocabulary
    from encoders.preprocess.ecg import read_ecg

    ecg = read_ecg(af.ecg_path)
    assert ecg.fs == 500 and ecg.signal.shape == (12, 5000)
    assert np.abs(ecg.signal[11]).max() == pytest.approx(0.8, abs=0.01)   # 800 ADC / 1000 per mV


def test_manifest_csv_and_jsonl(tmp_path):
    import wfdb

    (tmp_path / "ecg").mkdir()
    wfdb.wrsamp("P1_0", fs=100, units=["mV"] * 2, sig_name=["I", "II"], p_signal=np.zeros((300, 2)) + 0.1,
                fmt=["16"] * 2, write_dir=str(tmp_path / "ecg"))
    rows = [
        {"case_id": "c1", "patient_id": "P1", "study_time": "2020-01-01T10:00:00", "split": "train", "age": "60",
         "sex": "F", "xray_path": "", "ecg_path": "ecg/P1_0", "report": "Sinus rhythm.", "xray_report": "",
         "ecg_report": "Sinus rhythm.", "labels": "normal", "xray_masks": "", "ecg_masks": "",
         "attributes": json.dumps({"heart_rate": 70})},
        {"case_id": "c2", "patient_id": "P2", "ecg_path": "ecg/missing", "report": "x", "labels": ""},
        {"case_id": "c3", "patient_id": "P3", "report": "Cardiomegaly.", "labels": "cardiomegaly;pulmonary_edema"},
        {"case_id": "", "report": "orphan"},
    ]
    write_rows(tmp_path / "manifest.csv", rows, list(rows[0]))
    source = open_source(str(tmp_path / "manifest.csv"))
    records = list(source)
    assert [r.case_id for r in records] == ["c1", "c3"]
    assert records[0].ecg_path == str(tmp_path / "ecg" / "P1_0")
    assert records[0].metadata["attributes"] == '{"heart_rate": 70}' and records[0].labels == ("normal",)
    assert records[1].labels == ("cardiomegaly", "pulmonary_edema") and records[1].modalities() == ("text",)
    assert {reason.split(":")[0] for _, reason in source.skipped} == {"ecg record missing", "no case_id"}
    assert parse_source(str(tmp_path))[0] == "phantom"
    assert [r.case_id for r in open_source(f"phantom:{tmp_path}")] == ["c1", "c3"]

    jsonl = tmp_path / "cases.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in [
        {"id": "j1", "patient": "P9", "ecg": "ecg/P1_0", "text": "AF", "labels": ["atrial_fibrillation"]},
    ]))
    (record,) = list(open_source(str(jsonl)))
    assert record.case_id == "j1" and record.labels == ("atrial_fibrillation",) and record.patient_id == "P9"

    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({"case_id": ["q1", "q2"], "patient_id": ["P1", None], "ecg_path": ["ecg/P1_0", None],
                           "report": [None, "Normal chest."], "labels": ["normal", "normal;cardiomegaly"]})
    pyarrow.parquet.write_table(table, tmp_path / "cases.parquet")
    parquet = list(open_source(str(tmp_path / "cases.parquet")))
    assert [(r.case_id, r.patient_id, r.modalities()) for r in parquet] == [("q1", "P1", ("ecg",)), ("q2", "q2", ("text",))]
    assert parquet[1].labels == ("normal", "cardiomegaly")


def test_source_strings_and_errors(tmp_path):
    assert parse_source("ptbxl:/d/ptbxl?rate=100&task=subclass") == ("ptbxl", __import__("pathlib").Path("/d/ptbxl"),
                                                                     {"rate": "100", "task": "subclass"})
    with pytest.raises(SourceError, match="unknown source kind"):
        open_source("mimic-xyz:/nowhere")
    with pytest.raises(SourceError, match="does not exist"):
        open_source(f"ptbxl:{tmp_path}/absent")
    with pytest.raises(SourceError, match="not a PTB-XL folder"):
        open_source(f"ptbxl:{tmp_path}")
    with pytest.raises(SourceError, match="unknown option"):
        open_source(f"cinc:{tmp_path}?colour=blue")


def test_patient_split_is_deterministic_and_proportional():
    splits = [patient_split(f"p{i}") for i in range(3000)]
    assert splits == [patient_split(f"p{i}") for i in range(3000)]
    share = {name: splits.count(name) / len(splits) for name in ("train", "val", "test")}
    assert 0.77 < share["train"] < 0.83 and 0.08 < share["val"] < 0.12 and 0.08 < share["test"] < 0.12
