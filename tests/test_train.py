"""Training writes a loadable checkpoint with a complete sidecar, resumes, and checkpoints fail clearly."""
import json

import numpy as np
import pytest
import torch

from stochastic_shield.checkpoint import load_checkpoint, weights_hash
from stochastic_shield.errors import ShieldError
from stochastic_shield.models import build_model
from stochastic_shield.data import dataset_info
from stochastic_shield import train as train_mod
from stochastic_shield.train import TrainArgs, train


def test_train_writes_checkpoint_and_sidecar(tmp_path, fashion_root):
    out = tmp_path / "m.pt"
    meta = train(TrainArgs(out=out, data_root=str(fashion_root), epochs=2, batch_size=64, progress=False))
    side = json.loads(out.with_suffix(".json").read_text())
    for key in ("arch", "dataset", "input_shape", "normalisation", "test_accuracy", "seed", "weights_sha256"):
        assert key in side
    assert side["input_shape"] == [1, 1, 28, 28]
    assert side["test_accuracy"] > 0.3  # 512 images, 2 epochs: well above chance (0.1)
    model, meta2 = load_checkpoint(out)
    assert meta2["weights_sha256"] == weights_hash(model.state_dict()) == meta["weights_sha256"]
    assert not out.with_suffix(".partial.pt").exists()


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, fashion_root, monkeypatch):
    args = dict(data_root=str(fashion_root), epochs=2, batch_size=128, limit=256, progress=False, seed=3)
    full = train(TrainArgs(out=tmp_path / "full.pt", **args))
    resumed_args = TrainArgs(out=tmp_path / "resumed.pt", **args)
    real_save = train_mod._save_partial

    def save_then_stop(state, path):
        real_save(state, path)
        raise KeyboardInterrupt  # as if Ctrl-C came right after epoch 1's state reached the disk

    with monkeypatch.context() as m:
        m.setattr(train_mod, "_save_partial", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(resumed_args)
    assert (tmp_path / "resumed.partial.pt").exists() and not (tmp_path / "resumed.pt").exists()
    resumed = train(resumed_args)
    assert resumed["weights_sha256"] == full["weights_sha256"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(ShieldError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    m = build_model("fashion_cnn", dataset_info("fashion-mnist"))
    torch.save(m.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ShieldError, match="has no sidecar"):
        load_checkpoint(tmp_path / "w.pt")
    (tmp_path / "w.json").write_text("{broken")
    with pytest.raises(ShieldError, match="malformed"):
        load_checkpoint(tmp_path / "w.pt")


def test_shipped_checkpoint_reaches_90_percent(shipped):
    model, meta = shipped
    assert meta["test_accuracy"] >= 0.90 and meta["test_images"] == 10000
    assert np.isfinite([p.detach().numpy().sum() for p in model.parameters()]).all()
