"""Readers and `tribind inspect` on the real public data in TRIBIND_SHARED_DATA (PTB-XL, NIH, PhysioNet)."""

from __future__ import annotations

import json

import pytest

from training.data.inspection import inspect_source
from training.data.sources import open_source
from tribind.cli import main


def test_ptbxl_labels_splits_and_reports(shared_data):
    source = open_source(f"ptbxl:{shared_data / 'ptbxl'}", rate=100)
    records = list(source)
    assert len(records) == 353 and source.skipped == []
    assert source.label_vocabulary == ("NORM", "MI", "STTC", "CD", "HYP")
    first = records[0]
    assert first.case_id == "ptbxl-1" and first.labels == ("NORM",) and first.split == "train"
    assert first.report == "sinusrhythmus periphere niederspannung"
    assert first.metadata["labels_statements"] == "LVOLT;NORM;SR"
    assert all(r.split == "train" for r in records)   # the shared subset holds folds 1-8 only
    sub = {r.case_id: r for r in open_source(f"ptbxl:{shared_data / 'ptbxl'}?task=subclass")}
    assert all(set(r.labels) <= set(open_source(f"ptbxl:{shared_data / 'ptbxl'}?task=subclass").label_vocabulary)
               for r in sub.values())
    strict = {r.case_id: r.labels for r in open_source(f"ptbxl:{shared_data / 'ptbxl'}", min_likelihood=100)}
    loose = {r.case_id: r.labels for r in records}
    assert sum(map(len, strict.values())) < sum(map(len, loose.values()))


@pytest.mark.parametrize("rate, limit", [(100, None), (500, 60)])
def test_ptbxl_every_record_decodes(shared_data, rate, limit):
    report = inspect_source(open_source(f"ptbxl:{shared_data / 'ptbxl'}", rate=rate, limit=limit))
    assert report["records_skipped"] == 0, report["skipped"]
    assert report["records_read"] == (limit or 353)
    assert report["ecg_sampling_rates"] == {str(rate): limit or 353}


def test_nih_every_image_decodes(shared_data):
    source = open_source(f"nih:{shared_data / 'nih_chestxray14'}")
    report = inspect_source(source)
    assert report["records_read"] == 800 and report["records_skipped"] == 0
    assert report["splits"] == {"train": 600, "val": 200}   # the folder names train/ and valid/
    assert "Cardiomegaly" in report["label_counts"] and "No Finding" in report["label_counts"]


def test_physionet_samples_through_cli(shared_data, capsys):
    assert main(["inspect", f"wfdb:{shared_data / 'physionet_samples'}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records_read"] == 2 and report["records_skipped"] == 0
    assert report["ecg_sampling_rates"] == {"360": 1, "1000": 1}
    assert report["label_vocabulary"] == ["myocardial_infarction"]        # PTB Diagnostic's reason for admission
    ptb = open_source(f"wfdb:{shared_data / 'physionet_samples'}")
    s0010 = next(r for r in ptb if r.case_id == "wfdb-s0010_re")
    assert s0010.metadata["age"] == "81" and "Acute infarction" in s0010.metadata["comments"]


def test_inspect_cli_human_output_and_bad_source(shared_data, capsys):
    assert main(["inspect", f"ptbxl:{shared_data / 'ptbxl'}?rate=100", "--limit", "5", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "records read      5" in out and "NORM=" in out
    assert main(["inspect", "nosuchkind:/x"]) == 2
