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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from bench.data import DeviceLoader, ImageDataset
from bench.data.cityscapes import IGNORE_INDEX
from bench.engine.config import TrainConfig
from bench.engine.distributed import (
    World,
    all_gather_objects,
    all_reduce_sum,
    batch_per_rank,
    broadcast_object,
    rng_state,
    set_rng_state,
    syncs_batchnorm,
    world,
)

LOG_EVERY = 20


@dataclass
class TrainResult:
    status: str  # "measured" or "failed"
    failure_reason: str | None = None
    epochs_run: int = 0
    train_time_s: float = 0.0
    train_images_per_s: float = 0.0
    history: list[dict] = field(default_factory=list)  # per epoch: train loss, train top-1, aux losses
    runtime: dict = field(default_factory=dict)  # world size, per-rank batch, scaled lr, AMP dtype, ...


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
        return torch.optim.Adam(groups, lr=cfg.scaled_lr)
    return torch.optim.SGD(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


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
        if cfg.lr_schedule == "poly":  # PSPNet's "poly" policy, power 0.9 (Zhao et al. 2017)
            return (1 - done) ** 0.9
        if cfg.lr_schedule == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        return 1.0

    return factor


def amp_dtype(cfg: TrainConfig, device: str) -> torch.dtype | None:
    """The autocast dtype: bf16 where the device has it (CPU, Ampere and later), else fp16 (+ scaler)."""
    if not cfg.amp:
        return None
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def previous_checkpoint(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def _save_atomic(state: dict, path: Path) -> None:
    """Write to a temporary file, flush it to disk, keep the last good checkpoint as `*.prev.pt`, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if path.is_file():
        os.replace(path, previous_checkpoint(path))
    os.replace(tmp, path)


CHECKPOINT_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "rng",
    "epoch",
    "step_in_epoch",
    "partial",
    "history",
    "train_time_s",
)


def load_checkpoint(path: Path) -> dict | None:
    """The newest readable checkpoint at `path`, else its predecessor (with a message), else None."""
    for candidate in (path, previous_checkpoint(path)):
        if not candidate.is_file():
            continue
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            missing = [k for k in CHECKPOINT_KEYS if k not in state]
            if missing:
                raise ValueError(f"missing {missing}")
        except Exception as e:  # noqa: BLE001 - any unreadable file: fall back to the previous one
            print(f"checkpoint {candidate} is unreadable or incomplete ({type(e).__name__}: {str(e)[:200]}); "
                  "trying the previous checkpoint", file=sys.stderr, flush=True)  # fmt: skip
            continue
        if candidate != path:
            print(f"resuming from the previous checkpoint {candidate}", file=sys.stderr, flush=True)
        return state
    return None


def make_train_loader(data, cfg: TrainConfig, seed: int, device: str, where: World):
    """The in-memory loader (this rank's shard of each global batch) or the dataset's streaming loader."""
    if not isinstance(data, ImageDataset):  # big datasets stream from disk through worker processes
        return data.train_loader(cfg, seed, device, where.rank, where.world_size)
    mean, std = data.mean_std
    return DeviceLoader(data.train_images, data.train_labels, cfg.batch_size, mean, std, device=device,
                        shuffle=True, crop_padding=cfg.crop_padding, flip=cfg.flip, drop_last=True, seed=seed,
                        rank=where.rank, world_size=where.world_size)  # fmt: skip


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
    loss_fn=None,
) -> TrainResult:
    """Train `model` in place; checkpoint every `cfg.checkpoint_every_steps` and after every epoch.

    In a torchrun process group the model is wrapped in DistributedDataParallel, each rank takes its
    share of every global batch, epoch metrics are summed over ranks, and only rank 0 writes.
    `loss_fn(output, y)` replaces the cross-entropy (segmentation passes its ignore-index loss, which also
    takes the `{"out", "aux"}` output of a model with an auxiliary head).
    """
    where = world()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    per_rank = batch_per_rank(cfg.batch_size, where.world_size)
    sync_bn = syncs_batchnorm(cfg.sync_bn, where.world_size, device)
    loader = make_train_loader(data, cfg, seed, device, where)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model
    if where.world_size > 1:
        if sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif cfg.sync_bn and where.is_main:  # torch's SyncBatchNorm runs on GPUs only
            print("sync_bn: BatchNorm statistics stay per process on CPU (recorded as sync_bn false)",
                  file=sys.stderr, flush=True)  # fmt: skip
        net = nn.parallel.DistributedDataParallel(net, device_ids=[torch.device(device).index] if
                                                  torch.device(device).type == "cuda" else None)  # fmt: skip
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, len(loader)))
    dtype = amp_dtype(cfg, device)
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)
    if loss_fn is None:

        def loss_fn(logits, y):
            return F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)

    result = TrainResult(status="measured")
    result.runtime = {"world_size": where.world_size, "global_batch_size": cfg.batch_size,
                      "batch_size_per_rank": per_rank, "lr": cfg.scaled_lr,
                      "lr_scaling": cfg.lr_scaling, "amp_dtype": str(dtype).removeprefix("torch.") if dtype else None,
                      "grad_scaler": scaler.is_enabled(), "channels_last": cfg.channels_last,
                      "sync_bn": sync_bn,
                      "backend": dist.get_backend() if dist.is_initialized() else None}  # fmt: skip
    start_epoch, skip_steps, partial = 0, 0, None
    state = load_checkpoint(checkpoint) if resume and checkpoint is not None and where.is_main else None
    state = broadcast_object(state)  # rank 0 read it; every rank continues from it
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rng = state["rng"]  # one entry per rank of the run that wrote the checkpoint, as is `partial`
        set_rng_state(rng[where.rank % len(rng)], device)
        start_epoch, skip_steps = state["epoch"], state["step_in_epoch"]
        result.history, result.train_time_s, partial = (
            state["history"],
            state["train_time_s"],
            state["partial"],
        )
        if partial is not None:
            partial = partial[where.rank % len(partial)]
    del state
    aux_losses = getattr(model, "aux_losses", None)
    total_steps = cfg.epochs * len(loader)
    bar = tqdm(total=total_steps, initial=start_epoch * len(loader) + skip_steps, desc=desc,
               disable=not progress or not where.is_main, leave=False, mininterval=1.0,
               dynamic_ncols=True)  # fmt: skip

    def save(epoch: int, step_in_epoch: int, sums: dict | None) -> None:
        # every rank's RNG state and partial epoch sums, so each rank continues its own stream and counts
        gathered = all_gather_objects((rng_state(device), sums))
        rngs, partials = [g[0] for g in gathered], [g[1] for g in gathered]
        if checkpoint is not None and where.is_main:
            _save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs,
                              "epoch": epoch, "step_in_epoch": step_in_epoch,
                              "partial": partials if sums is not None else None,
                              "history": result.history, "train_time_s": result.train_time_s,
                              "world_size": where.world_size}, checkpoint)  # fmt: skip

    for epoch in range(start_epoch, cfg.epochs):
        loader.set_epoch(epoch)
        net.train()
        t0, timed_images = time.perf_counter(), 0
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        seen = torch.zeros((), dtype=torch.long, device=device)  # images, or labelled pixels
        aux_sums: dict[str, Tensor] = {}
        if partial is not None and skip_steps:  # the part of this epoch that ran before the interruption
            loss_sum += partial["loss_sum"]
            correct += partial["correct"]
            seen += partial["seen"]
            aux_sums = {k: v.to(device) for k, v in partial["aux_sums"].items()}
        partial = None
        first = 0
        if skip_steps and hasattr(loader, "start_at"):  # a streamed loader starts at the batch directly
            loader.start_at(skip_steps)
            first = skip_steps
        for i, (x, y) in enumerate(loader, start=first):
            if i < skip_steps:  # resuming mid-epoch: the in-memory loader replays its order; skip what ran
                continue
            step = epoch * len(loader) + i
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = net(x)
                logits = (
                    out["out"] if isinstance(out, dict) else out
                )  # {"out", "aux"}: a model with an aux head
                loss = loss_fn(out, y)
                if aux_losses is not None:
                    for name, value in aux_losses(step / total_steps).items():
                        loss = loss + value.float()
                        aux_sums[name] = aux_sums.get(name, 0) + value.detach().float()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step_correct, counted = _correct_and_counted(logits.detach(), y)
            loss_sum += loss.detach() * counted  # the loss is a mean over the counted images or pixels
            correct += step_correct
            seen += counted
            timed_images += len(y)
            if (i + 1) % LOG_EVERY == 0 or i + 1 == len(loader):
                totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(), seen.float()]))
                mean_loss = totals[0].item() / totals[2].item()  # the only device read-back, every LOG_EVERY
                if not math.isfinite(mean_loss):
                    bar.close()
                    result.status = "failed"
                    result.failure_reason = f"non-finite training loss at epoch {epoch + 1}, step {i + 1}"
                    return result
                rate = timed_images / (time.perf_counter() - t0)
                bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{mean_loss:.3f}",
                                acc=f"{100 * totals[1].item() / totals[2].item():.1f}", img_s=f"{rate:.0f}")  # fmt: skip
                bar.update(LOG_EVERY if (i + 1) % LOG_EVERY == 0 else (i + 1) % LOG_EVERY)
            every = cfg.checkpoint_every_steps
            if every and (step + 1) % every == 0 and i + 1 < len(loader):
                result.train_time_s += time.perf_counter() - t0
                t0, timed_images = time.perf_counter(), 0
                save(epoch, i + 1, {"loss_sum": loss_sum.cpu(), "correct": correct.cpu(), "seen": seen.cpu(),
                                    "aux_sums": {k: v.cpu() for k, v in aux_sums.items()}})  # fmt: skip
        skip_steps = 0
        result.train_time_s += time.perf_counter() - t0
        n_steps = len(loader)
        names = sorted(aux_sums)
        totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(), seen.float(),
                                             *[torch.as_tensor(aux_sums[k], device=device).float() for k in names]]))  # fmt: skip
        totals = totals.tolist()
        result.history.append(
            {
                "epoch": epoch + 1,
                "train_loss": totals[0] / totals[2],
                "train_top1_pct": 100 * totals[1] / totals[2],
            }
            | {f"aux_{k}": v / where.world_size / n_steps for k, v in zip(names, totals[3:], strict=True)}
        )
        save(epoch + 1, 0, None)
    bar.close()
    result.epochs_run = cfg.epochs
    images = cfg.epochs * len(loader) * cfg.batch_size
    result.train_images_per_s = images / result.train_time_s if result.train_time_s else 0.0
    return result


def _save_checkpoint(state: dict, path: Path) -> None:  # a seam: the tests interrupt a run here
    _save_atomic(state, path)


def _correct_and_counted(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor | int]:
    """Correct predictions and how many were counted: images (classification) or labelled pixels
    (segmentation, a device tensor: no read-back in the training loop)."""
    hits = logits.argmax(1) == y
    if y.dim() == 1:
        return hits.sum(), len(y)
    labelled = y != IGNORE_INDEX
    return (hits & labelled).sum(), labelled.sum()  # a mask, not indexing: no sync on a GPU


@torch.inference_mode()
def evaluate(
    model: nn.Module, data: ImageDataset, batch_size: int = 500, device: str = "cpu"
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (percent) and mean cross-entropy on the evaluation split.

    In a process group each rank evaluates every world_size-th image and the sums are reduced, so every
    rank returns the metrics of the whole evaluation set.
    """
    where = world()
    if not isinstance(data, ImageDataset):
        loader = data.eval_loader(batch_size, device, where.rank, where.world_size)
    else:
        mean, std = data.mean_std
        shard = slice(where.rank, None, where.world_size)
        loader = DeviceLoader(data.test_images[shard], data.test_labels[shard], batch_size, mean, std,
                              device=device)  # fmt: skip
    k = min(5, data.num_classes)
    model.to(device).eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # top-1, top-5, loss, images
    for x, y in loader:
        logits = model(x.to(device, non_blocking=True)).float()
        y = y.to(device, non_blocking=True)
        hits = logits.topk(k, dim=1).indices == y[:, None]
        sums += torch.stack([hits[:, 0].sum().double(), hits.any(1).sum().double(),
                             F.cross_entropy(logits, y, reduction="sum").double(),
                             torch.tensor(len(y), dtype=torch.float64, device=device)])  # fmt: skip
    top1, top5, loss, n = all_reduce_sum(sums).tolist()
    return {"top1_pct": 100 * top1 / n, "top5_pct": 100 * top5 / n, "eval_loss": loss / n}
