"""Train-time augmentation keeps every label true: films keep their sides, ECGs their beats and leads."""

from __future__ import annotations

import torch

from training.augment import Augmentation


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_xray_shift_keeps_the_side_of_a_finding_and_the_shape():
    films = torch.zeros(16, 1, 64, 64)
    films[:, :, 20:40, 4:20] = 3.0             # a bright patch on the image's left
    out = Augmentation(xray_shift=6).xray(films, _generator())
    assert out.shape == films.shape and torch.isfinite(out).all()
    left, right = out[..., :32].mean(dim=(1, 2, 3)), out[..., 32:].mean(dim=(1, 2, 3))
    assert (left > right + 0.25).all()         # nothing wraps round onto the other side
    assert not torch.equal(out, films)


def test_xray_changes_are_bounded_and_per_film():
    films = torch.randn(8, 1, 32, 32)
    aug = Augmentation(xray_shift=0, xray_contrast=0.1, xray_brightness=0.1)
    out = aug.xray(films, _generator(3))
    # Without a shift each film is a * x + b with |a - 1| <= 0.1 and |b| <= 0.1, fitted per film.
    for i in range(len(films)):
        x, y = films[i].flatten(), out[i].flatten()
        a = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
        b = y.mean() - a * x.mean()
        assert abs(float(a) - 1) <= 0.1 + 1e-5 and abs(float(b)) <= 0.1 + 1e-5
    assert len({round(float(((out[i] - films[i]).mean())), 6) for i in range(len(films))}) > 1


def test_ecg_roll_keeps_each_lead_values_absent_leads_silent_and_gain_bounded():
    signals = torch.randn(6, 12, 500)
    signals[:, 3] = 0.0                         # a lead that was not recorded
    aug = Augmentation(ecg_max_shift_s=2.0, ecg_gain=0.05)
    out = aug.ecg(signals, 100.0, _generator(1))
    assert out.shape == signals.shape
    assert torch.equal(out[:, 3], torch.zeros_like(out[:, 3]))
    for i in range(len(signals)):
        gain = out[i].abs().sum() / signals[i].abs().sum()
        assert 0.95 - 1e-5 <= float(gain) <= 1.05 + 1e-5
        # a circular shift: the same samples in each lead, rotated, times one gain for the record
        restored = out[i] / gain
        assert torch.allclose(restored.sort(dim=-1).values, signals[i].sort(dim=-1).values, atol=1e-5)


def test_augmentation_is_deterministic_given_the_generator():
    films, signals = torch.randn(4, 1, 32, 32), torch.randn(4, 12, 200)
    aug = Augmentation()
    assert torch.equal(aug.xray(films, _generator(7)), aug.xray(films, _generator(7)))
    assert torch.equal(aug.ecg(signals, 50.0, _generator(7)), aug.ecg(signals, 50.0, _generator(7)))
    assert not torch.equal(aug.xray(films, _generator(7)), aug.xray(films, _generator(8)))


def test_training_batches_are_augmented_only_when_asked():
    from encoders import create_model
    from training.phantom_dataset import phantom_case_tensors
    from training.train import _batch_inputs

    bundle = create_model("test")
    data = phantom_case_tensors(bundle, 8, seed=5, missing_rate=0.0, workers=1)
    idx = torch.arange(8)
    plain, present = _batch_inputs(bundle, data, idx, torch.device("cpu"))
    again, _ = _batch_inputs(bundle, data, idx, torch.device("cpu"))
    changed, present_aug = _batch_inputs(bundle, data, idx, torch.device("cpu"), generator=_generator(),
                                         augmentation=Augmentation())
    assert torch.equal(plain["pixels"], again["pixels"]) and torch.equal(plain["signals"], again["signals"])
    assert plain["pixels"].shape == changed["pixels"].shape and plain["signals"].shape == changed["signals"].shape
    assert not torch.equal(plain["pixels"], changed["pixels"]) and not torch.equal(plain["signals"], changed["signals"])
    assert all(torch.equal(present[m], present_aug[m]) for m in present)
    assert torch.equal(plain["input_ids"], changed["input_ids"])  # reports are left alone
