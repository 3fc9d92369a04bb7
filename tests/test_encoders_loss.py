"""The tri-modal loss: missing modalities, equivalence with open_clip's ClipLoss, and 2-rank gathering."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from encoders.loss import MaskedClipLoss, TriModalLoss

WEIGHTS = {"xray_text": 1.0, "ecg_text": 1.0, "xray_ecg": 1.0}


def _emb(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_all_present_matches_open_clip():
    a, b, scale = _emb(6, seed=1), _emb(6, seed=2), torch.tensor(10.0)
    ours = MaskedClipLoss().masked_forward(a, b, torch.ones(6, dtype=torch.bool), scale)
    torch.testing.assert_close(ours, ClipLoss()(a, b, scale))


def test_missing_rows_leave_the_loss():
    a, b, scale = _emb(6, seed=1), _emb(6, seed=2), torch.tensor(10.0)
    valid = torch.tensor([True, False, True, True, False, True])
    junk_a, junk_b = a.clone(), b.clone()
    junk_a[~valid] = 0.0
    junk_b[~valid] = _emb(2, seed=9)
    masked = MaskedClipLoss().masked_forward(junk_a, junk_b, valid, scale)
    torch.testing.assert_close(masked, ClipLoss()(a[valid], b[valid], scale))


def test_trimodal_sums_pairs_over_their_own_samples():
    n = 8
    emb = {m: _emb(n, seed=s) for s, m in enumerate(("xray", "ecg", "text"))}
    present = {"xray": torch.tensor([1, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool),
               "ecg": torch.tensor([1, 0, 1, 1, 1, 1, 1, 0], dtype=torch.bool),
               "text": torch.ones(n, dtype=torch.bool)}
    scale = torch.tensor(5.0)
    total, parts = TriModalLoss(WEIGHTS)(emb, present, scale)
    expected = 0.0
    for a, b in (("xray", "text"), ("ecg", "text"), ("xray", "ecg")):
        rows = present[a] & present[b]
        term = ClipLoss()(emb[a][rows], emb[b][rows], scale)
        assert parts[f"{a}_{b}"] == pytest.approx(float(term), rel=1e-5)
        expected = expected + term
    torch.testing.assert_close(total, expected)


def test_pair_with_no_samples_is_zero_but_differentiable():
    emb = {m: _emb(4, seed=s).requires_grad_(True) for s, m in enumerate(("xray", "ecg", "text"))}
    present = {"xray": torch.zeros(4, dtype=torch.bool), "ecg": torch.ones(4, dtype=torch.bool),
               "text": torch.ones(4, dtype=torch.bool)}
    total, parts = TriModalLoss(WEIGHTS)(emb, present, torch.tensor(5.0))
    assert parts["xray_text"] == 0.0 and parts["xray_ecg"] == 0.0 and parts["ecg_text"] > 0
    total.backward()
    assert emb["xray"].grad is not None and float(emb["xray"].grad.abs().sum()) == 0.0


# Findings of 8 cases over 3 labels: rows 0, 2, 7 show none, 1 and 4 the same two, 3 one of those, 5 and 6 others.
FINDINGS = torch.tensor([[0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 1], [0, 0, 0]],
                        dtype=torch.bool)


def _label_aware_reference(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, findings: torch.Tensor,
                           share: float, scale: float, rows: torch.Tensor) -> torch.Tensor:
    """The soft-target loss written out per row, for the rows `rows` (all valid)."""
    f = findings.float()
    total = 0.0
    for logits in (scale * a @ b.T, scale * b @ a.T):
        per_row = []
        for i in rows.tolist():
            alike = []
            for j in range(len(valid)):
                union = float(((f[i] + f[j]) > 0).sum())
                alike.append(float((f[i] * f[j]).sum()) / union if union else 1.0)
            alike = torch.tensor(alike) * valid
            target = share * alike / alike.sum()
            target[i] += 1.0 - share
            log_probs = logits[i].masked_fill(~valid, float("-inf")).log_softmax(-1)
            per_row.append(-(target[valid] * log_probs[valid]).sum())
        total = total + torch.stack(per_row).mean()
    return total / 2


def test_label_aware_targets_match_the_written_out_loss():
    a, b, scale = _emb(8, seed=1), _emb(8, seed=2), torch.tensor(10.0)
    valid = torch.tensor([True, True, True, True, True, False, True, True])
    ours = MaskedClipLoss().masked_forward(a, b, valid, scale, FINDINGS, 0.5)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, _label_aware_reference(a, b, valid, FINDINGS, 0.5, 10.0, torch.nonzero(valid).flatten()))
    # share 0 is CLIP's loss exactly
    torch.testing.assert_close(MaskedClipLoss().masked_forward(a, b, valid, scale, FINDINGS, 0.0),
                               MaskedClipLoss().masked_forward(a, b, valid, scale))


def test_label_aware_targets_forgive_swapping_cases_with_the_same_findings():
    # Reports 0 and 2 (both without findings) swapped: CLIP punishes it as much as swapping 0 and 1
    # (different findings); label-aware targets punish the first swap much less than the second.
    a = _emb(8, seed=3)
    swapped_alike, swapped_unlike = a.clone(), a.clone()
    swapped_alike[[0, 2]] = a[[2, 0]]
    swapped_unlike[[0, 1]] = a[[1, 0]]
    valid, scale = torch.ones(8, dtype=torch.bool), torch.tensor(20.0)

    def cost_of_swap(b: torch.Tensor, share: float) -> float:
        def loss(other: torch.Tensor) -> float:
            return float(MaskedClipLoss().masked_forward(a, other, valid, scale, FINDINGS, share))
        return loss(b) - loss(a)

    assert cost_of_swap(swapped_alike, 0.0) == pytest.approx(cost_of_swap(swapped_unlike, 0.0), rel=0.3)
    assert cost_of_swap(swapped_alike, 0.9) < 0.6 * cost_of_swap(swapped_unlike, 0.9)


def test_trimodal_uses_label_targets_on_text_pairs_only():
    n = 8
    emb = {m: _emb(n, seed=s) for s, m in enumerate(("xray", "ecg", "text"))}
    present = {m: torch.ones(n, dtype=torch.bool) for m in emb}
    findings = {"xray": FINDINGS, "ecg": FINDINGS.flip(0)}
    scale = torch.tensor(5.0)
    _, plain = TriModalLoss(WEIGHTS)(emb, present, scale, findings)
    _, soft = TriModalLoss({**WEIGHTS, "label_targets": 0.4})(emb, present, scale, findings)
    assert soft["xray_ecg"] == pytest.approx(plain["xray_ecg"])
    rows = torch.arange(n)
    assert soft["xray_text"] == pytest.approx(float(_label_aware_reference(
        emb["xray"], emb["text"], present["xray"], findings["xray"], 0.4, 5.0, rows)), rel=1e-5)
    assert soft["ecg_text"] == pytest.approx(float(_label_aware_reference(
        emb["ecg"], emb["text"], present["ecg"], findings["ecg"], 0.4, 5.0, rows)), rel=1e-5)
    assert soft["xray_text"] != pytest.approx(plain["xray_text"])
    # one share per pair: here only ECG<->text
    _, ecg_only = TriModalLoss({**WEIGHTS, "label_targets": {"ecg_text": 0.4}})(emb, present, scale, findings)
    assert ecg_only["xray_text"] == pytest.approx(plain["xray_text"]) and ecg_only["ecg_text"] == pytest.approx(soft["ecg_text"])


def _rank_loss(rank: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    a, b = _emb(8, seed=1), _emb(8, seed=2)
    valid = torch.ones(8, dtype=torch.bool)
    valid[5] = False
    loss = MaskedClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=2)
    rows = slice(rank * 4, rank * 4 + 4)
    value = loss.masked_forward(a[rows], b[rows], valid[rows], torch.tensor(10.0))
    soft = loss.masked_forward(a[rows], b[rows], valid[rows], torch.tensor(10.0), FINDINGS[rows], 0.5)
    whole = MaskedClipLoss(local_loss=False, gather_with_grad=True, rank=rank, world_size=2).masked_forward(
        a[rows], b[rows], valid[rows], torch.tensor(10.0), FINDINGS[rows], 0.5)
    torch.save(torch.stack([value.detach(), soft.detach(), whole.detach()]), os.path.join(result_dir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_ranks_see_each_others_negatives():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_loss, args=(os.path.join(tmp, "init"), tmp), nprocs=2, join=True)
        per_rank = [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(2)]
    a, b = _emb(8, seed=1), _emb(8, seed=2)
    valid = torch.ones(8, dtype=torch.bool)
    valid[5] = False
    logits = 10.0 * a @ b.T
    logits = logits.masked_fill(~valid.unsqueeze(0), float("-inf"))
    labels = torch.arange(8)
    for rank in range(2):
        rows = torch.arange(rank * 4, rank * 4 + 4)
        rows = rows[valid[rows]]
        want = (F.cross_entropy(logits[rows], labels[rows])
                + F.cross_entropy((10.0 * b @ a.T).masked_fill(~valid.unsqueeze(0), float("-inf"))[rows], labels[rows])) / 2
        torch.testing.assert_close(per_rank[rank][0], want)
        # label-aware targets compare a rank's rows with the findings gathered from every rank
        torch.testing.assert_close(per_rank[rank][1], _label_aware_reference(a, b, valid, FINDINGS, 0.5, 10.0, rows))
        # without local_loss every rank scores the whole gathered batch
        torch.testing.assert_close(per_rank[rank][2], _label_aware_reference(a, b, valid, FINDINGS, 0.5, 10.0,
                                                                             torch.nonzero(valid).flatten()))
