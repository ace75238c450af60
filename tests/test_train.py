import dataclasses

import pytest
import torch

from bench.data import DeviceLoader, load_dataset
from bench.engine.config import TrainConfig
from bench.engine.train import evaluate, lr_factor, seed_everything, train
from bench.registry import create_model

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.05, nesterov=True, lr_schedule="linear", eval_batch_size=64)


def _run(data, tmp_path=None, resume=False, cfg=CFG):
    seed_everything(0)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    checkpoint = tmp_path / "last.pt" if tmp_path else None
    result = train(model, data, cfg, seed=0, checkpoint=checkpoint, resume=resume, progress=False)
    return result, evaluate(model, data, 64), model


@pytest.fixture
def data(fashion_root, no_system_data):
    return load_dataset("fashion_mnist", str(fashion_root))


def test_same_seed_gives_the_same_metrics(data):
    (r1, m1, _), (r2, m2, _) = _run(data), _run(data)
    assert m1 == m2 and r1.history[-1]["train_loss"] == r2.history[-1]["train_loss"]


def test_killed_after_epoch_one_and_resumed_ends_like_an_uninterrupted_run(data, tmp_path, monkeypatch):
    _, uninterrupted, _ = _run(data)
    original = DeviceLoader.set_epoch

    def killed_at_epoch_two(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(DeviceLoader, "set_epoch", killed_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _run(data, tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(DeviceLoader, "set_epoch", original)
    result, resumed, _ = _run(data, tmp_path, resume=True)
    assert resumed == uninterrupted and [h["epoch"] for h in result.history] == [1, 2]


def test_nan_loss_fails_the_run_with_a_reason(data):
    result, _, _ = _run(data, cfg=dataclasses.replace(CFG, lr=1e30, epochs=1))
    assert result.status == "failed" and "non-finite" in result.failure_reason


def test_training_on_synthetic_data_learns(data):
    _, metrics, _ = _run(data, cfg=dataclasses.replace(CFG, epochs=3))
    assert metrics["top1_pct"] > 30  # 10 classes: chance is 10%


def test_aux_losses_are_added_and_logged(data):
    seed_everything(0)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    seen = []

    def aux_losses(progress):
        seen.append(progress)
        return {"l1": 0.01 * sum(p.abs().sum() for p in model.fc.parameters())}

    model.aux_losses = aux_losses
    result = train(model, data, dataclasses.replace(CFG, epochs=1), seed=0, progress=False)
    assert seen[0] == 0 and 0 < seen[-1] < 1 and "aux_l1" in result.history[0]


def test_lr_schedules():
    cfg = TrainConfig(epochs=10, lr_schedule="step", milestones=(5, 8), warmup_epochs=1)
    f = lr_factor(cfg, steps_per_epoch=10)
    assert (
        f(0) == pytest.approx(0.1)
        and f(10) == 1
        and f(50) == pytest.approx(0.1)
        and f(80) == pytest.approx(0.01)
    )
    g = lr_factor(dataclasses.replace(cfg, lr_schedule="cosine", warmup_epochs=0), 10)
    assert g(0) == 1 and g(50) == pytest.approx(0.5) and g(100) == pytest.approx(0)
