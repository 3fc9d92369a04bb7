"""Side-swapped reports as hard negatives (training/side_swap.py): the swap, the loss, the guards, a run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from encoders.errors import InvalidInputError
from training.side_swap import side_swap_loss, swap_sides
from training.train import TrainOptions, train


def test_only_lateral_finding_sentences_are_swapped_with_their_case():
    report = ("Small left pleural effusion. Left bundle branch block. Surgical clips in the right upper quadrant. "
              "Right-sided pneumothorax. Consolidation in the right lower lobe.")
    assert swap_sides(report) == ("Small right pleural effusion. Left bundle branch block. Surgical clips in the "
                                  "right upper quadrant. Left-sided pneumothorax. Consolidation in the left lower lobe.")
    both = "Bilateral pleural effusions, small on the left and moderate on the right."
    assert swap_sides(both) == "Bilateral pleural effusions, small on the right and moderate on the left."
    assert swap_sides(swap_sides(report)) == report  # an involution on what it touches
    # Nothing the film shows on one side: no negative.
    assert swap_sides("Heart size is normal. Left ventricular hypertrophy. Leftward axis.") is None
    assert swap_sides("Old healed fracture of a left posterior rib.") is None
    assert swap_sides("No pleural effusion.") is None


def test_the_loss_is_the_two_way_cross_entropy_and_zero_without_pairs():
    torch.manual_seed(0)
    x, t, s = (torch.nn.functional.normalize(torch.randn(4, 8), dim=-1) for _ in range(3))
    valid = torch.tensor([True, False, True, True])
    scale = torch.tensor(20.0)
    expected = torch.stack([torch.nn.functional.softplus(scale * ((x[i] * s[i]).sum() - (x[i] * t[i]).sum()))
                            for i in (0, 2, 3)]).mean()
    torch.testing.assert_close(side_swap_loss(x, t, s, valid, scale), expected)
    assert side_swap_loss(x, t, t, valid, scale).item() == pytest.approx(math.log(2))  # cannot be told apart
    none = side_swap_loss(x, t, s, torch.zeros(4, dtype=torch.bool), scale)
    assert none.item() == 0.0


@pytest.mark.parametrize("options, reason", [
    (dict(side_swap=-1.0, freeze=("text",)), "weight > 0"),
    (dict(side_swap=1.0, freeze=("xray", "text")), "X-ray tower is frozen"),
    (dict(side_swap=1.0, freeze=("ecg",)), "text tower frozen and cached"),
    (dict(side_swap=1.0, freeze=("text",), cache_frozen=False), "text tower frozen and cached"),
    (dict(side_swap=1.0, freeze=("text",), sentence_sampling=0.3), "text tower frozen and cached"),
])
def test_bad_side_swap_options_fail_before_any_work(tmp_path, options, reason):
    out = tmp_path / "run"
    with pytest.raises(InvalidInputError, match=reason):
        train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(out), progress=False, **options))
    assert not out.exists()  # nothing was written


def test_a_run_with_the_term_logs_it_and_trains_only_the_xray_side(tmp_path):
    from encoders import load_model

    base = tmp_path / "base"
    train(TrainOptions(preset="test", cases=24, epochs=1, batch_size=8, out=str(base), threads=1, progress=False,
                       warmup_steps=1))
    out = tmp_path / "swap"
    train(TrainOptions(init_from=str(base), freeze=("ecg", "text"), side_swap=1.0, cases=48, epochs=1, batch_size=8,
                       out=str(out), threads=1, progress=False, warmup_steps=1, lr=1e-3))
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "step"]
    assert steps and all(math.isfinite(e["loss_side_swap"]) and e["loss_side_swap"] >= 0 for e in steps)
    assert any(e["loss_side_swap"] > 0 for e in steps)  # the phantom has lateral findings in 48 cases
    before, after = load_model(base).model.state_dict(), load_model(out).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("text", "ecg")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("xray"))
