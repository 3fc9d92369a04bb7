"""Phantom chest films: every finding is drawn where its mask says, visibly at 128 px; CTR from the mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from training.phantom import generate_case
from training.phantom.latent import LOBES, STREAM_XRAY, case_rng, sample_latent
from training.phantom.xray import render_xray

SEED = 77
SIZE = 128
SEVERITIES = ("small", "moderate", "large")


def _attrs(i: int, label: str) -> dict:
    """Natural patient attributes with the finding's own truth filled in, cycling through severities."""
    attrs = dict(sample_latent(SEED, i).attributes)
    side = ("left", "right")[i % 2]
    attrs.update({
        "effusion_left": SEVERITIES[i % 3], "effusion_right": SEVERITIES[(i + 1) % 3],
        "lobe": LOBES[i % len(LOBES)], "pneumothorax_side": side, "pneumothorax_size": SEVERITIES[i % 3],
        "edema_severity": ("mild", "moderate", "severe")[i % 3],
    })
    if label == "atelectasis":  # its volume loss (raised hemidiaphragm) is part of the anatomy in both renders
        attrs["atelectasis_side"] = side
    if label == "cardiomegaly":
        attrs["ctr"] = 0.54 + 0.14 * (i % 5) / 4
    elif attrs["ctr"] >= 0.5:
        attrs["ctr"] = 0.44
    return attrs


def _pair(i: int, label: str):
    """The same film rendered with and without `label` (same anatomy, exposure and noise)."""
    attrs = _attrs(i, label)
    with_img, masks, geo = render_xray((label,), attrs, SIZE, case_rng(SEED, i, STREAM_XRAY))
    base_attrs = dict(attrs, ctr=0.44) if label == "cardiomegaly" else attrs
    without, _, _ = render_xray(("normal",), base_attrs, SIZE, case_rng(SEED, i, STREAM_XRAY))
    return with_img.astype(np.float64), without.astype(np.float64), masks[label], geo


# Share of the pixel change inside the (2 px dilated) mask. Oedema also blurs every vessel and draws
# Kerley lines at the lateral bases, so part of its change lies outside the perihilar haze by design.
ALIGNMENT = {"pleural_effusion_left": 0.85, "pleural_effusion_right": 0.85, "consolidation": 0.85,
             "pneumothorax": 0.75, "atelectasis": 0.85, "pulmonary_edema": 0.5, "cardiomegaly": 0.85}


@pytest.mark.parametrize("label", sorted(ALIGNMENT))
def test_finding_is_drawn_inside_its_mask_and_visible_at_128px(label):
    for i in range(6):
        img, base, mask, _ = _pair(i, label)
        assert mask.shape == (SIZE, SIZE) and mask.sum() >= 12, (label, i, int(mask.sum()))
        diff = np.abs(img - base)
        inside = binary_dilation(mask, iterations=2)
        share = diff[inside].sum() / max(diff.sum(), 1e-9)
        assert share >= ALIGNMENT[label], (label, i, round(share, 2))
        # Visible: the finding changes the pixels under its mask by a clear margin (grey levels of 255).
        assert diff[mask].mean() >= 10, (label, i, round(diff[mask].mean(), 1))


def test_pneumothorax_rim_is_lucent():
    for i in range(4):
        img, base, mask, _ = _pair(i, "pneumothorax")
        assert img[mask].mean() < base[mask].mean() - 4


def test_opacities_are_brighter_under_their_masks():
    for label in ("pleural_effusion_left", "consolidation", "atelectasis", "pulmonary_edema"):
        for i in range(3):
            img, base, mask, _ = _pair(i, label)
            assert img[mask].mean() > base[mask].mean() + 10, label


def test_cardiomegaly_ctr_from_the_heart_mask_exceeds_half():
    for i in range(8):
        _, _, mask, geo = _pair(i, "cardiomegaly")
        cols = np.flatnonzero(mask.any(axis=0))
        rows_width = max(np.ptp(np.flatnonzero(r)) + 1 for r in mask if r.any())
        thorax = geo["thorax_right_px"] - geo["thorax_left_px"]
        ctr = rows_width / thorax
        assert ctr > 0.5, (i, ctr)
        assert abs(ctr - _attrs(i, "cardiomegaly")["ctr"]) < 0.04
        assert cols.size > 0


def test_default_film_is_a_512px_8bit_grey_image():
    case = generate_case(SEED, 0, missing_rate=0.0)
    assert case.xray.shape == (512, 512) and case.xray.dtype == np.uint8
    assert 20 < case.xray.mean() < 235 and case.xray.std() > 20
    # Lungs (dark) above, abdomen (bright) below: a chest film, not noise.
    top, bottom = case.xray[150:250, 100:200].mean(), case.xray[440:500, 150:350].mean()
    assert bottom > top + 30
