"""Shared test helpers: a tiny suite file on synthetic data."""

from pathlib import Path

from torch import nn

TINY_SUITE = """
name = "tiny"
version = 1
datasets = ["fashion_mnist"]
models = {models}
seeds = {seeds}

[train]
epochs = {epochs}
batch_size = 64
lr = 0.05
nesterov = true
lr_schedule = "linear"
eval_batch_size = 64

[measure]
latency_batch_sizes = [1]
latency_min_run_time_s = 0.01
latency_warmup = 1
"""


def write_suite(folder: Path, models=("resnet20",), seeds=(0,), epochs=1, extra="") -> Path:
    path = Path(folder) / "tiny.toml"
    path.write_text(TINY_SUITE.format(models=list(models), seeds=list(seeds), epochs=epochs) + extra)
    return path


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
