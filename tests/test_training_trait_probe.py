"""The shared-trait probe of `tribind eval --data phantom`: it reads a planted trait, not noise, and its
trait values are the rendered cases' own."""

from __future__ import annotations

import numpy as np

from training.phantom import generate_case
from training.trait_probe import SHARED_TRAITS, phantom_traits, probe_r2, shared_trait_probe


def test_probe_reads_a_trait_spread_over_many_dimensions_and_not_noise():
    rng = np.random.default_rng(0)
    trait = rng.normal(45.0, 22.0, 600)
    noise = rng.normal(size=(600, 64))
    mixing = rng.normal(size=64)
    planted = noise * 0.3 + np.outer((trait - 45.0) / 22.0, mixing) / np.linalg.norm(mixing)
    assert probe_r2(planted, trait) > 0.8
    assert probe_r2(noise, trait) < 0.1
    assert probe_r2(noise, np.full(600, 3.0)) is None   # a constant trait has no R^2
    assert probe_r2(noise[:5], trait[:5]) is None       # too few cases


def test_phantom_traits_are_the_rendered_cases_attributes():
    traits = phantom_traits(seed=21, cases=6)
    assert set(traits) == set(SHARED_TRAITS)
    for i in (0, 5):
        attributes = generate_case(seed=21, index=i, xray_size=64).attributes
        assert traits["heart_axis_deg"][i] == attributes["heart_axis_deg"]
        assert traits["ctr"][i] == attributes["ctr"]
        assert traits["habitus"][i] == {"slender": 0, "average": 1, "broad": 2}[attributes["habitus"]]


def test_each_modality_is_probed_on_the_cases_that_have_it():
    rng = np.random.default_rng(1)
    trait = rng.normal(size=200)
    present = {"xray": np.arange(200) % 4 != 0, "ecg": np.ones(200, dtype=bool)}
    # Absent X-rays are zero rows: probed on every row they would drag R^2 down.
    xray = np.outer(trait, rng.normal(size=16)) * present["xray"][:, None]
    ecg = rng.normal(size=(200, 16))
    out = shared_trait_probe({"xray": xray, "ecg": ecg}, present, {"heart_axis_deg": trait})
    assert out["xray"]["heart_axis_deg"] > 0.99
    assert out["ecg"]["heart_axis_deg"] < 0.1
