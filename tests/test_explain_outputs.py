"""Pictures, highlighting, the CLI (`tribind explain`, `tribind eval-explain`) and the faithfulness evaluation,
on the `test` preset and real phantom files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from encoders import create_model
from encoders.explain import ecg_record_item, explain, explain_pair, label_target, text_item, xray_item
from encoders.explain.figures import ecg_png, explanation_png, heatmap_to_image, pair_png
from encoders.explain.highlight import ansi_highlight, html_highlight
from tribind.cli import main


@pytest.fixture(scope="module")
def bundle():
    torch.manual_seed(0)
    return create_model("test")


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    from training.phantom import write_phantom

    out = tmp_path_factory.mktemp("phantom")
    manifest = write_phantom(3, 777, out, xray_size=64, missing_rate=0.0, workers=1)
    row = next(csv.DictReader(manifest.open()))
    return {"xray": out / row["xray_path"], "ecg": out / row["ecg_path"], "report": row["report"]}


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_heatmap_back_onto_a_non_square_film():
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[8:24, :16] = 1.0       # the film's left half (a 2:1 film sits in rows 8..23 after padding)
    back = heatmap_to_image(heat, (50, 100))
    assert back.shape == (50, 100)
    assert back[:, :40].mean() > 0.9 and back[:, 60:].mean() < 0.1


def test_pictures_decode_and_ecg_sheet_is_to_scale(bundle, phantom_files):
    target = label_target(bundle, "pleural effusion")
    x = xray_item(bundle, phantom_files["xray"])
    e = ecg_record_item(bundle, phantom_files["ecg"])
    t = text_item(phantom_files["report"], "report")
    for item in (x, e, t):
        picture = _image(explanation_png(explain(bundle, item, target), item))
        assert picture.width > 200 and picture.height > 100
        assert np.asarray(picture.convert("L")).std() > 5  # not blank
    sheet = _image(ecg_png(explain(bundle, e, target), e))
    seconds = bundle.config["ecg"]["seconds"]
    # 25 mm/s plus the calibration margin, at the figure's dpi: the paper speed is what a reader measures.
    expected_mm = 8.0 + seconds * 25.0 + 2.0
    assert sheet.width == pytest.approx(expected_mm / 25.4 * 150, abs=2)
    pair = _image(pair_png(explain_pair(bundle, x, t), x, t))
    assert pair.height > 300


def test_word_highlighting(bundle):
    text = "Blunted <left> costophrenic angle.\nNo pneumothorax."
    e = explain(bundle, text_item(text), label_target(bundle, "pleural_effusion_left"))
    page = html_highlight(text, e.spans, e.relevance, "effusion")
    assert "&lt;" in page and "&gt;" in page and "<left>" not in page and "<br>" in page
    assert page.count("<span") == len(e.words)
    coloured = ansi_highlight(text, e.spans, e.relevance)
    assert "\x1b[" in coloured
    assert coloured.replace("\x1b[0m", "").count("\x1b[") <= len(e.words)
    plain = ansi_highlight(text, e.spans, np.zeros(len(e.words)))
    assert plain == text


def test_cli_explain_writes_picture_and_json(phantom_files, tmp_path, capsys):
    out = tmp_path / "heat.png"
    code = main(["explain", "--checkpoint", "none", "--preset", "test", "--xray", str(phantom_files["xray"]),
                 "--label", "pleural effusion", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sides"][0]["modality"] == "xray" and len(result["sides"][0]["relevance"]) == 4
    assert _image(out.read_bytes()).width > 200
    code = main(["explain", "--checkpoint", "none", "--preset", "test", "--ecg", str(phantom_files["ecg"]),
                 "--pair-text", phantom_files["report"], "--out", str(tmp_path / "pair.png"),
                 "--html", str(tmp_path / "pair.html")])
    printed = capsys.readouterr().out
    assert code == 0 and "lead" in printed and "top words" in printed
    assert "<span" in (tmp_path / "pair.html").read_text()
    code = main(["explain", "--checkpoint", "none", "--preset", "test", "--xray", str(tmp_path / "missing.png"),
                 "--label", "cardiomegaly"])
    assert code == 2 and "file not found" in capsys.readouterr().err


def test_eval_explain_reports_every_figure(capsys):
    code = main(["eval-explain", "--checkpoint", "none", "--preset", "test", "--cases", "16", "--seed", "5",
                 "--steps", "4", "--random-orders", "2", "--random-init", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "chefer" and result["seed"] == 5
    for modality in ("xray", "ecg"):
        pointing = result["pointing"][modality]
        labels = {k: v for k, v in pointing.items() if isinstance(v, dict)}
        assert labels and all(0.0 <= v["hit_rate"] <= 1.0 and 0.0 < v["random"] <= 1.0 for v in labels.values())
        assert pointing["macro"] is None or 0.0 <= pointing["macro"] <= 1.0
        deletion = result["deletion"][modality]
        assert deletion["pairs"] > 0 and deletion["steps"] == 4
        per_label = deletion["per_label"]
        assert deletion["all_pairs"]["pairs"] == deletion["pairs"] + deletion["whole_input_pairs"]
        assert sum(v["pairs"] for v in per_label.values()) == deletion["all_pairs"]["pairs"]
        assert set(per_label) == set(labels)
        # The pooled ratio leaves out exactly the findings the pointing game calls trivial.
        assert {k for k, v in per_label.items() if v.get("whole_input")} == {
            k for k, v in labels.items() if v.get("trivial")}
        assert deletion["whole_input_pairs"] == sum(v["pairs"] for v in per_label.values() if v.get("whole_input"))
    # Rate conditions cover the whole record in every lead: they cannot miss and must not count.
    ecg = result["pointing"]["ecg"]
    for label in ("sinus_tachycardia", "sinus_bradycardia"):
        if label in ecg:
            assert ecg[label]["random"] == 1.0 and ecg[label]["trivial"]
    assert set(result["seconds_per_explanation"]) == {"xray", "ecg", "text"}
    assert set(result["random_init"]["pointing"]) == set(result["pointing"])
    code = main(["eval-explain", "--checkpoint", "none", "--preset", "test", "--cases", "16", "--seed", "5",
                 "--steps", "2", "--random-orders", "1"])
    printed = capsys.readouterr().out
    assert code == 0 and "deletion ecg: auc" in printed and "per finding (ratio, pairs; * whole input): " in printed
    assert "whole-input pairs: ratio" in printed


def test_pointing_rules_work_at_the_maps_resolution():
    from types import SimpleNamespace

    from training.explain_eval import _summarise, _Tally

    tally = _Tally()
    mask = np.zeros((32, 32), dtype=bool)
    mask[14:18, :] = True                     # a thin band across rows 14-17: patch rows 1 (8-15) and 2 (16-23)
    cells, centres = np.arange(32) // 8, np.arange(4) * 8 + 4   # a patch stem's cells: the nominal patches
    grid = np.zeros((4, 4))
    grid[1, 3] = 1.0                          # the patch covering rows 8-15: holds the band, centre (12) outside it
    tally.point_xray("atelectasis", mask, grid, cells, centres)
    grid = np.zeros((4, 4))
    grid[3, 0] = 1.0                          # rows 24-31: no band
    tally.point_xray("atelectasis", mask, grid, cells, centres)
    assert tally.hits["atelectasis"] == [True, False]
    assert tally.baselines["atelectasis"] == [0.5, 0.5]   # 8 of 16 patches hold part of the band
    assert tally.centre_hits["atelectasis"] == [False, False]
    assert tally.centre_baselines["atelectasis"] == [0.125, 0.125]
    # ECG: window 2 of 4 (1.0-1.5 s) overlaps the PR interval; the lead picked by the cell game is V1 (not II).
    relevance = np.zeros((12, 4))
    relevance[6, 2] = 1.0
    explanation = SimpleNamespace(relevance=relevance, heatmap=relevance.sum(0), window_s=0.5, time_offset_s=0.0,
                                  lead_names=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"))
    truth = {"intervals_s": [[1.1, 1.3]], "leads": ["II"]}
    tally.point_ecg("first_degree_av_block", truth, explanation, np.ones(12, dtype=bool))
    assert tally.hits["first_degree_av_block"] == [True] and tally.baselines["first_degree_av_block"] == [0.25]
    assert tally.cell_hits["first_degree_av_block"] == [False]
    summary = _summarise(tally.hits, tally.baselines)
    assert summary["atelectasis"]["hit_rate"] == 0.5 and summary["macro"] == 0.75


def test_real_records_explain_and_draw(bundle, shared_data):
    """A PTB-XL record (100 Hz, 10 s, WFDB) and an NIH ChestX-ray14 thumbnail (RGBA PNG, 64 x 64)."""
    record = shared_data / "ptbxl" / "records500" / "00000" / "00001_hr"
    films = sorted((shared_data / "nih_chestxray14" / "valid" / "1_abnormal").glob("*.png"))
    if not record.with_suffix(".hea").is_file() or not films:
        pytest.skip("PTB-XL record 00001_hr or NIH thumbnails missing from the shared data")
    target = label_target(bundle, "atrial fibrillation")
    ecg = ecg_record_item(bundle, record)
    e = explain(bundle, ecg, target)
    assert np.isfinite(e.relevance).all() and e.relevance.shape[0] == 12
    # 10 s at 500 Hz centre-cropped to the test preset's window: times must say where in the file it is.
    assert e.time_offset_s == pytest.approx((10.0 - bundle.config["ecg"]["seconds"]) / 2)
    assert _image(explanation_png(e, ecg)).width > 100
    film = xray_item(bundle, films[0])
    x = explain(bundle, film, label_target(bundle, "cardiomegaly"))
    assert np.isfinite(x.heatmap).all() and film.image.shape == (64, 64)
    assert _image(explanation_png(x, film)).width > 100


def test_deletion_per_label_reads_each_labels_own_random_rows():
    from training.explain_eval import _Tally

    tally = _Tally()
    fast = np.array([1.0, 0.1, 0.05, 0.0, 0.0])        # relevance order: the score falls at once
    linear = np.linspace(1.0, 0.0, 5)                  # random order: it falls evenly
    # Two pairs per label, two random orders per pair, pair-major as _deletion_curves returns them.
    tally.curves.append(np.stack([fast, linear, fast, linear]))
    tally.random_curves.append(np.stack([linear, linear, fast, fast, linear, linear, fast, fast]))
    tally.labels.extend(["lvh", "lbbb", "lvh", "lbbb"])
    tally.whole_input.extend([False] * 4)
    out = tally.deletion(steps=4, random_orders=2)
    lvh, lbbb = out["per_label"]["lvh"], out["per_label"]["lbbb"]
    assert lvh["pairs"] == lbbb["pairs"] == 2
    assert lvh["random_auc"] == lbbb["auc"] == 0.5 and lbbb["random_auc"] == lvh["auc"] < 0.2
    assert lvh["ratio"] < 0.4 < 2.5 < lbbb["ratio"]
    assert out["ratio"] == 1.0  # pooled: the same two curve shapes on both sides


def test_deletion_pools_only_the_pairs_whose_truth_is_localised():
    """A whole-record finding (baseline 1) is reported per label and in all_pairs, not in the pooled ratio."""
    from training.explain_eval import _Tally

    tally = _Tally()
    fast = np.array([1.0, 0.1, 0.05, 0.0, 0.0])
    linear = np.linspace(1.0, 0.0, 5)
    tally.curves.append(np.stack([fast, linear, fast]))
    tally.random_curves.append(np.stack([linear, fast, linear]))   # one random order per pair
    tally.labels.extend(["lvh", "atrial_fibrillation", "lvh"])
    tally.whole_input.extend([False, True, False])
    out = tally.deletion(steps=4, random_orders=1)
    assert out["pairs"] == 2 and out["whole_input_pairs"] == 1 and out["all_pairs"]["pairs"] == 3
    assert out["ratio"] == out["per_label"]["lvh"]["ratio"] < 0.4
    assert out["per_label"]["atrial_fibrillation"]["whole_input"] and "whole_input" not in out["per_label"]["lvh"]
    assert out["ratio"] < out["all_pairs"]["ratio"]
    assert out["curve"][0] == 1.0 and len(out["random_curve"]) == 5
    # Only whole-record pairs: nothing to pool, and no figure made up for it.
    tally = _Tally()
    tally.curves.append(np.stack([linear]))
    tally.random_curves.append(np.stack([linear]))
    tally.labels.append("sinus_tachycardia")
    tally.whole_input.append(True)
    out = tally.deletion(steps=4, random_orders=1)
    assert out["pairs"] == 0 and out["ratio"] is None and out["curve"] == [] and out["all_pairs"]["ratio"] == 1.0
