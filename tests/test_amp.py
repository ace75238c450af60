"""Mixed precision and channels_last: switchable, applied, and recorded."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from bench.engine.config import TrainConfig, load_suite
from bench.engine.train import amp_dtype, seed_everything, train
from bench.registry import create_model
from tests.test_checkpoint import CFG, tiny_data, tiny_net

FAST = dataclasses.replace(CFG, epochs=1, checkpoint_every_steps=0)


def _train_watching_conv(cfg):
    seed_everything(0)
    model = tiny_net()
    seen = {}

    def hook(module, inputs, output):
        seen.update(in_cl=inputs[0].is_contiguous(memory_format=torch.channels_last), out_dtype=output.dtype)

    model[0].register_forward_hook(hook)
    result = train(model, tiny_data(), cfg, seed=0, progress=False)
    return result, model, seen


def test_bf16_autocast_on_cpu_trains_in_bf16_and_records_it(monkeypatch):
    monkeypatch.setattr(
        "bench.engine.train.cpu_has_native_bf16", lambda: True
    )  # bf16 works, if slowly, anywhere
    result, model, seen = _train_watching_conv(dataclasses.replace(FAST, amp=True))
    assert seen["out_dtype"] == torch.bfloat16 and result.runtime["amp_dtype"] == "bfloat16"
    assert model[0].weight.dtype == torch.float32  # master weights stay fp32
    assert result.status == "measured" and result.history[-1]["train_loss"] < 2


def test_amp_off_is_fp32_and_channels_last_reaches_the_convolutions():
    result, model, seen = _train_watching_conv(dataclasses.replace(FAST, channels_last=True))
    assert seen["out_dtype"] == torch.float32 and result.runtime["amp_dtype"] is None
    assert seen["in_cl"] and model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert result.runtime["channels_last"] is True


def test_amp_dtype_choice(monkeypatch):
    on = TrainConfig(amp=True)
    monkeypatch.setattr("bench.engine.train.cpu_has_native_bf16", lambda: True)  # AVX-512 BF16 or AMX
    assert amp_dtype(TrainConfig(), "cuda") is None and amp_dtype(on, "cpu") == torch.bfloat16
    monkeypatch.setattr("bench.engine.train.cpu_has_native_bf16", lambda: False)  # emulated: float32
    assert amp_dtype(on, "cpu") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(on, "cuda:0") == torch.float16  # V100-class GPUs: fp16 with a gradient scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(on, "cuda") == torch.bfloat16


def test_the_switches_and_the_lr_rule_are_part_of_the_config_hash():
    from bench.engine.config import config_hash

    def h(**kw):
        return config_hash({"model": "m", "train": dataclasses.asdict(TrainConfig(**kw))})

    assert len({h(), h(amp=True), h(channels_last=True), h(lr_scaling="linear")}) == 4
    assert TrainConfig(lr=0.1, batch_size=1024, lr_scaling="linear").scaled_lr == pytest.approx(0.4)


def test_new_fields_at_their_defaults_leave_earlier_config_hashes_unchanged():
    from bench.engine.config import config_hash

    train = dataclasses.asdict(TrainConfig())
    before = {
        k: v
        for k, v in train.items()
        if k
        not in ("lr_scaling", "base_batch_size", "amp", "channels_last", "sync_bn", "checkpoint_every_steps")
    }
    assert config_hash({"model": "m", "train": train}) == config_hash({"model": "m", "train": before})


@pytest.mark.parametrize("name", load_suite("fashion").models)
def test_every_fashion_model_trains_a_step_in_bf16_channels_last(monkeypatch, name):
    """The suites train in bf16 autocast + channels_last: every model's buffers, losses and statistics must
    take bf16 activations (CE's running scale once met a bf16 value and failed)."""
    monkeypatch.setattr("bench.engine.train.cpu_has_native_bf16", lambda: True)
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=1).to(memory_format=torch.channels_last).train()
    x = torch.randn(8, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), torch.arange(8) % 4)
        aux = getattr(model, "aux_losses", lambda progress: {})(0.6)
        loss = loss + sum(v.float() for v in aux.values())
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
