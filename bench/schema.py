"""The result record, written down once and used on every write and every read of the store.

Field names carry their units (`top1_pct`, `median_ms`, `train_time_s`); MACs are multiply-accumulates
of convolution and linear layers per sample (DESIGN.md). Bump SCHEMA_VERSION on any change and keep
reading the old versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
STATUSES = ("measured", "submitted", "verified", "failed")


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


class Spread(_Strict):
    mean: float = Field(ge=0)
    std: float = Field(ge=0)
    min: float = Field(ge=0)
    max: float = Field(ge=0)


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


class Record(_Strict):
    schema_version: Literal[1]
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

    @model_validator(mode="after")
    def _consistent(self) -> Record:
        if self.status == "failed" and not self.failure_reason:
            raise ValueError("a failed record needs a failure_reason")
        if self.status != "failed" and self.metrics is None:
            raise ValueError(f"a {self.status} record needs metrics")
        return self

    def content_id(self) -> str:
        """Identity of the record's content (everything but its id and store version)."""
        body = self.model_dump(mode="json", exclude={"record_id", "store_version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def with_id(self) -> Record:
        return self.model_copy(update={"record_id": self.content_id()})
