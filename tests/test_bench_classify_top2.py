"""benchmarks/classify_top2.py at unit-test size: the Classify path on a few phantom films."""

from __future__ import annotations

import pytest

from benchmarks.classify_top2 import measure
from encoders import create_model


@pytest.fixture(scope="module")
def bundle():
    return create_model("test")


def test_counts_are_consistent_on_a_few_films(bundle):
    result = measure(bundle, seed=3, films=3)
    assert result["films"] == 3 and not result["calibrated"]  # an untrained preset has no calibration
    assert 0 <= result["top2"] <= 3 and result["rate"] == round(result["top2"] / 3, 4)
    assert 0 <= result["misses_behind_two_true_findings"] <= 3 - result["top2"]
    # Every miss ranked at least two labels above its best true effusion.
    assert sum(result["ranked_above_on_misses"].values()) >= 2 * (3 - result["top2"])


def test_an_unknown_label_is_named(bundle):
    with pytest.raises(ValueError, match="labels: sinus_tachycardia are not X-ray labels"):
        measure(bundle, films=1, labels=("sinus_tachycardia",))
