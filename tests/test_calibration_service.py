"""Classify ranks by calibrated probability when the served checkpoint has a calibration for it.

A `test`-preset random-init checkpoint with a hand-written calibration.json whose intercepts are far
apart: the calibrated ranking is then fixed by the intercepts, whatever the random margins are.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from encoders import create_model, save_checkpoint
from encoders.calibration import Calibration, PlattMap
from encoders.labelsets import load_labelset
from service.client_types import text_item, xray_item
from test_service_harness import ServerProcess, reap_servers  # noqa: F401 (autouse: no server outlives its module)

SLOPE = 2.0


def _png(seed: int) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@pytest.fixture(scope="module")
def calibrated_checkpoint(tmp_path_factory):
    """(checkpoint dir, model_version, {xray label: intercept}): intercepts rank the labels in reverse id order."""
    torch.manual_seed(7)
    bundle = create_model("test")
    directory = tmp_path_factory.mktemp("ckpt")
    version = save_checkpoint(bundle, directory)
    ids = sorted(label.id for label in load_labelset("phantom").for_modality("xray"))
    intercepts = {label: 6.0 * (len(ids) - i) - 20.0 for i, label in enumerate(reversed(ids))}
    maps = {label: PlattMap(SLOPE, b, 50, 450) for label, b in intercepts.items()}
    Calibration(version, {"phantom": {"xray": maps}}).save(directory)
    return directory, version, intercepts


def test_classify_over_grpc_uses_the_calibration(calibrated_checkpoint, tmp_path):
    directory, version, intercepts = calibrated_checkpoint
    server = ServerProcess(tmp_path / "data", "--checkpoint", str(directory)).start()
    try:
        client = server.client()
        result = client.classify(xray_item(_png(1)), label_set="phantom")
        assert result.model_version == version
        ranked = [s.label for s in result.labels]
        assert ranked == sorted(intercepts, key=lambda label: -intercepts[label])
        for s in result.labels:
            # score stays the raw margin; probability is the stored map of it
            assert s.probability == pytest.approx(_sigmoid(SLOPE * s.score + intercepts[s.label]), abs=1e-5)
        # No calibration for text subjects: the raw CheXzero probability, ranked by itself.
        text = client.classify(text_item("enlarged heart with bilateral effusions"), label_set="phantom")
        assert [s.probability for s in text.labels] == sorted((s.probability for s in text.labels), reverse=True)
        assert not any(s.probability == pytest.approx(_sigmoid(SLOPE * s.score + intercepts.get(s.label, 0.0)))
                       for s in text.labels)
    finally:
        server.terminate()


def test_scorer_ignores_another_model_version_and_custom_sets(calibrated_checkpoint, tmp_path):
    from encoders import load_model
    from service.encoding import ServedModel
    from service.labels import LabelScorer

    directory, version, intercepts = calibrated_checkpoint
    model = ServedModel(load_model(directory))
    vector = model.model.encode_xray(model.bundle.preprocess_xray(_png(2)).unsqueeze(0)).detach().numpy()[0]
    scorer = LabelScorer(model)
    calibrated = scorer.score(scorer.builtin("phantom"), vector, "xray")
    assert [s.label for s in calibrated] == sorted(intercepts, key=lambda label: -intercepts[label])
    scale = float(model.bundle.model.scale().detach())
    # A set that only borrows the built-in name (not the registered object) is never calibrated.
    lookalike = scorer.score(load_labelset("phantom"), vector, "xray")
    for s in lookalike:
        assert s.probability == pytest.approx(_sigmoid(scale * s.score), abs=1e-5)

    # The same file, stamped for other weights: ignored, raw probabilities come back.
    stale = Calibration.load(directory)
    assert stale is not None
    stale.model_version = "test-0000000000000000"
    stale.save(directory)
    try:
        raw_scorer = LabelScorer(model)
        assert raw_scorer.calibration is None
        raw = raw_scorer.score(raw_scorer.builtin("phantom"), vector, "xray")
        for s in raw:
            assert s.probability == pytest.approx(_sigmoid(scale * s.score), abs=1e-5)
        assert {s.label: s.score for s in raw} == pytest.approx({s.label: s.score for s in calibrated}, abs=1e-6)
    finally:
        stale.model_version = version
        stale.save(directory)
