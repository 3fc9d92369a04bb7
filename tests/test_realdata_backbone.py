"""The encoders as a backbone: load_encoder, ONNX export checked against PyTorch, finetune on PTB-XL."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from encoders import create_model, save_checkpoint

    directory = tmp_path_factory.mktemp("ckpt") / "test"
    torch.manual_seed(0)
    save_checkpoint(create_model("test"), directory)
    return directory


def test_load_encoder_is_a_plain_module_with_its_preprocessing(checkpoint, shared_data):
    from encoders.backbone import load_encoder
    from encoders.preprocess.ecg import read_ecg

    ecg = load_encoder(checkpoint, "ecg")
    assert isinstance(ecg, torch.nn.Module)
    names = {name.split(".")[0] for name, _ in ecg.named_parameters()}
    assert names == {"tower", "projection"}                    # only the ECG tower, no text weights
    record = read_ecg(shared_data / "physionet_samples" / "100")
    signals, mask = ecg.preprocess(record.signal, record.fs, record.lead_names)
    features = ecg(signals[None], mask[None])
    assert features.shape == (1, ecg.feature_dim) and torch.isfinite(features).all()
    head = torch.nn.Linear(ecg.feature_dim, 3)
    head(features).sum().backward()
    assert any(p.grad is not None for p in ecg.parameters())  # gradients reach the encoder: fine-tunable
    joint = load_encoder(checkpoint, "ecg", project=True)
    embedding = joint(signals[None], mask[None])
    assert embedding.shape == (1, joint.feature_dim) and torch.allclose(embedding.norm(dim=-1), torch.ones(1))
    xray = load_encoder(checkpoint, "xray")
    image = xray.preprocess(np.full((40, 60), 128, dtype=np.uint8))
    assert xray(image[None]).shape == (1, xray.feature_dim)


@pytest.mark.parametrize("modality", ["xray", "ecg", "text"])
def test_export_onnx_matches_pytorch(checkpoint, tmp_path, modality, capsys):
    from tribind.cli import main

    out = tmp_path / f"{modality}.onnx"
    code = main(["export", "--checkpoint", str(checkpoint), "--modality", modality, "--format", "onnx",
                 "--out", str(out)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and out.is_file() and result["ok"] and result["max_abs_diff"] <= 1e-4


def test_finetune_ptbxl_superclass_with_random_baseline(checkpoint, shared_data, tmp_path, capsys):
    from tribind.cli import main

    out = tmp_path / "ft"
    code = main(["finetune", "--checkpoint", str(checkpoint), "--data", f"ptbxl:{shared_data / 'ptbxl'}?rate=100",
                 "--task", "superclass", "--out", str(out), "--epochs", "4", "--patience", "2", "--limit", "150"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["labels"][0] == "NORM" and result["modality"] == "ecg"
    assert "strat_fold" in result["split_protocol"] and result["split_sizes"]["test"] > 0
    for run in ("finetuned", "random_init"):
        test = result[run]["test"]
        assert set(test["per_label"]) == set(result["labels"])
        assert test["macro_auroc"] is None or 0.0 <= test["macro_auroc"] <= 1.0
        assert 1 <= result[run]["epochs_run"] <= 4
    saved = torch.load(out / "finetuned.pt", weights_only=False)
    assert saved["head"]["weight"].shape[0] == len(result["labels"]) and saved["encoder"] is None
    assert json.loads((out / "metrics.json").read_text())["labels"] == result["labels"]
