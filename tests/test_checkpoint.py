"""Resumable runs: checkpoints in the middle of an epoch, a run killed and resumed, a truncated file."""

import dataclasses

import pytest
import torch
from torch import nn

from bench.data import ImageDataset
from bench.engine import train as train_module
from bench.engine.config import TrainConfig
from bench.engine.train import evaluate, load_checkpoint, previous_checkpoint, seed_everything, train

CFG = TrainConfig(
    epochs=2,
    batch_size=8,
    lr=0.05,
    lr_schedule="cosine",
    crop_padding=1,
    flip=True,
    checkpoint_every_steps=3,
    eval_batch_size=32,
)


def tiny_data(n=64, size=8, seed=0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n + 32,), generator=g)
    images = torch.randint(0, 60, (n + 32, 1, size, size), generator=g, dtype=torch.uint8)
    images[torch.arange(n + 32), 0, labels * 2] = 230  # the label is a bright row
    return ImageDataset("tiny", images[:n], labels[:n], images[n:], labels[n:], 4, "memory")


def tiny_net() -> nn.Module:
    # BatchNorm (running statistics) and Dropout (the global RNG) both have to resume exactly
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def _run(data, checkpoint=None, resume=False, cfg=CFG):
    seed_everything(0)
    model = tiny_net()
    result = train(model, data, cfg, seed=0, checkpoint=checkpoint, resume=resume, progress=False)
    return result, model


@pytest.fixture
def data():
    return tiny_data()


def test_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_run(data, tmp_path, monkeypatch):
    reference, ref_model = _run(data)
    saves, original = [], train_module._save_checkpoint

    def killed_after_fourth_save(state, path):
        original(state, path)
        saves.append((state["epoch"], state["step_in_epoch"]))
        if len(saves) == 4:  # 8 steps per epoch, every 3 steps: (0,3) (0,6) (1,0) (1,1)
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", killed_after_fourth_save)
    with pytest.raises(KeyboardInterrupt):
        _run(data, tmp_path / "last.pt")
    assert saves == [(0, 3), (0, 6), (1, 0), (1, 1)]
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    resumed, model = _run(data, tmp_path / "last.pt", resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[-1]["train_loss"] == reference.history[-1]["train_loss"]
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert evaluate(model, data, 32) == evaluate(ref_model, data, 32)


def test_a_checkpoint_holds_every_piece_of_state(data, tmp_path):
    _run(data, tmp_path / "last.pt", cfg=dataclasses.replace(CFG, epochs=1))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "step_in_epoch"} <= set(state)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 0 and len(state["rng"]) == 1
    assert {"python", "numpy", "torch"} <= set(state["rng"][0])
    assert torch.load(previous_checkpoint(tmp_path / "last.pt"), weights_only=True)["step_in_epoch"] == 6


def test_a_truncated_checkpoint_is_detected_and_the_previous_one_used(data, tmp_path, monkeypatch, capsys):
    reference, ref_model = _run(data)
    path, original = tmp_path / "last.pt", train_module._save_checkpoint

    def killed_at_epoch_end(state, path):
        original(state, path)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", killed_at_epoch_end)
    with pytest.raises(KeyboardInterrupt):
        _run(data, path)  # last: the end of epoch 1; prev: step 6 of epoch 1
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a write cut short
    state = load_checkpoint(path)
    assert state["epoch"] == 0 and state["step_in_epoch"] == 6
    assert "unreadable" in capsys.readouterr().err
    resumed, model = _run(data, path, resume=True)  # continues from step 6 and ends like the reference
    assert resumed.history == reference.history
    assert all(
        torch.equal(a, b)
        for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True)
    )


def test_no_readable_checkpoint_starts_from_scratch(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    assert load_checkpoint(tmp_path / "last.pt") is None
    assert "unreadable" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "missing.pt") is None
