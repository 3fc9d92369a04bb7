"""Label sets and CheXzero-style zero-shot scoring."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from encoders.errors import InvalidInputError
from encoders.labelsets import list_labelsets, load_labelset
from encoders.zero_shot import zero_shot_probabilities

PHANTOM_IDS = {"cardiomegaly", "pleural_effusion_left", "pleural_effusion_right", "pulmonary_edema", "consolidation",
               "pneumothorax", "atelectasis", "atrial_fibrillation", "sinus_tachycardia", "sinus_bradycardia",
               "first_degree_av_block", "lbbb", "rbbb", "lvh", "anterior_stemi", "normal"}


def test_registered_label_sets_load_with_prompts():
    assert {"phantom", "chexpert14", "nih14", "ptbxl_super", "ptbxl_statements"} <= set(list_labelsets())
    for name in list_labelsets():
        labelset = load_labelset(name)
        assert len(set(labelset.ids)) == len(labelset.ids)
        for label in labelset.labels:
            assert label.positive and label.negative and label.modality in ("xray", "ecg", "both")


def test_phantom_ids_match_the_architecture_contract():
    phantom = load_labelset("phantom")
    assert set(phantom.ids) == PHANTOM_IDS
    assert {lab.id for lab in phantom.for_modality("xray", include_both=False)} == {
        "cardiomegaly", "pleural_effusion_left", "pleural_effusion_right", "pulmonary_edema", "consolidation",
        "pneumothorax", "atelectasis"}
    assert phantom.get("normal").modality == "both"


def test_normal_read_off_one_modality_means_none_of_its_findings():
    phantom = load_labelset("phantom")
    normal, effusion = phantom.get("normal"), phantom.get("pleural_effusion_left")
    assert normal.no_finding and not effusion.no_finding
    af_clear_film = ("atrial_fibrillation",)
    assert phantom.truth_in(normal, af_clear_film, "xray")          # a clear film is a normal film
    assert not phantom.truth_in(normal, af_clear_film, "ecg")
    assert not phantom.truth_in(normal, af_clear_film, "text")      # the report names the AF
    assert phantom.truth_in(normal, ("normal",), "ecg") and phantom.truth_in(normal, (), "xray")
    assert not phantom.truth_in(normal, ("pleural_effusion_left",), "xray")
    assert phantom.truth_in(effusion, ("pleural_effusion_left",), "xray")
    assert not phantom.truth_in(effusion, ("normal",), "xray")


def test_ptbxl_statements_cover_scp_statements(shared_data):
    with open(shared_data / "ptbxl" / "scp_statements.csv") as fh:
        codes = {row[0] for row in list(csv.reader(fh))[1:]}  # first column: the SCP code
    assert len(codes) == 71
    assert set(load_labelset("ptbxl_statements").ids) == codes


def test_unknown_label_set_lists_valid_ones():
    with pytest.raises(InvalidInputError, match="phantom"):
        load_labelset("nope")


def test_positive_vs_negative_softmax():
    positive = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    negative = F.normalize(torch.tensor([[-1.0, 0.0], [0.0, -1.0]]), dim=-1)
    cases = F.normalize(torch.tensor([[1.0, 0.2], [-1.0, 0.1]]), dim=-1)
    probs = zero_shot_probabilities(cases, positive, negative, 10.0)
    assert probs.shape == (2, 2)
    assert probs[0, 0] > 0.99 and probs[1, 0] < 0.01
    pos, neg = 10.0 * cases @ positive.T, 10.0 * cases @ negative.T
    torch.testing.assert_close(probs, torch.softmax(torch.stack([pos, neg]), dim=0)[0])
