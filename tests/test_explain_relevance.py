"""The relevance rules on hand-made attention, and sub-word merging: pure functions, no model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.explain.relevance import attention_rollout, chefer_relevance, cls_readout, mean_pool_readout
from encoders.explain.words import WordSpans, merge_to_words


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(4).expand(1, 2, 4, 4)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(4)[None])


def test_rollout_rows_sum_to_one_and_follow_attention():
    # Every query attends only to token 2: rollout must send the CLS row's mass to token 2 (and itself).
    attention = torch.zeros(1, 1, 3, 3)
    attention[..., 2] = 1.0
    rolled = attention_rollout([attention, attention])
    torch.testing.assert_close(rolled.sum(-1), torch.ones(1, 3))
    assert cls_readout(rolled)[0, 1] > cls_readout(rolled)[0, 0] == 0.0


def test_chefer_one_layer_is_identity_plus_positive_grad_times_attention():
    attention = torch.tensor([[[[0.5, 0.5], [0.2, 0.8]], [[0.9, 0.1], [0.4, 0.6]]]])
    gradient = torch.tensor([[[[1.0, -2.0], [0.5, 1.0]], [[-1.0, 3.0], [0.0, 2.0]]]])
    expected = torch.eye(2) + (gradient * attention).clamp(min=0).mean(dim=1)[0]
    torch.testing.assert_close(chefer_relevance([attention], [gradient])[0], expected)


def test_chefer_with_zero_gradient_leaves_no_relevance_off_the_diagonal():
    attention = torch.softmax(torch.randn(2, 3, 5, 5), dim=-1)
    relevance = chefer_relevance([attention, attention], [torch.zeros_like(attention)] * 2)
    torch.testing.assert_close(relevance, torch.eye(5).expand(2, 5, 5))


def test_mean_pool_readout_ignores_padding_and_the_identity():
    relevance = torch.eye(4)[None].clone()
    relevance[0, :, 1] += 1.0   # every token draws on token 1
    mask = torch.tensor([[1, 1, 1, 0]])
    out = mean_pool_readout(relevance, mask)
    assert out[0, 3] == 0.0                       # padding
    torch.testing.assert_close(out[0, :3], torch.tensor([0.0, 1.0, 0.0]))


def test_merge_sums_sub_words_and_skips_special_tokens():
    segmentation = WordSpans(words=["blunted", "costophrenic"], spans=[(0, 7), (8, 20)],
                             token_word=np.array([-1, 0, 1, 1, 1, -1]))
    merged = merge_to_words(np.array([9.0, 1.0, 0.5, 0.25, 0.25, 9.0]), segmentation)
    np.testing.assert_allclose(merged, [1.0, 1.0])


@pytest.mark.parametrize("bad", ["gradcam", ""])
def test_unknown_method_is_refused(bad):
    from encoders.errors import InvalidInputError
    from encoders.explain.engine import _check_method

    with pytest.raises(InvalidInputError, match="chefer"):
        _check_method(bad)
