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


def _rank_loss(rank: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    a, b = _emb(8, seed=1), _emb(8, seed=2)
    valid = torch.ones(8, dtype=torch.bool)
    valid[5] = False
    loss = MaskedClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=2)
    rows = slice(rank * 4, rank * 4 + 4)
    value = loss.masked_forward(a[rows], b[rows], valid[rows], torch.tensor(10.0))
    torch.save(value.detach(), os.path.join(result_dir, f"{rank}.pt"))
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
        torch.testing.assert_close(per_rank[rank], want)
