"""`bench submit FILE`: accept a file of result records, all or none.

A submission is one JSONL file, one record per line, in the store's schema (`bench.store.schema.Record`;
the records `bench run --out DIR` writes are already in it). Each line is checked on its own (JSON,
schema version, every field's type and range, finite numbers) and against the harness (a built-in
suite at its current version, a dataset of that suite, a complete training configuration whose hash
is the record's `config_hash`) and the store (no record stored twice, no seed of a configuration
submitted twice, no copy of a stored record: same configuration hash, seed and metrics). Every field is
held to `bench.store.limits` (sizes, charsets, finite numbers, bounded integers, the gate summary's
shape), and so is the file (MAX_SUBMISSION_BYTES, MAX_SUBMISSION_RECORDS). A record of a model the
registry does not hold names its plugin module (`plugin`) and its `code_url`. The first problem found
ends the submission with one message naming the line and the field; nothing is written.

Accepted records get status "submitted" whatever their text says (the store enters everything `bench
submit` hands it as a submission: provenance is the channel, not a field), need a `code_url`, and a
submitter name of the `limits.SUBMITTER` charset that is not reserved ("measured", ...). Under the
store's lock they are first rendered: the leaderboard is generated, into a temporary folder, from a
copy of the store holding them (`render`); only if that succeeds are they appended as one batch (one new
store version), after which the real leaderboard is regenerated.

Submitted files are data only: they are parsed as JSON and validated, never executed, imported or
unpickled, and no path or address in them is opened or fetched (docs/threat-model.md).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench import registry
from bench.data import DATASETS
from bench.engine.config import (
    _HASH_OMITS_AT_DEFAULT,
    SuiteError,
    TrainConfig,
    _build,
    config_hash,
    list_suites,
    load_suite,
)
from bench.store.limits import (
    MAX_SUBMISSION_BYTES,
    MAX_SUBMISSION_RECORDS,
    LimitError,
    check_limits,
    check_submitter,
)
from bench.store.results import ResultStore
from bench.store.schema import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, Record, upgrade

MAX_BYTES = MAX_SUBMISSION_BYTES  # the name older callers use
ASSIGNED_BY_STORE = ("record_id", "store_version")


class SubmissionError(ValueError):
    """The file cannot be accepted; the message names the line and field and what is wrong."""


@dataclass(frozen=True)
class Problem:
    line: int
    field: str  # dotted path in the record, "" for the line as a whole
    message: str

    def __str__(self) -> str:
        return f"line {self.line}" + (f", field {self.field}" if self.field else "") + f": {self.message}"


class _Reject(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


# --- one line ------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise _Reject("", f"{name} is not a number: results must be finite (JSON has no NaN or Infinity)")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise _Reject(repeated[0], "the key appears twice in one object")
    return dict(pairs)


def _parse_json(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject("", "not UTF-8 text; a submission is JSONL, one record per line") from None
    try:
        body = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise _Reject("", f"not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise _Reject("", "JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise _Reject("", f"a record is a JSON object, not a {type(body).__name__}")
    return body


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _explain(error: dict) -> _Reject:
    """The first pydantic error, said plainly."""
    loc, kind = error["loc"], error["type"]
    value = error.get("input")
    if kind == "missing":
        return _Reject(_field(loc), "missing (a required field)")
    if kind == "extra_forbidden":
        return _Reject(
            _field(loc), f"unknown field (not in schema version {SCHEMA_VERSION}; check its spelling)"
        )
    if kind.endswith("_type") or kind in ("model_type", "dict_type", "list_type", "literal_error"):
        shown = json.dumps(value)[:60] if _jsonable(value) else repr(value)[:60]
        return _Reject(_field(loc), f"wrong type or value: {error['msg'].lower()}, got {shown}")
    if kind == "finite_number":
        return _Reject(_field(loc), "not a finite number (NaN or infinity)")
    if kind in (
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "too_short",
        "too_long",
        "string_too_short",
        "string_too_long",
    ):
        return _Reject(_field(loc), f"out of range: {error['msg'].lower()}, got {json.dumps(value)[:60]}")
    if kind == "value_error":  # a model validator: the message says which fields disagree
        return _Reject(_field(loc), str(error.get("ctx", {}).get("error", error["msg"])))
    return _Reject(_field(loc), error["msg"])


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _train_config(train: dict[str, Any]) -> TrainConfig:
    # Fields added to TrainConfig later are absent from older records; at their defaults they leave the
    # config hash unchanged, so such a record is complete without them.
    train = {**_HASH_OMITS_AT_DEFAULT, **train}
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    missing = [k for k in known if k not in train]
    if missing:
        raise _Reject(
            "train_config", f"missing key(s) {missing}: a record stores its full training configuration"
        )
    try:
        cfg = _build(TrainConfig, train, "train_config")
        cfg.check("train_config")
    except SuiteError as e:
        raise _Reject("train_config", str(e).removeprefix("train_config: ")) from None
    return cfg


def check_record(body: dict[str, Any], submitter: str | None = None, code_url: str | None = None) -> Record:
    """One parsed line as a submitted record, or `_Reject` naming the field and the problem."""
    version = body.get("schema_version")
    if "schema_version" not in body:
        raise _Reject("schema_version", "missing (a required field)")
    if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
        known = ", ".join(map(str, READABLE_SCHEMA_VERSIONS))
        raise _Reject(
            "schema_version",
            f"version {json.dumps(version)} is not one this bench knows ({known}); "
            f"write version {SCHEMA_VERSION} or upgrade channelbench",
        )
    body = {k: v for k, v in upgrade(body).items() if k not in ASSIGNED_BY_STORE}
    status = body.get("status")
    if status in ("verified", "failed"):
        raise _Reject(
            "status",
            f"{status!r} cannot be submitted: submit 'submitted' (or 'measured') records; "
            "records are verified by `bench verify`",
        )
    if status == "measured":  # what `bench run` wrote elsewhere is, here, a submission
        body["status"] = "submitted"
    if submitter is not None:
        body["submitter"] = submitter
    if isinstance(body.get("submitter"), str):
        try:
            check_submitter(body["submitter"])
        except LimitError as e:
            raise _Reject(e.field, e.message) from None
    if code_url is not None:
        body["code_url"] = code_url
    if body.get("status") == "submitted" and not body.get("code_url"):
        raise _Reject(
            "code_url", "missing: a submission links to its code (pass --code-url URL or set code_url)"
        )
    try:
        record = Record.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as e:
        raise _explain(e.errors()[0]) from None
    try:
        check_limits(record.model_copy(update={"store_version": 1}))
    except LimitError as e:
        raise _Reject(e.field, e.message) from None
    _check_against_harness(record)
    return record


def _check_against_harness(record: Record) -> None:
    if record.suite not in list_suites():
        raise _Reject(
            "suite",
            f"unknown suite {record.suite!r}; submissions go to a built-in suite "
            f"({', '.join(list_suites())})",
        )
    suite = load_suite(record.suite)
    if record.suite_version != suite.version:
        raise _Reject(
            "suite_version",
            f"suite {suite.name!r} is at version {suite.version}, the record says "
            f"{record.suite_version}; re-run it with the current suite",
        )
    if record.model not in registry.list_models() and not record.plugin:
        raise _Reject(
            "plugin",
            f"model {record.model!r} is not registered here: a record of a model outside the registry "
            'names the module that registers it (plugin, e.g. "my_method.models") and, in code_url, '
            "where that code is; `bench verify` tells a verifier to install it from there",
        )
    if record.dataset not in DATASETS:
        raise _Reject("dataset", f"unknown dataset {record.dataset!r}; known datasets: {', '.join(DATASETS)}")
    if record.dataset not in suite.datasets:
        raise _Reject(
            "dataset",
            f"dataset {record.dataset!r} is not in suite {suite.name!r} ({', '.join(suite.datasets)})",
        )
    _train_config(record.train_config)
    expected = config_hash(record.run_config())
    if record.config_hash != expected:
        raise _Reject(
            "config_hash",
            f"does not match the record's model, model_args, dataset and train_config "
            f"(their hash is {expected[:16]}…); do not edit a record's configuration",
        )
    m = record.metrics
    if m.params < 1 or m.static_macs < 1:
        raise _Reject(
            "metrics.params" if m.params < 1 else "metrics.static_macs", "out of range: must be at least 1"
        )
    if m.executed_macs and m.executed_macs.max > m.static_macs * 1.001:
        raise _Reject(
            "metrics.executed_macs.max",
            f"out of range: {m.executed_macs.max:.0f} executed MACs exceed "
            f"the model's static MACs {m.static_macs}",
        )


# --- the file ------------------------------------------------------------------------------------


def run_key(record: Record) -> tuple:
    """What makes two records the same run: suite, model, configuration, dataset and seed."""
    return (record.suite, record.model, record.config_hash, record.dataset, record.seed)


def read_submission(
    path: str | Path, submitter: str | None = None, code_url: str | None = None, all_problems: bool = False
) -> tuple[list[Record], list[int], list[Problem]]:
    """Records of `path` (as they would be stored), their line numbers, and the problems found."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file; pass the JSONL file of records to submit")
    if path.stat().st_size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(
            f"{path}: larger than MAX_SUBMISSION_BYTES ({MAX_SUBMISSION_BYTES} bytes); split it into "
            "several submissions; nothing was stored"
        )
    records, numbers, problems = [], [], []
    first_line: dict[tuple, int] = {}
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        if not raw.strip():
            continue
        if len(records) + len(problems) >= MAX_SUBMISSION_RECORDS:
            raise SubmissionError(
                f"{path}: more than MAX_SUBMISSION_RECORDS ({MAX_SUBMISSION_RECORDS}) records; split it "
                "into several submissions; nothing was stored"
            )
        try:
            record = check_record(_parse_json(raw), submitter, code_url)
            if run_key(record) in first_line:
                raise _Reject(
                    "seed",
                    f"repeats the run of line {first_line[run_key(record)]} (same suite, model, "
                    "configuration, dataset and seed); submit each seed once",
                )
        except _Reject as e:
            problems.append(Problem(number, e.field, e.message))
            if not all_problems:
                break
            continue
        first_line[run_key(record)] = number
        records.append(record)
        numbers.append(number)
    if not records and not problems:
        raise SubmissionError(f"{path}: no records in the file; a submission has one JSON record per line")
    return records, numbers, problems


def same_result(record: Record) -> tuple:
    """What makes two records the same result: configuration hash, seed and metrics."""
    metrics = record.metrics.model_dump_json() if record.metrics else None
    return (record.config_hash, record.seed, metrics)


def duplicates(records: list[Record], numbers: list[int], stored: list[Record]) -> list[Problem]:
    """Records already in the store: a copy of a stored record (same configuration hash, seed and
    metrics, whoever stored it), or a seed of a configuration already submitted."""
    by_content = {same_result(r): r for r in stored if r.metrics is not None}
    by_run = {run_key(r): r for r in stored if r.status == "submitted"}
    problems = []
    for record, number in zip(records, numbers, strict=True):
        same = by_content.get(same_result(record))
        if same is not None:
            problems.append(
                Problem(
                    number,
                    "",
                    f"a duplicate of stored record {same.record_id} ({same.status}, store version "
                    f"{same.store_version}: same config_hash, seed and metrics); it is already on the "
                    "leaderboard",
                )
            )
        elif run_key(record) in by_run:
            other = by_run[run_key(record)]
            problems.append(
                Problem(
                    number,
                    "seed",
                    f"seed {record.seed} of this configuration was already submitted "
                    f"(record {other.record_id}); submit each seed once",
                )
            )
    return problems


def _reject(path: Path, problems: list[Problem]) -> SubmissionError:
    more = (
        f" ({len(problems) - 1} more problem(s): `bench submit --check` lists them all)"
        if len(problems) > 1
        else ""
    )
    return SubmissionError(f"{path} {problems[0]}; nothing was stored{more}")


def check_submission(
    path: str | Path, store: ResultStore, submitter: str | None = None, code_url: str | None = None
) -> tuple[list[Record], list[Problem]]:
    """Every problem of the file (for `--check`), without writing anything."""
    records, numbers, problems = read_submission(path, submitter, code_url, all_problems=True)
    problems += duplicates(records, numbers, store.read())
    return records, sorted(problems, key=lambda p: p.line)


Render = Callable[[ResultStore, list[str]], None]


def trial_render(store: ResultStore, records: list[Record], render: Render) -> None:
    """Render the leaderboard of the store as it would be with `records` added, in a temporary copy of
    the store; SubmissionError, and nothing stored, if rendering fails. Call under the store's lock."""
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        trial = ResultStore(tmp)
        trial.runs.mkdir(parents=True)
        for path in store.files():
            shutil.copyfile(path, trial.runs / path.name)
        for folder in ("paper", "perf"):
            if (store.root / folder).is_dir():
                shutil.copytree(store.root / folder, trial.root / folder)
        trial.append(records, channel="submit")
        try:
            render(trial, sorted({r.suite for r in records}))
        except Exception as e:  # noqa: BLE001 - whatever rendering meets, the store must not hold it
            raise SubmissionError(
                f"the leaderboard cannot be rendered with these records ({type(e).__name__}: {e}); "
                "nothing was stored"
            ) from None


def submit(
    path: str | Path,
    store: ResultStore,
    submitter: str | None = None,
    code_url: str | None = None,
    render: Render | None = None,
) -> tuple[int, list[Record]]:
    """Validate every record of `path` and append them all as one store version, or raise
    SubmissionError and write nothing. `render(trial_store, suites)` renders the leaderboard of a copy
    of the store holding the records, first; if it raises, nothing is stored. Returns the new store
    version and the stored records."""
    path = Path(path)
    records, numbers, problems = read_submission(path, submitter, code_url)
    if problems:
        raise _reject(path, problems)

    def no_duplicates(stored: list[Record]) -> None:  # runs under the store's lock
        found = duplicates(records, numbers, stored)
        if found:
            raise _reject(path, found)
        if render is not None:
            trial_render(store, records, render)

    version = store.append(records, check=no_duplicates, channel="submit")
    stored = [r for r in store.read(at=version) if r.store_version == version]
    return version, stored
