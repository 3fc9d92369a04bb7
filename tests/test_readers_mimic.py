"""MIMIC-IV-ECG, MIMIC-CXR-JPG and their tri-modal pairing, on miniature trees in the published layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.data.csvfiles import write_rows
from training.data.pairing import pair_mimic
from training.data.sources import open_source

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
CHEXPERT_COLUMNS = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
                    "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with dyspnea

 COMPARISON:  ___

 FINDINGS:

 The heart is enlarged. Small left pleural effusion.
 No pneumothorax.

 IMPRESSION:

 Cardiomegaly with small left effusion.
"""


def write_mimic_ecg(root, studies):
    """studies: (subject_id, study_id, ecg_time, statements); WFDB 500 Hz records under files/pNNNN/pNNNNNNNN/sNNNNNNNN/."""
    import wfdb

    records, measurements = [], []
    for subject, study, when, statements in studies:
        relative = f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
        folder = root / relative.rsplit("/", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        t = np.arange(5000) / 500
        signal = np.stack([np.sin(2 * np.pi * 1.2 * t) * 0.5] * 12, axis=1)
        wfdb.wrsamp(study, fs=500, units=["mV"] * 12, sig_name=LEADS, p_signal=signal, fmt=["16"] * 12,
                    write_dir=str(folder))
        records.append({"subject_id": subject, "study_id": study, "file_name": study, "ecg_time": when,
                        "path": relative})
        row = {"subject_id": subject, "study_id": study, "cart_id": "6848296", "ecg_time": when,
               "bandwidth": "0.5-150 Hz", "filtering": "60 Hz notch Baseline filter", "rr_interval": "659"}
        row.update({f"report_{i}": (statements[i] if i < len(statements) else "") for i in range(18)})
        measurements.append(row)
    write_rows(root / "record_list.csv", records)
    write_rows(root / "machine_measurements.csv", measurements)


def write_mimic_cxr(root, images, labels, reports):
    """images: (subject, study, dicom_id, view, StudyDate, StudyTime, split)."""
    metadata, splits = [], []
    for subject, study, dicom, view, date, time, split in images:
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 40), 120, dtype=np.uint8)).save(folder / f"{dicom}.jpg")
        metadata.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                         "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                         "Rows": 32, "Columns": 40, "StudyDate": date, "StudyTime": time,
                         "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                         "ViewCodeSequence_CodeMeaning": "postero-anterior",
                         "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
        splits.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
    write_rows(root / "mimic-cxr-2.0.0-metadata.csv.gz", metadata)
    write_rows(root / "mimic-cxr-2.0.0-split.csv.gz", splits)
    write_rows(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels, CHEXPERT_COLUMNS)
    for (subject, study), text in reports.items():
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        path.write_text(text)


@pytest.fixture()
def mimic_root(tmp_path):
    ecg_root = tmp_path / "mimic-iv-ecg" / "1.0"
    cxr_root = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    write_mimic_ecg(ecg_root, [
        ("10000032", "40689238", "2180-07-23 08:44:00", ["Sinus rhythm", "Left ventricular hypertrophy"]),
        ("10000032", "40689239", "2180-12-01 10:00:00", ["Atrial fibrillation"]),   # > 60 days from any CXR
        ("10000764", "41000001", "2132-10-14 23:58:00", ["Sinus tachycardia"]),
    ])
    (ecg_root / "files/p1000/p10000764/s41000001/41000001.dat").unlink()  # one broken record
    write_mimic_cxr(cxr_root, [
        ("10000032", "50414267", "02aa804e-bde0afdd", "PA", "21800720", "85312.765", "train"),
        ("10000032", "50414267", "174413ec-4ec4c1f7", "LATERAL", "21800720", "85312.765", "train"),
        ("10000032", "53189527", "2a2277a9-b0ded155", "AP", "21800801", "101500", "train"),   # 2nd CXR, same ECG window
        ("10000898", "50771383", "68b5c4b1-227d0485", "AP", "21320101", "000000", "test"),   # no ECG for patient
    ], labels=[
        {"subject_id": "10000032", "study_id": "50414267", "Cardiomegaly": "1.0", "Pleural Effusion": "-1.0",
         "Edema": "0.0"},
        {"subject_id": "10000032", "study_id": "53189527", "No Finding": "1.0"},
    ], reports={("10000032", "50414267"): REPORT})
    return tmp_path, ecg_root, cxr_root


def test_mimic_ecg_reader(mimic_root):
    _, ecg_root, _ = mimic_root
    source = open_source(f"mimic-ecg:{ecg_root}")
    records = list(source)
    # Reading checks that headers exist; the missing .dat of 41000001 is found by inspection (below).
    assert [r.case_id for r in records] == ["mimic-ecg-40689238", "mimic-ecg-40689239", "mimic-ecg-41000001"]
    first = records[0]
    assert first.report == "Sinus rhythm. Left ventricular hypertrophy."
    assert first.study_time == "2180-07-23T08:44:00" and first.patient_id == "mimic-p10000032"
    assert first.split in ("train", "val", "test")
    assert source.skipped == []
    from training.data.inspection import decode_problem

    assert decode_problem(first) is None


def test_mimic_ecg_reader_reports_the_broken_record(mimic_root):
    from training.data.inspection import inspect_source

    _, ecg_root, _ = mimic_root
    report = inspect_source(open_source(f"mimic-ecg:{ecg_root}"))
    assert report["records_read"] == 2
    assert report["records_skipped"] == 1
    assert "41000001" in report["skipped"][0]["id"]
    assert report["skipped"][0]["reason"].startswith("undecodable ecg")


def test_mimic_cxr_reader_views_sections_labels(mimic_root):
    _, _, cxr_root = mimic_root
    source = open_source(f"mimic-cxr:{cxr_root}")
    records = {r.case_id: r for r in source}
    assert set(records) == {"mimic-cxr-02aa804e-bde0afdd", "mimic-cxr-2a2277a9-b0ded155", "mimic-cxr-68b5c4b1-227d0485"}
    first = records["mimic-cxr-02aa804e-bde0afdd"]
    assert first.report == ("Findings: The heart is enlarged. Small left pleural effusion. No pneumothorax. "
                            "Impression: Cardiomegaly with small left effusion.")
    assert "dyspnea" not in first.report                 # indication dropped
    assert first.labels == ("Cardiomegaly",)             # U-Zeros by default
    assert first.metadata["uncertain_labels"] == "Pleural Effusion"
    assert first.study_time == "2180-07-20T08:53:12" and first.split == "train"
    assert records["mimic-cxr-68b5c4b1-227d0485"].split == "test"
    assert records["mimic-cxr-68b5c4b1-227d0485"].report is None
    ones = {r.case_id: r for r in open_source(f"mimic-cxr:{cxr_root}?uncertain=ones")}
    assert ones["mimic-cxr-02aa804e-bde0afdd"].labels == ("Cardiomegaly", "Pleural Effusion")
    every_view = list(open_source(f"mimic-cxr:{cxr_root}", views="", per_study=False))
    assert len(every_view) == 4


def test_pairing_window_one_to_one_and_patient_split(mimic_root):
    root, ecg_root, cxr_root = mimic_root
    pairs = open_source(f"mimic:{root}")
    records = list(pairs)
    # Patient 10000032: 2 X-ray studies within 60 days of ECG 40689238; ECG 40689239 is > 60 days from
    # both. Only the closest pair is made; the other X-ray is skipped, not paired with a reused ECG.
    assert len(records) == 1
    case = records[0]
    assert case.modalities() == ("xray", "ecg", "text")
    assert case.ecg_path.endswith("40689238") and case.xray_path.endswith("02aa804e-bde0afdd.jpg")
    assert "ECG: Sinus rhythm." in case.report
    assert float(case.metadata["delta_days"]) == pytest.approx(2.99, abs=0.01)
    reasons = dict(pairs.skipped)
    assert "every nearby ECG already paired" in reasons["mimic-cxr-2a2277a9-b0ded155"]
    assert "no ECG" in reasons["mimic-cxr-68b5c4b1-227d0485"]
    wide = list(pair_mimic(open_source(f"mimic-ecg:{ecg_root}"), open_source(f"mimic-cxr:{cxr_root}"), window_days=400))
    assert len(wide) == 2
    assert len({r.ecg_path for r in wide}) == 2 and len({r.xray_path for r in wide}) == 2
    assert len({r.split for r in wide}) == 1   # same patient -> same split
