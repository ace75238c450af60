"""What a record may hold, beyond its schema's types: every field's size, charset and range.

`check_limits` runs on every write of the store (whatever the channel: `bench run`, `bench submit`,
`bench verify`) and on every read, so the store never holds what the leaderboard cannot render: no
non-finite number (JSON has none; Python's `json` would write NaN as a bare token and pydantic as
`null`), no integer too large to format, no string too long or with control characters, no nesting too
deep, no gate summary of another shape. Each limit has a name, and the message of a record that
exceeds one names it, with the field.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# --- the limits ---------------------------------------------------------------------------------------

MAX_SUBMISSION_BYTES = 16 * 2**20  # a submitted file
MAX_SUBMISSION_RECORDS = 1000  # records in one submitted file
MAX_COUNT = 10**15  # parameters, MACs, gates: any count of a real network is far below
MAX_INT = 2**53  # any other integer (exact in JSON readers that use doubles)
MAX_FLOAT = 1e15  # any number's magnitude
MAX_SUBMITTER = 64  # characters of a submitter's name
MAX_NAME = 100  # characters of an identifier: suite, model, model family, dataset, plugin
MAX_TEXT = 500  # characters of any other string (environment, counter, data source, a value in a dict)
MAX_REASON = 2000  # characters of a failure_reason
MAX_URL = 500  # characters of code_url
MAX_KEY = 64  # characters of a key in a free-form object (model_args, model_info, train_config, history)
MAX_KEYS = 200  # keys of one free-form object
MAX_DEPTH = 6  # nesting of free-form objects and lists
MAX_ITEMS = 10_000  # items of a list in a free-form object; entries of history
MAX_GATE_VALUES = 200_000  # per-gate pass rates plus per-sample active fractions of a gate summary
MAX_LATENCIES = 16  # latency entries (one per batch size)

LIMITS = {
    name: value
    for name, value in globals().items()
    if name.startswith("MAX_") and isinstance(value, int | float)
}

SUBMITTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]*$")  # no markup characters at all
RESERVED_SUBMITTERS = ("measured", "submitted", "verified", "failed", "ours", "channelbench")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
PLUGIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")  # a dotted module path
URL = re.compile(
    r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/?#@!$&*+,;=%:-]*)?$"
)  # no ( ) < > [ ] ' "
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]*$")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # incl. bidi overrides

COUNTS = {  # integer fields that hold counts of a network (MAX_COUNT), by dotted path
    "metrics.params",
    "metrics.static_macs",
    "metrics.static_macs_fvcore",
    "metrics.gate_network_macs",
}
NAMES = {"suite", "model", "model_family", "dataset", "plugin"}
FREE_FORM = ("model_args", "model_info", "train_config", "history")


class LimitError(ValueError):
    """A record exceeds a limit; `field` is its dotted path, the message names the limit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"field {field}: {message}" if field else message)
        self.field, self.message = field, message


# --- the gate summary (`bench.measure.report.GateStats.summary`) --------------------------------------


class _Fraction(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    mean: float = Field(ge=0, le=1)
    std: float = Field(ge=0, le=1)
    min: float = Field(ge=0, le=1)
    max: float = Field(ge=0, le=1)


class GateSummary(BaseModel):
    """The shape of a record's `gates`: what the leaderboard's gate figures and notes read."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    gates: int = Field(ge=0, le=MAX_COUNT)
    always_on: int = Field(ge=0, le=MAX_COUNT)
    always_off: int = Field(ge=0, le=MAX_COUNT)
    input_dependent: int = Field(ge=0, le=MAX_COUNT)
    active_fraction: _Fraction
    pass_rate: dict[str, list[float]]
    active_fraction_per_sample: list[float]

    @model_validator(mode="after")
    def _consistent(self) -> GateSummary:
        if self.always_on + self.always_off + self.input_dependent != self.gates:
            raise ValueError("always_on + always_off + input_dependent must equal gates")
        values = sum(len(v) for v in self.pass_rate.values()) + len(self.active_fraction_per_sample)
        if values > MAX_GATE_VALUES:
            raise ValueError(f"{values} values exceed MAX_GATE_VALUES ({MAX_GATE_VALUES})")
        for unit, rates in self.pass_rate.items():
            if len(unit) > MAX_KEY or not KEY.match(unit):
                raise ValueError(
                    f"pass_rate unit {unit[:40]!r} is not a module name of at most MAX_KEY ({MAX_KEY}) "
                    "characters (letters, digits, _ . : -)"
                )
            if not all(0 <= r <= 1 for r in rates):
                raise ValueError(f"pass_rate[{unit!r}] holds a rate outside 0..1")
        if not all(0 <= a <= 1 for a in self.active_fraction_per_sample):
            raise ValueError("active_fraction_per_sample holds a fraction outside 0..1")
        return self


# --- the check ----------------------------------------------------------------------------------------


def check_submitter(name: str) -> str:
    """A submitter's name, or LimitError: 1 to MAX_SUBMITTER characters of SUBMITTER, not reserved."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_SUBMITTER:
        raise LimitError(
            "submitter", f"a name of 1 to MAX_SUBMITTER ({MAX_SUBMITTER}) characters, got {len(str(name))}"
        )
    if not SUBMITTER.match(name):
        raise LimitError(
            "submitter",
            "only letters, digits, space and . _ @ + - (starting with a letter or digit) are allowed "
            f"in a name, got {name[:40]!r}",
        )
    if name.strip().lower() in RESERVED_SUBMITTERS:
        raise LimitError(
            "submitter", f"{name!r} is reserved (it names a status or the harness); pick your own name"
        )
    return name


def check_limits(record: Any) -> None:
    """Raise LimitError (field, limit) when `record` (a `Record`) holds anything beyond the limits."""
    body = record.model_dump()
    check_submitter(body["submitter"])
    for name in NAMES:
        value = body.get(name)
        if value is None:
            continue
        pattern = PLUGIN if name == "plugin" else NAME
        if len(value) > MAX_NAME or not pattern.match(value):
            raise LimitError(
                name,
                f"an identifier of at most MAX_NAME ({MAX_NAME}) characters (letters, digits, _ . + -), "
                f"got {value[:40]!r}",
            )
    if body.get("code_url") is not None:
        if len(body["code_url"]) > MAX_URL:
            raise LimitError("code_url", f"longer than MAX_URL ({MAX_URL}) characters")
        if not URL.match(body["code_url"]):
            raise LimitError(
                "code_url",
                "an http(s) address of host, port and path characters only (no spaces, quotes, "
                f"brackets or angle brackets), got {body['code_url'][:60]!r}",
            )
    if body.get("failure_reason") is not None and len(body["failure_reason"]) > MAX_REASON:
        raise LimitError("failure_reason", f"longer than MAX_REASON ({MAX_REASON}) characters")
    metrics = body.get("metrics") or {}
    if len(metrics.get("latency") or []) > MAX_LATENCIES:
        raise LimitError("metrics.latency", f"more than MAX_LATENCIES ({MAX_LATENCIES}) entries")
    if len(body.get("history") or []) > MAX_ITEMS:
        raise LimitError("history", f"more than MAX_ITEMS ({MAX_ITEMS}) entries")
    if body.get("gates") is not None:
        _check_gates(body["gates"])
    for key, value in body.items():
        if key == "gates":
            continue
        _walk(value, key, depth=0, free=key in FREE_FORM)


def _check_gates(gates: Any) -> None:
    try:
        GateSummary.model_validate(gates)
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(p) for p in ("gates", *error["loc"]))
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        raise LimitError(
            where,
            f"{message} (gates is the gate summary of `bench gates`: gates, always_on, always_off, "
            "input_dependent, active_fraction, pass_rate, active_fraction_per_sample)",
        ) from None


def _walk(value: Any, path: str, depth: int, free: bool) -> None:
    if depth > MAX_DEPTH:
        raise LimitError(path, f"nested deeper than MAX_DEPTH ({MAX_DEPTH})")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        limit, name = (MAX_COUNT, "MAX_COUNT") if path in COUNTS else (MAX_INT, "MAX_INT")
        if abs(value) > limit:
            raise LimitError(path, f"the integer exceeds {name} ({limit:.0e}) in magnitude")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LimitError(path, f"{value} is not a finite number; the store holds finite numbers only")
        if abs(value) > MAX_FLOAT:
            raise LimitError(path, f"the number exceeds MAX_FLOAT ({MAX_FLOAT:.0e}) in magnitude")
        return
    if isinstance(value, str):
        limit, name = (MAX_REASON, "MAX_REASON") if path == "failure_reason" else (MAX_TEXT, "MAX_TEXT")
        if path == "code_url":
            limit, name = MAX_URL, "MAX_URL"
        if len(value) > limit:
            raise LimitError(path, f"the text is longer than {name} ({limit}) characters")
        if CONTROL.search(value.replace("\n", "") if path == "failure_reason" else value):
            raise LimitError(path, "the text holds control characters (line breaks, escapes, bidi)")
        return
    if isinstance(value, dict):
        if free and len(value) > MAX_KEYS:
            raise LimitError(path, f"more than MAX_KEYS ({MAX_KEYS}) keys")
        for key, item in value.items():
            if not isinstance(key, str):
                raise LimitError(path, "keys are strings")
            if free and (len(key) > MAX_KEY or not KEY.match(key)):
                raise LimitError(
                    f"{path}.{key[:40]}",
                    f"a key of at most MAX_KEY ({MAX_KEY}) characters (letters, digits, _ . : -)",
                )
            _walk(item, f"{path}.{key}", depth + 1, free)
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_ITEMS:
            raise LimitError(path, f"more than MAX_ITEMS ({MAX_ITEMS}) items")
        for i, item in enumerate(value):
            _walk(item, f"{path}.{i}", depth + 1, free)
        return
    raise LimitError(path, f"a {type(value).__name__} is not a JSON value")
