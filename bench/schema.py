"""The result record, written down once and used on every write and every read of the store.

Field names carry their units (`top1_pct`, `median_ms`, `train_time_s`); MACs are multiply-accumulates
of convolution and linear layers per sample (DESIGN.md). Bump SCHEMA_VERSION on any change and keep
reading the old versions (`READABLE_SCHEMA_VERSIONS`, `upgrade`).

Versions:
- 1: the first version.
- 2: a `verified` record carries `verification` (the record it re-ran, the metric, both values and the
  tolerance); a `submitted` record needs an http(s) `code_url`. Version-1 records are read as they are
  (they have no `verification`) and `upgrade` turns a version-1 body into a version-2 one.

`PaperReference` is the schema of the paper-reported numbers under `results/paper/`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
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
            raise ValueError(f"latency percentiles out of order: p10 {self.p10_ms} <= median {self.median_ms} "
                             f"<= p90 {self.p90_ms} must hold")  # fmt: skip
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


class Metrics(_Strict):
    top1_pct: float = Field(ge=0, le=100)
    top5_pct: float = Field(ge=0, le=100)
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
        if self.top5_pct < self.top1_pct:
            raise ValueError(
                f"top5_pct {self.top5_pct} is below top1_pct {self.top1_pct}; top-5 includes top-1"
            )
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
    metric: Literal["top1_pct"] = "top1_pct"
    submitted: float  # the verified record's value, in the metric's unit
    measured: float  # this re-run's value
    tolerance: float = Field(ge=0)  # absolute, in the metric's unit (percentage points)

    @property
    def delta(self) -> float:
        return self.measured - self.submitted


class Record(_Strict):
    schema_version: Literal[1, 2]
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
    environment: Environment
    submitter: str = Field(min_length=1)
    created_at: str
    code_url: str | None = None
    verification: Verification | None = None  # version 2: set exactly when status is "verified"

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
        if self.schema_version == 1:
            if self.verification is not None:
                raise ValueError("verification is a version-2 field; set schema_version to 2")
            return self
        if (self.status == "verified") != (self.verification is not None):
            raise ValueError("a verified record needs a verification, and only a verified record has one")
        if self.status == "submitted" and not self.code_url:
            raise ValueError("a submitted record needs code_url, a link to the code that produced it")
        if self.code_url is not None and not CODE_URL.match(self.code_url):
            raise ValueError(f"code_url {self.code_url!r} is not an http(s) link")
        return self

    def run_config(self) -> dict[str, Any]:
        """The configuration `config_hash` is the hash of (`bench.runner.RunSpec.config`, as stored)."""
        return {"model": self.model, "model_args": self.model_args, "dataset": self.dataset,
                "train": self.train_config}  # fmt: skip

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
        body = {**body, "schema_version": 2}
    return body


# --- paper-reported numbers (results/paper/*.toml) ---------------------------------------------------

PAPER_METRICS = {  # how a paper states a number -> (our metric, converter to it)
    "top1_pct": "top1_pct",
    "top1_err_pct": "top1_pct",
    "top5_pct": "top5_pct",
    "top5_err_pct": "top5_pct",
}


class PaperReference(_Strict):
    """One number as a paper (or its authors' release) states it, with where it stands."""

    model: str = Field(min_length=1)  # the registered model it is compared with
    model_args: dict[str, Any] = {}  # arguments the comparison needs (e.g. {"layout": "v1"})
    dataset: str = Field(min_length=1)
    metric: Literal["top1_pct", "top1_err_pct", "top5_pct", "top5_err_pct"]
    value: float = Field(ge=0, le=100)  # exactly as stated, in `metric`
    table: str = Field(min_length=1)  # where in the source: "Table 6", "abstract", "README, 1-crop table"
    layout: str | None = None  # ImageNet bottleneck layout (v1: stride on the first 1x1, v1.5: on the 3x3)
    protocol: str = ""  # how it was evaluated, where the source says (e.g. "single 224 center crop")
    note: str = ""  # anything a reader needs to compare it (best-of-n, other recipe, inferred layout)
    status: Literal["confirmed", "unconfirmed"]
    source: str = Field(min_length=1)  # address (URL, repo@commit path) of the quote
    quote: str = ""  # the sentence or table row the number is read from (required when confirmed)

    @model_validator(mode="after")
    def _complete(self) -> PaperReference:
        if self.status == "confirmed" and not self.quote.strip():
            raise ValueError("a confirmed number needs the quote it is read from")
        if self.dataset == "imagenet" and self.layout is None:
            raise ValueError("an ImageNet number needs its layout (v1, v1.5, or basic for ResNet-18/34)")
        return self

    @property
    def our_metric(self) -> str:
        return PAPER_METRICS[self.metric]

    @property
    def our_value(self) -> float:
        """The number in our unit: accuracy in percent (papers on CIFAR often state error)."""
        return 100.0 - self.value if self.metric.endswith("_err_pct") else self.value

    def stated(self) -> str:
        kind = "error" if self.metric.endswith("_err_pct") else "accuracy"
        return f"{self.metric.split('_')[0].replace('top', 'top-')} {kind} {self.value}%"


class PaperFile(_Strict):
    """`results/paper/<paper>.toml`: one paper, its numbers."""

    paper: str = Field(min_length=1)  # authors, year, title
    arxiv: str = ""
    url: str = ""
    results: list[PaperReference] = Field(alias="result", default=[])
