"""The training loop: plain PyTorch, one seed for everything, hooks only for a method's extra losses.

A model may define `aux_losses(progress) -> dict[str, Tensor]` (GaterNet's L1, Batch-Shaping's
curriculum, AIG's target rate); the loop adds them to the cross-entropy every step and knows nothing
else about the method. It may also name parameters to keep out of weight decay (`no_weight_decay()`,
timm's convention). The loop reads nothing back from the device per step except every `LOG_EVERY`
steps, for the progress bar and the NaN check.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bench.config import TrainConfig
from bench.data import DeviceLoader, ImageDataset

LOG_EVERY = 20


@dataclass
class TrainResult:
    status: str  # "measured" or "failed"
    failure_reason: str | None = None
    epochs_run: int = 0
    train_time_s: float = 0.0
    train_images_per_s: float = 0.0
    history: list[dict] = field(default_factory=list)  # per epoch: train loss, train top-1, aux losses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int):
    """Multiplier of the base lr at a step: linear warm-up, then the suite's schedule."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    milestones = [int(m * steps_per_epoch) for m in cfg.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total - warmup)
        if cfg.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * done))
        if cfg.lr_schedule == "linear":
            return 1 - done
        if cfg.lr_schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def _save_atomic(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    data: ImageDataset,
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "",
) -> TrainResult:
    """Train `model` in place; checkpoint after every epoch to `checkpoint` when given."""
    mean, std = data.mean_std
    loader = DeviceLoader(
        data.train_images, data.train_labels, cfg.batch_size, mean, std, device=device, shuffle=True,
        crop_padding=cfg.crop_padding, flip=cfg.flip, drop_last=True, seed=seed,
    )  # fmt: skip
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, len(loader)))
    result = TrainResult(status="measured")
    start_epoch = 0
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, result.history, result.train_time_s = (
            state["epoch"],
            state["history"],
            state["train_time_s"],
        )
    aux_losses = getattr(model, "aux_losses", None)
    total_steps = cfg.epochs * len(loader)
    bar = tqdm(total=total_steps, initial=start_epoch * len(loader), desc=desc, disable=not progress,
               leave=False, mininterval=1.0, dynamic_ncols=True)  # fmt: skip
    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        aux_sums: dict[str, Tensor] = {}
        for i, (x, y) in enumerate(loader):
            step = epoch * len(loader) + i
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if aux_losses is not None:
                for name, value in aux_losses(step / total_steps).items():
                    loss = loss + value
                    aux_sums[name] = aux_sums.get(name, 0) + value.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (i + 1) % LOG_EVERY == 0 or i + 1 == len(loader):
                mean_loss = loss_sum.item() / seen  # the only device read-back, every LOG_EVERY steps
                if not math.isfinite(mean_loss):
                    bar.close()
                    result.status = "failed"
                    result.failure_reason = f"non-finite training loss at epoch {epoch + 1}, step {i + 1}"
                    return result
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{mean_loss:.3f}",
                                acc=f"{100 * correct.item() / seen:.1f}", img_s=f"{rate:.0f}")  # fmt: skip
                bar.update(LOG_EVERY if (i + 1) % LOG_EVERY == 0 else (i + 1) % LOG_EVERY)
        result.train_time_s += time.perf_counter() - t0
        result.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / seen,
                "train_top1_pct": 100 * correct.item() / seen,
            }
            | {f"aux_{k}": float(v) / len(loader) for k, v in aux_sums.items()}
        )
        if checkpoint is not None:
            _save_atomic(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "torch_rng": torch.get_rng_state(), "epoch": epoch + 1, "history": result.history,
                 "train_time_s": result.train_time_s},
                checkpoint,
            )  # fmt: skip
    bar.close()
    result.epochs_run = cfg.epochs
    images = cfg.epochs * len(loader) * cfg.batch_size
    result.train_images_per_s = images / result.train_time_s if result.train_time_s else 0.0
    return result


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: ImageDataset, batch_size: int = 500, device: str = "cpu"
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy on the evaluation split."""
    mean, std = data.mean_std
    loader = DeviceLoader(data.test_images, data.test_labels, batch_size, mean, std, device=device)
    model.to(device).eval()
    k = min(5, data.num_classes)
    top1 = top5 = loss = 0.0
    for x, y in loader:
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        hits = logits.topk(k, dim=1).indices == y[:, None]
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(1).sum().item()
    n = len(data.test_labels)
    return {"top1_pct": 100 * top1 / n, "top5_pct": 100 * top5 / n, "eval_loss": loss / n}
