"""The training loop: plain PyTorch, one seed for everything, hooks only for a method's extra losses.

`train` reads top-down: `set_up` (the device, channels_last, SyncBatchNorm and DDP wrapping, the
optimizer, lr schedule and AMP scaler, in a `Run`), `resume_from` (a checkpoint: where to `Start`),
then per epoch `train_one_epoch` (the step loop), the epoch's `EpochSums.summary` into the history and
`save`. What differs between classification and segmentation (the loss, what a step's accuracy counts,
the evaluation metrics) comes from the dataset's task (`bench.engine.tasks`); the loop never asks which.

A model may define `aux_losses(progress) -> dict[str, Tensor]` (GaterNet's L1, Batch-Shaping's
curriculum, AIG's target rate); the loop adds them to the task's loss every step and knows nothing
else about the method. It may also name parameters to keep out of weight decay (`no_weight_decay()`,
timm's convention). The loop reads nothing back from the device per step except every `LOG_EVERY`
steps, for the progress bar and the NaN check.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from bench.data import batch_per_rank
from bench.engine.config import TrainConfig
from bench.engine.distributed import (
    World,
    all_gather_objects,
    all_reduce_sum,
    broadcast_object,
    rng_state,
    set_rng_state,
    syncs_batchnorm,
    world,
)
from bench.engine.env import cpu_has_native_bf16
from bench.engine.tasks import CLASSIFICATION, Task

LOG_EVERY = 20
# torch.compile's mode for `compile = true`, chosen by measurement: ResNet-20 training steps (batch 64,
# 1x28x28, SGD, 1 CPU thread, torch 2.14, a shared 2-core machine): eager 353 img/s; "default" 417 img/s
# after 41 s of compiling; "max-autotune-no-cudagraphs" 391 img/s after 38 s. Compiling pays for itself
# after ~95k training images (the quick suite's 20k-image epoch is faster eager).
COMPILE_MODE = "default"


@dataclass
class TrainResult:
    status: str  # "measured" or "failed"
    failure_reason: str | None = None
    epochs_run: int = 0
    train_time_s: float = 0.0
    train_images_per_s: float = 0.0
    history: list[dict] = field(default_factory=list)  # per epoch: train loss, train top-1, aux losses
    runtime: dict = field(default_factory=dict)  # world size, per-rank batch, scaled lr, AMP dtype, ...
    numerics: dict = field(default_factory=dict)  # deterministic mode, cudnn.benchmark, TF32 (set_numerics)


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
    """The autocast dtype: bf16 where the device has it natively (Ampere and later; CPUs with AVX-512 BF16
    or AMX), else fp16 with a gradient scaler on a GPU, and no autocast (float32) on a CPU."""
    if not cfg.amp:
        return None
    if torch.device(device).type == "cuda":  # emulated bf16 (V100, T4) is slow: fp16 + GradScaler there
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA >= 10.2)


def set_numerics(deterministic: bool, device: str) -> dict:
    """The suite's `deterministic` setting, applied; returns what the record says about it.

    Deterministic: cuDNN's deterministic algorithms and no cudnn.benchmark, TF32 off, and on CUDA
    `use_deterministic_algorithms(True, warn_only=True)` (ops without a deterministic CUDA kernel, e.g.
    adaptive-pool and bilinear backward or nll_loss2d, warn instead of failing) with
    CUBLAS_WORKSPACE_CONFIG (read when cuBLAS starts: set before the model reaches the GPU; the first
    setting of a process holds for its later runs). Fast: cudnn.benchmark on, TF32 as torch defaults it.
    The CPU's kernels are deterministic already: on the CPU no setting changes a code path or a number."""
    cuda = torch.device(device).type == "cuda"
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if cuda:
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return {"deterministic": deterministic} | numerics_in_force(device)


def numerics_in_force(device: str) -> dict:
    """The numerics settings in force: deterministic algorithms, cuDNN's flags and TF32 (CUDA only)."""
    cuda = torch.device(device).type == "cuda"
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": cuda and torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": cuda and torch.backends.cudnn.allow_tf32,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if cuda else None,
    }


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
            print(
                f"checkpoint {candidate} is unreadable or incomplete ({type(e).__name__}: {str(e)[:200]}); "
                "trying the previous checkpoint",
                file=sys.stderr,
                flush=True,
            )
            continue
        if candidate != path:
            print(f"resuming from the previous checkpoint {candidate}", file=sys.stderr, flush=True)
        return state
    return None


@dataclass
class Run:
    """One training run's moving parts: the model as it trains (DDP, SyncBatchNorm, channels_last), what
    steps it (optimizer, lr schedule, AMP), what each step computes (the task's loss and scoring, the
    model's aux losses), and where it is checkpointed."""

    cfg: TrainConfig
    model: nn.Module  # the module itself: what a checkpoint holds
    net: nn.Module  # what runs the forward pass: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # enabled for fp16 only; bf16 needs none
    dtype: torch.dtype | None  # the autocast dtype; None: no AMP
    loss_fn: Callable  # (output, target) -> mean loss over the counted images or pixels
    scored: Callable  # (logits, target) -> (correct, counted)
    aux_losses: Callable[[float], dict[str, Tensor]]  # the method's extra losses at a fraction of training
    device: str
    where: World
    checkpoint: Path | None
    runtime: dict  # what the record's `training` says about how the run was set up
    numerics: dict = field(
        default_factory=dict
    )  # the deterministic mode, cuDNN benchmark, TF32 (set_numerics)

    def autocast(self):
        if self.dtype is None:  # no AMP: no autocast context at all (torch has none for some devices)
            return contextlib.nullcontext()
        return torch.autocast(
            torch.device(self.device).type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None
        )


def set_up(
    model: nn.Module,
    cfg: TrainConfig,
    task: Task,
    device: str,
    where: World,
    checkpoint: Path | None,
    steps_per_epoch: int,
) -> Run:
    """Move the model to the device (channels_last if asked), wrap it for the process group (SyncBatchNorm
    on GPUs if asked, DDP), and build the optimizer, the lr schedule and the AMP gradient scaler."""
    per_rank = batch_per_rank(cfg.batch_size, where.world_size)
    sync_bn = syncs_batchnorm(cfg.sync_bn, where.world_size, device)
    run_numerics = set_numerics(cfg.deterministic, device)  # before the model reaches the GPU (cuBLAS)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    net = _for_processes(model, cfg, device, where, sync_bn)
    if cfg.compile:  # the forward/backward of training only: checkpoints and evaluation use `model`
        net = torch.compile(net, mode=COMPILE_MODE)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)
    runtime = {
        "world_size": where.world_size,
        "global_batch_size": cfg.batch_size,
        "batch_size_per_rank": per_rank,
        "lr": cfg.scaled_lr,
        "lr_scaling": cfg.lr_scaling,
        "amp_dtype": str(dtype).removeprefix("torch.") if dtype else None,
        "grad_scaler": scaler.is_enabled(),
        "channels_last": cfg.channels_last,
        "sync_bn": sync_bn,
        "backend": dist.get_backend() if dist.is_initialized() else None,
    }
    if cfg.compile:
        runtime["compile"] = COMPILE_MODE
    aux_losses = getattr(model, "aux_losses", lambda progress: {})
    return Run(
        cfg,
        model,
        net,
        optimizer,
        scheduler,
        scaler,
        dtype,
        task.loss(cfg),
        task.scored,
        aux_losses,
        device,
        where,
        checkpoint,
        runtime,
        run_numerics,
    )


def _for_processes(model: nn.Module, cfg: TrainConfig, device: str, where: World, sync_bn: bool) -> nn.Module:
    """What runs the forward pass: the model itself in one process; under torchrun, DDP around it (and
    SyncBatchNorm in it, on GPUs, if the config asks)."""
    if where.world_size == 1:
        return model
    net = model
    if sync_bn:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif cfg.sync_bn and where.is_main:  # torch's SyncBatchNorm runs on GPUs only
        print(
            "sync_bn: BatchNorm statistics stay per process on CPU (recorded as sync_bn false)",
            file=sys.stderr,
            flush=True,
        )
    cuda = torch.device(device).type == "cuda"
    return nn.parallel.DistributedDataParallel(net, device_ids=[torch.device(device).index] if cuda else None)


@dataclass(frozen=True)
class Start:
    """Where a run starts: an epoch, the steps of it that already ran, and this rank's sums of those."""

    epoch: int = 0
    step: int = 0
    partial: dict | None = None


def resume_from(checkpoint: Path | None, run: Run, result: TrainResult) -> Start:
    """Rank 0 reads the checkpoint (if any) and every rank continues from it: weights, optimizer, schedule,
    scaler, its own RNG stream and partial epoch sums, the history and the training time so far."""
    where = run.where
    state = load_checkpoint(checkpoint) if checkpoint is not None and where.is_main else None
    state = broadcast_object(state)  # a collective: every rank calls it, with or without a checkpoint
    if state is None:
        return Start()
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    load_scaler(run.scaler, state["scaler"])
    rng = state["rng"]  # one entry per rank of the run that wrote the checkpoint, as is `partial`
    set_rng_state(rng[where.rank % len(rng)], run.device)
    result.history, result.train_time_s = state["history"], state["train_time_s"]
    partial = state["partial"]  # None after a whole epoch
    partial = partial[where.rank % len(partial)] if partial is not None and state["step_in_epoch"] else None
    return Start(state["epoch"], state["step_in_epoch"], partial)


def load_scaler(scaler: torch.amp.GradScaler, state: dict) -> None:
    """The checkpoint's gradient-scaler state; a checkpoint of a run without one (bf16 or full precision,
    e.g. written on a GPU with bf16 and resumed on one without) gives an fp16 run a fresh scaler, with a
    note: its first steps re-find the loss scale (a skipped step or two), nothing else changes."""
    if scaler.is_enabled() and not state:
        print(
            "resume: the checkpoint has no gradient-scaler state (it trained without fp16, e.g. in bf16); "
            "this fp16 run starts a fresh GradScaler",
            file=sys.stderr,
            flush=True,
        )
        return
    scaler.load_state_dict(state)


def save(run: Run, result: TrainResult, epoch: int, step_in_epoch: int, sums: EpochSums | None) -> None:
    """Gather every rank's RNG state and partial epoch sums (each rank continues its own stream and counts);
    rank 0 writes them with the model, optimizer, schedule, scaler, history and training time so far."""
    gathered = all_gather_objects((rng_state(run.device), sums.state() if sums is not None else None))
    rngs, partials = [g[0] for g in gathered], [g[1] for g in gathered]
    if run.checkpoint is not None and run.where.is_main:
        _save_checkpoint(
            {
                "model": run.model.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(),
                "rng": rngs,
                "epoch": epoch,
                "step_in_epoch": step_in_epoch,
                "partial": partials if sums is not None else None,
                "history": result.history,
                "train_time_s": result.train_time_s,
                "world_size": run.where.world_size,
            },
            run.checkpoint,
        )


def _save_checkpoint(state: dict, path: Path) -> None:  # a seam: the tests interrupt a run here
    _save_atomic(state, path)


@dataclass
class EpochSums:
    """One rank's running sums over an epoch, on the device: loss x counted, correct, counted (images or
    labelled pixels), each aux loss. A mid-epoch checkpoint holds them, so a resumed epoch reports whole."""

    loss: Tensor
    correct: Tensor
    seen: Tensor
    aux: dict[str, Tensor]

    @classmethod
    def starting(cls, device: str, partial: dict | None = None) -> EpochSums:
        """Zeros, plus `partial`: the sums of the part of this epoch that ran before an interruption."""
        loss, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        sums = cls(loss, correct, torch.zeros((), dtype=torch.long, device=device), {})
        if partial is not None:
            sums.loss += partial["loss_sum"]
            sums.correct += partial["correct"]
            sums.seen += partial["seen"]
            sums.aux = {k: v.to(device) for k, v in partial["aux_sums"].items()}
        return sums

    def add_aux(self, name: str, value: Tensor) -> None:
        self.aux[name] = self.aux.get(name, 0) + value.detach().float()

    def add(self, loss: Tensor, correct: Tensor, counted: Tensor | int) -> None:
        self.loss += loss.detach() * counted  # the loss is a mean over the counted images or pixels
        self.correct += correct
        self.seen += counted

    def state(self) -> dict:
        """The sums as a checkpoint's `partial` holds them (CPU tensors)."""
        return {
            "loss_sum": self.loss.cpu(),
            "correct": self.correct.cpu(),
            "seen": self.seen.cpu(),
            "aux_sums": {k: v.cpu() for k, v in self.aux.items()},
        }

    def summary(self, epoch: int, steps: int, world_size: int) -> dict:
        """The epoch's history entry, summed over ranks: loss and top-1 per counted item, aux losses per step."""
        names = sorted(self.aux)
        device = self.loss.device
        totals = all_reduce_sum(
            torch.stack(
                [
                    self.loss.float(),
                    self.correct.float(),
                    self.seen.float(),
                    *[torch.as_tensor(self.aux[k], device=device).float() for k in names],
                ]
            )
        )
        totals = totals.tolist()
        return {
            "epoch": epoch + 1,
            "train_loss": totals[0] / totals[2],
            "train_top1_pct": 100 * totals[1] / totals[2],
        } | {f"aux_{k}": v / world_size / steps for k, v in zip(names, totals[3:], strict=True)}


class Clock:
    """Training time in laps (writing a checkpoint is not training) and the images of the current lap."""

    def __init__(self):
        self.t0, self.images = time.perf_counter(), 0

    def lap(self) -> float:
        """Seconds since the lap began; a new lap begins."""
        now = time.perf_counter()
        seconds, self.t0, self.images = now - self.t0, now, 0
        return seconds

    def images_per_s(self) -> float:
        return self.images / (time.perf_counter() - self.t0)


class NonFiniteLoss(Exception):
    """The training loss is no longer finite: the run fails, with this as its reason."""


def log_progress(bar: tqdm, sums: EpochSums, clock: Clock, epoch: int, epochs: int, done: int) -> None:
    """The loop's only read-back from the device (every LOG_EVERY steps and at an epoch's end): the mean
    loss and top-1 so far, summed over ranks, for the progress bar; raises NonFiniteLoss."""
    totals = all_reduce_sum(torch.stack([sums.loss.float(), sums.correct.float(), sums.seen.float()]))
    mean_loss = totals[0].item() / totals[2].item()
    if not math.isfinite(mean_loss):
        raise NonFiniteLoss(f"non-finite training loss at epoch {epoch + 1}, step {done}")
    bar.set_postfix(
        epoch=f"{epoch + 1}/{epochs}",
        loss=f"{mean_loss:.3f}",
        acc=f"{100 * totals[1].item() / totals[2].item():.1f}",
        img_s=f"{clock.images_per_s():.0f}",
    )
    bar.update(LOG_EVERY if done % LOG_EVERY == 0 else done % LOG_EVERY)


def _main_output(out: Tensor | dict[str, Tensor]) -> Tensor:
    return out["out"] if isinstance(out, dict) else out  # {"out", "aux"}: a model with an auxiliary head


def train(
    model: nn.Module,
    data,
    cfg: TrainConfig,
    seed: int,
    device: str = "cpu",
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "",
    task: Task = CLASSIFICATION,
) -> TrainResult:
    """Train `model` in place on `data` (any dataset of bench.data); `task` (bench.engine.tasks) gives the
    loss and what a step's accuracy counts. Checkpoints every `cfg.checkpoint_every_steps` steps and after
    every epoch; `resume` continues from the checkpoint, bit for bit. Under torchrun the model is wrapped
    in DistributedDataParallel, each rank takes its share of every global batch, epoch sums are reduced
    over the ranks, and only rank 0 writes."""
    where = world()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    loader = data.train_loader(cfg, seed, device, where.rank, where.world_size)
    run = set_up(model, cfg, task, device, where, checkpoint, steps_per_epoch=len(loader))
    result = TrainResult(status="measured", runtime=run.runtime, numerics=run.numerics)
    start = resume_from(checkpoint if resume else None, run, result)
    bar = tqdm(
        total=cfg.epochs * len(loader),
        initial=start.epoch * len(loader) + start.step,
        desc=desc,
        disable=not progress or not where.is_main,
        leave=False,
        mininterval=1.0,
        dynamic_ncols=True,
    )
    for epoch in range(start.epoch, cfg.epochs):
        first, partial = (start.step, start.partial) if epoch == start.epoch else (0, None)
        try:
            sums = train_one_epoch(run, loader, epoch, first, partial, result, bar)
        except NonFiniteLoss as e:
            bar.close()
            result.status, result.failure_reason = "failed", str(e)
            return result
        result.history.append(sums.summary(epoch, len(loader), where.world_size))
        save(run, result, epoch + 1, 0, None)
    bar.close()
    result.epochs_run = cfg.epochs
    images = cfg.epochs * len(loader) * cfg.batch_size
    result.train_images_per_s = images / result.train_time_s if result.train_time_s else 0.0
    return result


def train_one_epoch(
    run: Run, loader, epoch: int, first: int, partial: dict | None, result: TrainResult, bar: tqdm
) -> EpochSums:
    """One pass over `loader` from batch `first` (resuming mid-epoch; `partial`: this rank's sums of the
    batches before it), with a checkpoint every `checkpoint_every_steps`; returns this rank's sums."""
    cfg, steps = run.cfg, len(loader)
    loader.set_epoch(epoch)
    loader.start_at(first)
    run.net.train()
    sums, clock = EpochSums.starting(run.device, partial), Clock()
    for i, (x, y) in enumerate(loader, start=first):
        step = epoch * steps + i
        if cfg.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with run.autocast():
            out = run.net(x)
            loss = run.loss_fn(out, y)
            for name, value in run.aux_losses(step / (cfg.epochs * steps)).items():
                loss = loss + value.float()
                sums.add_aux(name, value)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        sums.add(loss, *run.scored(_main_output(out).detach(), y))
        clock.images += len(y)
        if (i + 1) % LOG_EVERY == 0 or i + 1 == steps:
            log_progress(bar, sums, clock, epoch, cfg.epochs, done=i + 1)
        if cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0 and i + 1 < steps:
            result.train_time_s += clock.lap()
            save(run, result, epoch, i + 1, sums)
    result.train_time_s += clock.lap()
    return sums


@torch.inference_mode()
def evaluate(
    model: nn.Module, data, batch_size: int = 500, device: str = "cpu", task: Task = CLASSIFICATION
) -> dict[str, float]:
    """The task's metrics on the evaluation split: top-1 / top-5 accuracy (percent) and mean cross-entropy
    for classification; mIoU, pixel accuracy and mean pixel loss for segmentation.

    In a process group each rank evaluates every world_size-th image and the sums are reduced, so every
    rank returns the metrics of the whole evaluation set.
    """
    where = world()
    loader = data.eval_loader(batch_size, device, where.rank, where.world_size)
    return task.metrics(model, loader, data.num_classes, device)
