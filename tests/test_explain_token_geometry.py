"""Where each X-ray token looks: the stem's receptive-field centres, the heatmap drawn on them, and the
pointing game scored on the cells around them (encoders/xray_encoder.py `token_geometry`)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoders import create_model
from encoders.config import resolve_config
from encoders.explain import explain, label_target, xray_item
from encoders.explain.engine import token_interpolation
from encoders.xray_encoder import XrayEncoder
from training.explain_eval import _Tally, _token_cells
from training.phantom import generate_case


def _xray(stem: str, size: int = 64, patch: int = 16) -> XrayEncoder:
    cfg = copy.deepcopy(resolve_config("test")["xray"])
    cfg.update(image_size=size, patch_size=patch, stem=stem)
    torch.manual_seed(0)
    return XrayEncoder(cfg).eval()


@pytest.mark.parametrize("stem, origin", [("patch", 7.5), ("conv", 0.0)])
def test_geometry_of_both_stems(stem, origin):
    xray = _xray(stem)
    assert xray.token_geometry() == (origin, 16.0)
    cells = xray.pixel_tokens()
    assert cells.shape == (64,) and cells[0] == 0 and cells[-1] == 3 and np.all(np.diff(cells) >= 0)
    if stem == "patch":  # the nominal patches
        np.testing.assert_array_equal(cells, np.arange(64) // 16)
    else:  # nearest centre 16 * o: half a cell at the top / left edge, one and a half at the bottom / right
        np.testing.assert_array_equal(np.bincount(cells), [8, 16, 16, 24])


def test_conv_stem_tokens_see_pixels_around_their_geometric_centre():
    """Poke one pixel of a normalisation-free copy of the conv stem (GroupNorm mixes the whole film):
    the tokens that change are those whose receptive field [16o - 15, 16o + 15] holds the pixel."""
    xray = _xray("conv")
    stem = copy.deepcopy(xray.vit.conv1)
    for i, module in enumerate(stem):
        if isinstance(module, nn.GroupNorm):
            stem[i] = nn.Identity()
    origin, stride = xray.token_geometry()
    base = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        reference = stem(base)
        for pixel in (0, 7, 8, 20, 31, 40, 63):
            poked = base.clone()
            poked[0, 0, pixel, 30] += 5.0
            changed = (stem(poked) - reference).abs().amax(dim=(0, 1, 3)) > 1e-6  # token rows that moved
            expected = np.abs(pixel - (origin + stride * np.arange(4))) <= stride - 1
            np.testing.assert_array_equal(changed.numpy(), expected, err_msg=f"pixel row {pixel}")


def test_patch_stem_heatmap_is_plain_bilinear_upsampling():
    xray = _xray("patch")
    weights = token_interpolation(xray)
    grid = torch.rand(2, 4, 4)
    ours = torch.einsum("sg,bgh,th->bst", weights, grid, weights)
    theirs = F.interpolate(grid[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, theirs)


def test_conv_stem_heatmap_peaks_on_the_token_centre():
    xray = _xray("conv")
    weights = token_interpolation(xray)
    assert torch.allclose(weights.sum(1), torch.ones(64))
    grid = torch.zeros(1, 4, 4)
    grid[0, 2, 1] = 1.0
    heat = torch.einsum("sg,bgh,th->bst", weights, grid, weights)[0]
    assert divmod(int(heat.argmax()), 64) == (32, 16) and float(heat[32, 16]) == 1.0
    assert float(heat[40, 16]) == pytest.approx(0.5)  # half-way to the next centre


def test_explanation_carries_the_geometry():
    torch.manual_seed(0)
    bundle = create_model("test")
    case = generate_case(777, 1, xray_size=64, missing_rate=0.0)
    explanation = explain(bundle, xray_item(bundle, case.xray, "x"), label_target(bundle, "pleural effusion"))
    origin, stride = bundle.model.xray.token_geometry()
    assert (explanation.token_origin_px, explanation.token_stride_px) == (origin, stride)
    assert explanation.as_dict()["token_stride_px"] == stride


def test_pointing_scores_the_cell_the_token_saw():
    """A finding in pixels 0-7 lies in the conv stem's cell (0, 0); in the nominal patch grid it would
    also be patch (0, 0), but pixels 8-15 belong to cell 1, not 0."""
    xray = _xray("conv")
    cells, centres = _token_cells(xray)
    np.testing.assert_array_equal(centres, [0, 16, 32, 48])
    grid = np.zeros((4, 4))
    grid[1, 1] = 1.0                                    # the map points at token (1, 1): pixels 8-23
    tally = _Tally()
    near_corner = np.zeros((64, 64), dtype=bool)
    near_corner[9:12, 9:12] = True                      # inside nominal patch (0, 0), inside cell (1, 1)
    tally.point_xray("finding", near_corner, grid, cells, centres)
    far = np.zeros((64, 64), dtype=bool)
    far[26:30, 26:30] = True                            # inside nominal patch (1, 1), cell (2, 2)
    tally.point_xray("finding", far, grid, cells, centres)
    assert tally.hits["finding"] == [True, False]
    assert tally.baselines["finding"] == [1 / 16, 1 / 16]
