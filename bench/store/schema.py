"""The result record, written down once and used on every write and every read of the store.

Field names carry their units (`top1_pct`, `median_ms`, `train_time_s`); MACs are multiply-accumulates
of convolution and linear layers per sample (README, "What the numbers mean"). Bump SCHEMA_VERSION on any change and keep
reading the old versions (`READABLE_SCHEMA_VERSIONS`, `upgrade`).

Versions:
- 1: the first version.
- 2: a `verified` record carries `verification` (the record it re-ran, the metric, both values and the
  tolerance); a `submitted` record needs an http(s) `code_url`.
- 3: `training` (how the run actually trained: processes, global and per-process batch, the scaled
  learning rate, precision, memory format, synchronised BatchNorm), required; segmentation records carry
  `miou_pct` and `pixel_acc_pct` in place of `top1_pct` / `top5_pct`.
- 4: `plugin`, the module that registers a model the registry does not hold (a submitted record of such
  a model needs it, with its `code_url`: `bench verify` says to install it from there). Every record is
  also held to `bench.store.limits` (sizes, charsets, finite numbers, the gate summary's shape).
  `training.compile` (optional, written only when set): the torch.compile mode of a run whose config
  asked for `compile = true`.

Older records are read as they are (the store never rewrites a line); `upgrade` turns an older body into
a current one (a submission is always stored at the current version).

`PaperReference` is the schema of the paper-reported numbers under `results/paper/`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from bench.engine.config import TrainConfig  # the lr scaling rule of a version-2 body's train_config

SCHEMA_VERSION = 4
READABLE_SCHEMA_VERSIONS = (1, 2, 3, 4)
STATUSES = ("measured", "submitted", "verified", "failed")
CODE_URL = re.compile(r"^https?://[^\s/]+\S*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class Latency(_Strict):
    batch_size: int = Field(ge=1)
    median_ms: float = Field(gt=0)
    p10_ms: float = Field(gt=0)
    p90_ms: float = Field(gt=0)
    repeats: int = Field(ge=1)
    warmup: int = Field(ge=0)
    device: str
    device_name: str
    num_threads: int = Field(ge=1)
    timer: str
    malloc_tuned: bool

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if not self.p10_ms <= self.median_ms <= self.p90_ms:
            raise ValueError(
                f"latency percentiles out of order: p10 {self.p10_ms} <= median {self.median_ms} "
                f"<= p90 {self.p90_ms} must hold"
            )
        return self


class Spread(_Strict):
    mean: float = Field(ge=0)
    std: float = Field(ge=0)
    min: float = Field(ge=0)
    max: float = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Spread:
        slack = 1e-9 * max(1.0, abs(self.max))  # a mean of equal values can round past them
        if not self.min - slack <= self.mean <= self.max + slack:
            raise ValueError(f"min {self.min} <= mean {self.mean} <= max {self.max} must hold")
        return self


TASK_METRICS = {"classification": ("top1_pct", "top5_pct"), "segmentation": ("miou_pct", "pixel_acc_pct")}
METRIC_LABELS = {
    "top1_pct": "top-1",
    "top5_pct": "top-5",
    "miou_pct": "mIoU",
    "pixel_acc_pct": "pixel accuracy",
}


class Metrics(_Strict):
    # classification: top1_pct and top5_pct; segmentation: miou_pct and pixel_acc_pct
    top1_pct: float | None = Field(default=None, ge=0, le=100)
    top5_pct: float | None = Field(default=None, ge=0, le=100)
    miou_pct: float | None = Field(default=None, ge=0, le=100)
    pixel_acc_pct: float | None = Field(default=None, ge=0, le=100)
    eval_loss: float = Field(ge=0)
    params: int = Field(ge=0)
    static_macs: int = Field(ge=0)
    static_macs_fvcore: int | None = Field(default=None, ge=0)
    macs_counter: str
    executed_macs: Spread | None = None  # gated models: per-sample MACs over the evaluation set
    gate_network_macs: int | None = Field(default=None, ge=0)
    latency: list[Latency] = []
    train_time_s: float = Field(ge=0)
    train_images_per_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Metrics:
        present = {k for pair in TASK_METRICS.values() for k in pair if getattr(self, k) is not None}
        tasks = [pair for pair in TASK_METRICS.values() if present & set(pair)]
        if len(tasks) != 1:
            raise ValueError(
                "metrics need top1_pct and top5_pct (classification) or miou_pct and pixel_acc_pct "
                "(segmentation), not both and not neither"
            )
        missing = [k for k in tasks[0] if k not in present]
        if missing:
            raise ValueError(
                f"{missing[0]} is missing: a record with {present.pop()} also needs {missing[0]}"
            )
        if self.top1_pct is not None and self.top5_pct < self.top1_pct:
            raise ValueError(
                f"top5_pct {self.top5_pct} is below top1_pct {self.top1_pct}; top-5 includes top-1"
            )
        return self

    @property
    def quality_metric(self) -> str:
        """The task's headline metric: `top1_pct` (classification) or `miou_pct` (segmentation)."""
        return "top1_pct" if self.top1_pct is not None else "miou_pct"

    @property
    def quality(self) -> float:
        return getattr(self, self.quality_metric)


class TrainingRun(_Strict):
    """How a run trained, as it ran: what a suite config asks for and what the launch made of it."""

    world_size: int = Field(ge=1)  # processes (torchrun ranks)
    global_batch_size: int = Field(ge=1)  # the config's batch_size, split over the ranks
    batch_size_per_rank: int = Field(ge=1)
    lr: float = Field(ge=0)  # after lr_scaling
    lr_scaling: str  # "none" or "linear" (lr * global batch / base_batch_size)
    amp_dtype: Literal["bfloat16", "float16"] | None  # None: full precision
    grad_scaler: bool  # fp16 only
    channels_last: bool
    sync_bn: bool  # BatchNorm statistics synchronised across ranks (CUDA, more than one rank)
    backend: str | None  # the process group's (nccl, gloo); None: one process, or not known (upgraded v2)
    compile: str | None = None  # torch.compile's mode when the config asked for it; absent: not compiled

    @classmethod
    def one_process(cls, batch_size: int, lr: float) -> TrainingRun:
        """A plain run: one process, full precision, NCHW, the config's own lr."""
        return cls(
            world_size=1,
            global_batch_size=batch_size,
            batch_size_per_rank=batch_size,
            lr=lr,
            lr_scaling="none",
            amp_dtype=None,
            grad_scaler=False,
            channels_last=False,
            sync_bn=False,
            backend=None,
        )

    @model_serializer(mode="wrap")
    def _without_compile_when_off(self, handler) -> dict[str, Any]:
        """A run that did not compile is written as before `compile` existed (older readers take it)."""
        data = handler(self)
        if data.get("compile") is None:
            data.pop("compile", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainingRun:
        if self.global_batch_size != self.batch_size_per_rank * self.world_size:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} != batch_size_per_rank "
                f"{self.batch_size_per_rank} x world_size {self.world_size}"
            )
        if self.grad_scaler != (self.amp_dtype == "float16"):
            raise ValueError("a gradient scaler is used exactly with float16 autocast")
        return self


class DataInfo(_Strict):
    eval_digest: str = Field(min_length=64, max_length=64)
    train_size: int = Field(ge=1)
    eval_size: int = Field(ge=1)
    input_shape: list[int]
    source: str


class Environment(_Strict):
    python: str
    torch: str
    cuda: str | None
    cudnn: int | None
    device: str
    device_name: str
    num_threads: int
    platform: str
    channelbench: str
    commit: str | None
    dirty: bool | None


class Verification(_Strict):
    """What a `verified` record checked: its own re-run against the record `record_id`."""

    record_id: str = Field(min_length=16, max_length=16)
    metric: Literal["top1_pct", "miou_pct"] = "top1_pct"
    submitted: float  # the verified record's value, in the metric's unit
    measured: float  # this re-run's value
    tolerance: float = Field(ge=0)  # absolute, in the metric's unit (percentage points)

    @property
    def delta(self) -> float:
        return self.measured - self.submitted


class Record(_Strict):
    schema_version: Literal[1, 2, 3, 4]
    record_id: str = ""
    store_version: int | None = Field(default=None, ge=1)  # assigned by the store on append
    suite: str = Field(min_length=1)
    suite_version: int = Field(ge=1)
    model: str = Field(min_length=1)
    model_family: str
    model_args: dict[str, Any] = {}
    model_info: dict[str, Any] = {}  # the model's own `bench_info` (layout, widths, unconfirmed defaults)
    train_config: dict[str, Any]
    config_hash: str = Field(min_length=64, max_length=64)
    dataset: str = Field(min_length=1)
    data: DataInfo
    seed: int
    status: Literal["measured", "submitted", "verified", "failed"]
    failure_reason: str | None = None
    metrics: Metrics | None = None
    gates: dict[str, Any] | None = None  # gate statistics summary of gated models
    history: list[dict[str, Any]] = []
    training: TrainingRun | None = None  # version 3: always set
    environment: Environment
    submitter: str = Field(min_length=1)
    created_at: str
    code_url: str | None = None
    verification: Verification | None = None  # version 2: set exactly when status is "verified"
    plugin: str | None = None  # version 4: the module registering `model`, when it is not built in

    @field_validator("created_at")
    @classmethod
    def _iso_time(cls, value: str) -> str:
        try:
            dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"created_at {value!r} is not an ISO 8601 time (e.g. 2026-01-01T00:00:00+00:00)"
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Record:
        if self.status == "failed" and not self.failure_reason:
            raise ValueError("a failed record needs a failure_reason")
        if self.status != "failed" and self.metrics is None:
            raise ValueError(f"a {self.status} record needs metrics")
        if self.schema_version == 1 and self.verification is not None:
            raise ValueError("verification is a version-2 field; set schema_version to 3")
        if self.schema_version < 3 and self.training is not None:
            raise ValueError("training is a version-3 field; set schema_version to 3")
        if self.schema_version < 4 and self.plugin is not None:
            raise ValueError("plugin is a version-4 field; set schema_version to 4")
        if self.schema_version >= 3 and self.training is None:
            raise ValueError("a version-3 record needs training (world_size, batch sizes, lr, precision)")
        if self.schema_version == 1:
            return self
        if (self.status == "verified") != (self.verification is not None):
            raise ValueError("a verified record needs a verification, and only a verified record has one")
        if self.status == "submitted" and not self.code_url:
            raise ValueError("a submitted record needs code_url, a link to the code that produced it")
        if self.code_url is not None and not CODE_URL.match(self.code_url):
            raise ValueError(f"code_url {self.code_url!r} is not an http(s) link")
        return self

    def run_config(self) -> dict[str, Any]:
        """The configuration `config_hash` is the hash of (`bench.commands.runner.RunSpec.config`, as stored)."""
        return {
            "model": self.model,
            "model_args": self.model_args,
            "dataset": self.dataset,
            "train": self.train_config,
        }

    def content_id(self) -> str:
        """Identity of the record's content (everything but its id and store version)."""
        body = self.model_dump(mode="json", exclude={"record_id", "store_version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def with_id(self) -> Record:
        return self.model_copy(update={"record_id": self.content_id()})


def upgrade(body: dict[str, Any]) -> dict[str, Any]:
    """A record body of any readable schema version as a body of the current version."""
    version = body.get("schema_version")
    if version == 1:  # version 2 only adds fields; a version-1 body is a valid version-2 body
        body, version = {**body, "schema_version": 2}, 2
    if version == 2:  # version 3 records how it trained: version 2 kept it in model_info, when not plain
        info = dict(body.get("model_info") or {})
        body = {**body, "schema_version": 3, "model_info": info, "training": _training_of_v2(body, info)}
        version = 3
    if version == 3:  # version 4 only adds `plugin`
        body = {**body, "schema_version": 4}
    return body


def _training_of_v2(body: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Version 2 wrote model_info["training"] only for several processes, AMP or channels_last;
    without it the run was one process in full precision at the config's batch size and lr."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in (body.get("train_config") or {}).items() if k in fields})
    ran = info.pop("training", None) or {}
    batch, scaling, lr = cfg.batch_size, cfg.lr_scaling, cfg.scaled_lr
    world_size = ran.get("world_size", 1)
    return {
        "world_size": world_size,
        "global_batch_size": ran.get("batch_size_per_rank", batch) * world_size,
        "batch_size_per_rank": ran.get("batch_size_per_rank", batch),
        "lr": ran.get("lr", lr),
        "lr_scaling": scaling,
        "amp_dtype": ran.get("amp_dtype"),
        "grad_scaler": ran.get("amp_dtype") == "float16",
        "channels_last": ran.get("channels_last", False),
        "sync_bn": ran.get("sync_bn", False),
        "backend": None,
    }


# --- paper-reported numbers (results/paper/*.toml) ---------------------------------------------------

PAPER_METRICS = {  # how a paper states a number -> our metric
    "top1_pct": "top1_pct",
    "top1_err_pct": "top1_pct",
    "top5_pct": "top5_pct",
    "top5_err_pct": "top5_pct",
    "miou_pct": "miou_pct",
    "miou": "miou_pct",  # a fraction (0.719), as some papers write mIoU
    "top1": "top1_pct",  # a fraction (0.6864), as training logs write accuracy
    "top5": "top5_pct",
}
FRACTION_METRICS = ("miou", "top1", "top5")
# confirmed: a quote from the paper, its code's log or its authors' release (shown);
# secondary: known only from a secondary summary of the paper (shown with a mark, never as confirmed);
# unconfirmed: remembered or unsourced, a to-do list (not shown)
PAPER_STATUSES = ("confirmed", "secondary", "unconfirmed")


class PaperReference(_Strict):
    """One number as a paper (or its authors' release) states it, with where it stands."""

    model: str = Field(min_length=1)  # the registered model it is compared with
    model_args: dict[str, Any] = {}  # arguments the comparison needs (e.g. {"layout": "v1"})
    dataset: str = Field(min_length=1)
    metric: Literal[
        "top1_pct", "top1_err_pct", "top5_pct", "top5_err_pct", "miou_pct", "miou", "top1", "top5"
    ]
    value: float = Field(ge=0, le=100)  # exactly as stated, in `metric`
    table: str = Field(min_length=1)  # where in the source: "Table 6", "abstract", "README, 1-crop table"
    layout: str | None = None  # ImageNet bottleneck layout (v1: stride on the first 1x1, v1.5: on the 3x3)
    protocol: str = ""  # how it was evaluated, where the source says (e.g. "single 224 center crop")
    note: str = ""  # anything a reader needs to compare it (best-of-n, other recipe, inferred layout)
    status: Literal["confirmed", "secondary", "unconfirmed"]
    source: str = Field(
        min_length=1
    )  # address (URL, repo@commit path) of the quote; for secondary, the summary
    quote: str = ""  # the sentence or table row the number is read from (required when confirmed)

    @model_validator(mode="after")
    def _complete(self) -> PaperReference:
        if self.status == "confirmed" and not self.quote.strip():
            raise ValueError("a confirmed number needs the quote it is read from")
        if self.metric in FRACTION_METRICS and self.value > 1:
            raise ValueError(
                f"metric {self.metric!r} is a fraction (0 to 1), not {self.value}; "
                f"use '{self.metric.removesuffix('_pct')}_pct' for percent"
            )
        if self.dataset == "imagenet" and self.layout is None:
            raise ValueError(
                "an ImageNet number needs its layout (v1, v1.5, or basic for ResNet-18/34; the "
                "definition for other networks: torchvision, dcnets)"
            )
        return self

    @property
    def our_metric(self) -> str:
        return PAPER_METRICS[self.metric]

    @property
    def our_value(self) -> float:
        """The number in our unit, percent (papers on CIFAR often state error; some state mIoU as a fraction)."""
        if self.metric in FRACTION_METRICS:
            return 100.0 * self.value
        return 100.0 - self.value if self.metric.endswith("_err_pct") else self.value

    @property
    def shown(self) -> bool:
        """On the leaderboard: confirmed numbers, and secondary ones with their mark."""
        return self.status in ("confirmed", "secondary")

    def stated(self) -> str:
        if self.metric.startswith("miou"):
            return f"mIoU {self.value}{'%' if self.metric == 'miou_pct' else ''}"
        kind = "error" if self.metric.endswith("_err_pct") else "accuracy"
        unit = "" if self.metric in FRACTION_METRICS else "%"
        return f"{self.metric.split('_')[0].replace('top', 'top-')} {kind} {self.value}{unit}"


class PublicResult(_Strict):
    """One result a public benchmark lists for a network that is not ours (a reference row: shown apart
    from our measured rows, never compared with them as if it were ours)."""

    network: str = Field(min_length=1, max_length=200)  # as the source names it
    dataset: str = Field(min_length=1)
    top1_pct: float = Field(ge=0, le=100)  # converted from a fraction where the source gives one
    preprocessing: str = Field(default="", max_length=300)
    reported_by: str = Field(min_length=1, max_length=200)  # who submitted it to the source
    code: str = ""  # the submitter's code, as the source links it
    quote: str = Field(min_length=1, max_length=600)  # the table row the number is read from


class PublicResultsFile(_Strict):
    """`results/reference/<name>.toml`: a public benchmark's table of results, with its source."""

    title: str = Field(min_length=1)
    suites: list[str] = Field(min_length=1)  # the suites whose pages show it (comparable schedules only)
    source: str = Field(min_length=1)  # the address of the table (a README at a commit)
    note: str = ""  # what the source says of its numbers (e.g. "not tested by the maintainers")
    results: list[PublicResult] = Field(alias="result", default=[])


class PaperFile(_Strict):
    """`results/paper/<paper>.toml`: one paper, its numbers."""

    paper: str = Field(min_length=1)  # authors, year, title
    arxiv: str = ""
    url: str = ""
    results: list[PaperReference] = Field(alias="result", default=[])
