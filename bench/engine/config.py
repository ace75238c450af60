"""Suites as data: a TOML file names datasets, models, seeds, the schedule and measurement settings.

The file is validated as a whole before anything runs, so a typo ends in one message naming the file,
the key and the fix, never in a half-run suite. Field names follow the papers' recipes (lr, momentum,
milestones in epochs, gamma).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
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
    compile: bool = False  # torch.compile the model for training (mode: bench.engine.train.COMPILE_MODE)
    # true: reproducible on GPUs (cuDNN deterministic, deterministic algorithms where torch has them,
    # CUBLAS_WORKSPACE_CONFIG, TF32 off); false: fast (cudnn.benchmark, TF32 as torch defaults it).
    # The CPU computes the same numbers either way.
    deterministic: bool = True

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
        """Every field in range, or a SuiteError naming `where` and the key (nothing has run yet)."""
        if self.optimizer not in self.OPTIMIZERS:
            raise SuiteError(f"{where}: optimizer {self.optimizer!r} is not one of {self.OPTIMIZERS}")
        if self.lr_schedule not in self.SCHEDULES:
            raise SuiteError(f"{where}: lr_schedule {self.lr_schedule!r} is not one of {self.SCHEDULES}")
        if self.lr_scaling not in self.LR_SCALING:
            raise SuiteError(f"{where}: lr_scaling {self.lr_scaling!r} is not one of {self.LR_SCALING}")
        for name in ("epochs", "batch_size", "eval_batch_size", "base_batch_size", "crop_size"):
            _at_least(where, name, getattr(self, name), 1)
        for name in ("checkpoint_every_steps", "crop_padding", "eval_resize_size", "num_workers"):
            _at_least(where, name, getattr(self, name), 0)
        if self.train_size is not None:
            if not _is_int(self.train_size):
                raise SuiteError(f"{where}: train_size should be int, got {self.train_size!r}")
            _at_least(where, "train_size", self.train_size, 1)
        _in_range(where, "lr", self.lr, 0, None, low_open=True)
        _in_range(where, "momentum", self.momentum, 0, 1, high_open=True)
        _in_range(where, "weight_decay", self.weight_decay, 0, None)
        _in_range(where, "gamma", self.gamma, 0, None, low_open=True)
        _in_range(where, "warmup_epochs", self.warmup_epochs, 0, None)
        _in_range(where, "label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        for m in self.milestones:
            if isinstance(m, bool) or not isinstance(m, int | float):
                raise SuiteError(f"{where}: milestones should be numbers of epochs, got {m!r}")
            _in_range(where, "milestones", m, 0, None, low_open=True)
        if list(self.milestones) != sorted(set(self.milestones)):
            raise SuiteError(f"{where}: milestones must be increasing, got {list(self.milestones)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(where: str, name: str, value: int, low: int) -> None:
    if value < low:
        raise SuiteError(f"{where}: {name} must be at least {low}, not {value}")


def _in_range(
    where: str,
    name: str,
    value: float,
    low: float,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """`value` is finite and in [low, high] (an open end where asked; high None: unbounded)."""
    ok = math.isfinite(value) and (value > low if low_open else value >= low)
    if high is not None:
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high}"
        interval += ")" if high is None or high_open else "]"
        raise SuiteError(f"{where}: {name} must be a finite number in {interval}, not {value!r}")


@dataclass(frozen=True)
class MeasureConfig:
    latency_batch_sizes: tuple[int, ...] = (1, 128)
    latency_min_run_time_s: float = 1.0
    latency_warmup: int = 5

    def check(self, where: str) -> None:
        sizes = self.latency_batch_sizes
        if not sizes or not all(_is_int(b) and b >= 1 for b in sizes):
            raise SuiteError(f"{where}: latency_batch_sizes must be integers >= 1, got {list(sizes)}")
        if len(set(sizes)) != len(sizes):
            raise SuiteError(f"{where}: latency_batch_sizes has duplicates: {list(sizes)}")
        _in_range(where, "latency_min_run_time_s", self.latency_min_run_time_s, 0, None, low_open=True)
        _at_least(where, "latency_warmup", self.latency_warmup, 0)


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
    # the suite this one is a control for: its page compares their shared models seed by seed
    control_of: str = ""
    path: str = ""

    def train_config(self, model: str, epochs: int | None = None) -> TrainConfig:
        """The model's TrainConfig (its overrides applied); `epochs`: the command line's, checked here."""
        cfg = dataclasses.replace(self.train, **_as_train_fields(self.overrides.get(model, {})))
        if epochs is None:
            return cfg
        if not _is_int(epochs) or epochs < 1:
            raise SuiteError(f"--epochs must be an integer of at least 1, not {epochs!r}")
        return dataclasses.replace(cfg, epochs=epochs)


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
        if not ok or (expected in (int, float) and isinstance(value, bool)):
            raise SuiteError(f"{where}: {name} should be {expected.__name__}, got {value!r}")
    return obj


# a suite's name names its store file, leaderboard page and checkpoint folder: no separators, no dots
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SEED_RANGE = 2**32  # numpy's seed range (seed_everything seeds python, numpy and torch with it)


def _table(values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise SuiteError(f"{where} must be a table of key = value, got {values!r}")


def _check_top(raw: dict[str, Any], path: str) -> None:
    """The top-level keys: a plain name, a positive version, non-empty lists without duplicates."""
    name = raw["name"]
    if not isinstance(name, str) or not SUITE_NAME.fullmatch(name):
        raise SuiteError(
            f"{path}: name must be a plain identifier (letters, digits, '_' and '-', at most 64, "
            f"starting with a letter or digit), not {name!r}"
        )
    version = raw["version"]
    if not _is_int(version) or version < 1:
        raise SuiteError(f"{path}: version must be a positive integer, not {version!r}")
    if not isinstance(raw.get("description", ""), str):
        raise SuiteError(f"{path}: description must be a string")
    for key in ("datasets", "models", "seeds"):
        values = raw[key]
        if not isinstance(values, list) or not values:
            raise SuiteError(f"{path}: {key} must be a non-empty list")
        if key != "seeds" and not all(isinstance(v, str) and v for v in values):
            raise SuiteError(f"{path}: {key} must be names (strings), got {values}")
        duplicates = sorted({v for v in values if values.count(v) > 1}, key=str)
        if duplicates:
            raise SuiteError(f"{path}: {key} must not repeat; duplicated: {duplicates}")
    if not all(_is_int(s) and 0 <= s < SEED_RANGE for s in raw["seeds"]):
        raise SuiteError(f"{path}: seeds must be integers in [0, 2**32), got {raw['seeds']}")
    control_of = raw.get("control_of", "")
    if "control_of" in raw and (
        not isinstance(control_of, str) or not SUITE_NAME.fullmatch(control_of) or control_of == name
    ):
        raise SuiteError(
            f"{path}: control_of must name another suite (a plain identifier), not {control_of!r}"
        )
    for key in ("train", "measure", "model_args", "overrides"):
        _table(raw.get(key, {}), f"{path} [{key}]")


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
    optional = {"model_args", "overrides", "control_of"}
    unknown = sorted(set(raw) - top - optional)
    if unknown:
        raise SuiteError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(top | optional)}")
    _check_top(raw, path)
    train = _build(TrainConfig, raw.get("train", {}), f"{path} [train]")
    train.check(f"{path} [train]")
    overrides = raw.get("overrides", {})
    for model, values in overrides.items():
        where = f"{path} [overrides.{model}]"
        _table(values, where)
        _build(TrainConfig, {**dataclasses.asdict(train), **values}, where).check(where)
    for model, values in raw.get("model_args", {}).items():
        _table(values, f"{path} [model_args.{model}]")
    measure = _build(MeasureConfig, raw.get("measure", {}), f"{path} [measure]")
    measure.check(f"{path} [measure]")
    return Suite(
        name=raw["name"],
        version=raw["version"],
        description=raw.get("description", ""),
        datasets=tuple(raw["datasets"]),
        models=tuple(raw["models"]),
        seeds=tuple(raw["seeds"]),
        train=train,
        measure=measure,
        model_args=raw.get("model_args", {}),
        overrides=overrides,
        control_of=raw.get("control_of", ""),
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
    "compile": False,
    "deterministic": True,
}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a run's configuration (everything but the seed)."""
    if isinstance(config.get("train"), dict):
        train = {k: v for k, v in config["train"].items() if _HASH_OMITS_AT_DEFAULT.get(k, object()) != v}
        config = {**config, "train": train}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
