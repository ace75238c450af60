"""Suites as data: a TOML file names datasets, models, seeds, the schedule and measurement settings.

The file is validated as a whole before anything runs, so a typo ends in one message naming the file,
the key and the fix, never in a half-run suite. Field names follow the papers' recipes (lr, momentum,
milestones in epochs, gamma).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).parent.parent / "suites"


class SuiteError(ValueError):
    """A suite that cannot be found or read; the message names the file, the key and the fix."""


class PlanError(ValueError):
    """The requested runs cannot start; the message names the model or dataset and the fix."""


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 1
    batch_size: int = 128  # the global batch: split evenly over the ranks of a distributed run
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_schedule: str = "step"  # step | cosine | linear | constant | poly ((1 - t)^0.9, PSPNet / DeepLab)
    milestones: tuple[float, ...] = ()  # epochs at which a step schedule multiplies the lr by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    crop_padding: int = 0  # random crop after zero-padding by this many pixels; 0 = no crop
    flip: bool = False  # random horizontal flip with probability 0.5
    train_size: int | None = None  # train on a fixed subset of this many images (None = all)
    eval_batch_size: int = 500
    # lr scaling rule: "none" uses lr as given; "linear" uses lr * batch_size / base_batch_size
    # (Goyal et al. 2017, arXiv 1706.02677), so a suite states the lr of its reference batch.
    lr_scaling: str = "none"
    base_batch_size: int = 256
    amp: bool = False  # autocast: bf16 where the device supports it, else fp16 with a gradient scaler
    channels_last: bool = False  # NHWC memory format for model and inputs
    sync_bn: bool = False  # synchronised BatchNorm across ranks (CUDA only; a no-op on one process)
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps (0 = at epoch ends only)
    # streamed datasets (ImageNet, Cityscapes): training crop, evaluation resize (short side; 0 = none)
    # and data-loading worker processes per rank; the in-memory datasets ignore them
    crop_size: int = 224
    eval_resize_size: int = 256
    num_workers: int = 8

    OPTIMIZERS = ("sgd", "adam")
    SCHEDULES = ("step", "cosine", "linear", "constant", "poly")
    LR_SCALING = ("none", "linear")

    @property
    def scaled_lr(self) -> float:
        """The lr the optimizer starts from, after the scaling rule."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / self.base_batch_size
        return self.lr

    def check(self, where: str) -> None:
        if self.optimizer not in self.OPTIMIZERS:
            raise SuiteError(f"{where}: optimizer {self.optimizer!r} is not one of {self.OPTIMIZERS}")
        if self.lr_schedule not in self.SCHEDULES:
            raise SuiteError(f"{where}: lr_schedule {self.lr_schedule!r} is not one of {self.SCHEDULES}")
        if self.lr_scaling not in self.LR_SCALING:
            raise SuiteError(f"{where}: lr_scaling {self.lr_scaling!r} is not one of {self.LR_SCALING}")
        if self.checkpoint_every_steps < 0:
            raise SuiteError(f"{where}: checkpoint_every_steps must be >= 0 (0 = at epoch ends only)")
        for name in ("epochs", "batch_size", "eval_batch_size", "base_batch_size"):
            if getattr(self, name) < 1:
                raise SuiteError(f"{where}: {name} must be at least 1, not {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise SuiteError(f"{where}: lr must be > 0, weight_decay >= 0 and label_smoothing in [0, 1)")


@dataclass(frozen=True)
class MeasureConfig:
    latency_batch_sizes: tuple[int, ...] = (1, 128)
    latency_min_run_time_s: float = 1.0
    latency_warmup: int = 5


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    train: TrainConfig
    measure: MeasureConfig
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-model TrainConfig fields
    path: str = ""

    def train_config(self, model: str, epochs: int | None = None) -> TrainConfig:
        cfg = dataclasses.replace(self.train, **_as_train_fields(self.overrides.get(model, {})))
        return dataclasses.replace(cfg, epochs=epochs) if epochs is not None else cfg


def _as_train_fields(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _build(cls: type, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    try:
        obj = cls(**_as_train_fields(values))
    except TypeError as e:
        raise SuiteError(f"{where}: {e}") from None
    for name, f in known.items():  # TOML has types; check each against the dataclass default's type
        value, default = getattr(obj, name), f.default
        if default is None or value is None or default is dataclasses.MISSING:
            continue
        expected = float if isinstance(default, float) else type(default)
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is int and isinstance(value, bool)):
            raise SuiteError(f"{where}: {name} should be {expected.__name__}, got {value!r}")
    return obj


def parse_suite(text: str, path: str) -> Suite:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path} is not valid TOML: {e}") from None
    required = ("name", "version", "datasets", "models", "seeds")
    missing = [k for k in required if k not in raw]
    if missing:
        raise SuiteError(f"{path}: missing required key(s) {missing}")
    top = {"name", "version", "description", "datasets", "models", "seeds", "train", "measure"}
    unknown = sorted(set(raw) - top - {"model_args", "overrides"})
    if unknown:
        raise SuiteError(
            f"{path}: unknown key(s) {unknown}; known keys: {sorted(top | {'model_args', 'overrides'})}"
        )
    for key in ("datasets", "models", "seeds"):
        if not isinstance(raw[key], list) or not raw[key]:
            raise SuiteError(f"{path}: {key} must be a non-empty list")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in raw["seeds"]):
        raise SuiteError(f"{path}: seeds must be integers, got {raw['seeds']}")
    train = _build(TrainConfig, raw.get("train", {}), f"{path} [train]")
    train.check(f"{path} [train]")
    overrides = raw.get("overrides", {})
    for model, values in overrides.items():
        where = f"{path} [overrides.{model}]"
        _build(TrainConfig, {**dataclasses.asdict(train), **values}, where).check(where)
    return Suite(
        name=str(raw["name"]),
        version=int(raw["version"]),
        description=str(raw.get("description", "")),
        datasets=tuple(raw["datasets"]),
        models=tuple(raw["models"]),
        seeds=tuple(raw["seeds"]),
        train=train,
        measure=_build(MeasureConfig, raw.get("measure", {}), f"{path} [measure]"),
        model_args=raw.get("model_args", {}),
        overrides=overrides,
        path=path,
    )


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name (`quick`), or a suite file by path (`my_suite.toml`)."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(
                f"unknown suite {name_or_path!r}; built-in suites: {', '.join(list_suites())} "
                "(or pass the path of a .toml suite file)"
            )
    elif not path.is_file():
        raise SuiteError(f"suite file {path} does not exist")
    return parse_suite(path.read_text(), str(path))


# TrainConfig fields added after records were first stored (issue #7): left out of the hash while at their
# defaults, so the hash of every earlier configuration stays what it was.
_HASH_OMITS_AT_DEFAULT = {
    "lr_scaling": "none",
    "base_batch_size": 256,
    "amp": False,
    "channels_last": False,
    "sync_bn": False,
    "checkpoint_every_steps": 0,
    "crop_size": 224,
    "eval_resize_size": 256,
    "num_workers": 8,
}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a run's configuration (everything but the seed)."""
    if isinstance(config.get("train"), dict):
        train = {k: v for k, v in config["train"].items() if _HASH_OMITS_AT_DEFAULT.get(k, object()) != v}
        config = {**config, "train": train}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
