"""`bench verify RECORD_ID`: re-run a stored record's configuration and compare its headline metric
(top-1; mIoU for segmentation).

The run is rebuilt from the record alone (its suite, model, model_args, dataset, seed and full
training configuration, checked against the record's `config_hash`) and trained, evaluated and
measured by the same `bench.commands.runner.run_one` that `bench run` uses, on evaluation data whose digest
must equal the record's. When the re-run's metric lies within the tolerance of the record's, the
re-run is appended to the store as a record with status "verified" whose `verification` names the
record it verified (the store stays append-only; the leaderboard shows the badge). Otherwise nothing
is stored and the result says by how much it missed. Nothing from a submitted record is executed:
the model comes from the registry by name (a record of a model outside it names its plugin module and
code URL, which verify tells the verifier to install; it never imports or fetches them itself), and the only checkpoint the training loop reads back is
its own (`torch.load(..., weights_only=True)`), in a fresh working folder.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import registry
from bench.commands.runner import RunSpec, default_submitter, load_datasets, run_one
from bench.engine.config import SuiteError, TrainConfig, _build, config_hash, load_suite
from bench.engine.distributed import broadcast_object, init_from_env, shutdown, world
from bench.store.results import ResultStore
from bench.store.schema import METRIC_LABELS, Record, Verification

DEFAULT_TOLERANCE = 1.0  # percentage points of the headline metric


class VerifyError(ValueError):
    """The record cannot be re-run (wrong status, unknown model, other data); the message says why."""


@dataclass(frozen=True)
class Outcome:
    record: Record  # the record that was checked
    rerun: Record  # the re-run (status "verified" when stored)
    verified: bool
    delta: float  # re-run minus record, percentage points of the headline metric
    tolerance: float
    store_version: int | None  # the version the verified record was stored as

    def summary(self) -> str:
        r, m = self.record, self.rerun.metrics
        head = f"{r.record_id} ({r.model} · {r.dataset} · seed {r.seed})"
        if self.rerun.status == "failed":
            return f"NOT VERIFIED {head}: the re-run failed: {self.rerun.failure_reason}"
        name = METRIC_LABELS[r.metrics.quality_metric]
        values = (
            f"re-run {name} {m.quality:.2f}% vs stated {r.metrics.quality:.2f}% "
            f"(Δ {self.delta:+.2f}, tolerance {self.tolerance:.2f})"
        )
        if self.verified:
            return f"VERIFIED {head}: {values}; stored as {self.rerun.record_id} at store version {self.store_version}"
        return (
            f"NOT VERIFIED {head}: {values}: misses by {abs(self.delta) - self.tolerance:.2f} points beyond "
            "the tolerance; nothing was stored"
        )


def rebuild_spec(record: Record, suite_path: str | None = None) -> RunSpec:
    """The run that produced `record`, from the record alone."""
    try:
        suite = load_suite(suite_path or record.suite)
    except SuiteError as e:
        raise VerifyError(
            f"{e}; a record of a suite file outside the built-in ones needs --suite PATH"
        ) from None
    if suite.name != record.suite:
        raise VerifyError(
            f"--suite {suite_path} is suite {suite.name!r}, the record is of suite {record.suite!r}"
        )
    if suite.version != record.suite_version:
        raise VerifyError(
            f"suite {suite.name!r} is at version {suite.version}, the record was made with version "
            f"{record.suite_version}; check out the code of that version to verify it"
        )
    if config_hash(record.run_config()) != record.config_hash:
        raise VerifyError(
            f"record {record.record_id}: its configuration does not hash to its config_hash; "
            "the record was edited and cannot be verified"
        )
    try:  # fields added to TrainConfig after the record was made take their defaults
        train = _build(TrainConfig, record.train_config, "the record's train_config")
    except SuiteError as e:
        raise VerifyError(str(e)) from None
    spec = RunSpec(suite, record.model, record.dataset, record.seed, train, dict(record.model_args))
    if record.model not in registry.list_models():
        if record.plugin:  # the record says how to build it; the verifier installs it, we never fetch it
            raise VerifyError(
                f"model {record.model!r} is not registered here: record {record.record_id} says it is "
                f"registered by the module {record.plugin!r}, from {record.code_url}; read that code, "
                f"install it (or pass --plugin FILE) and run `bench verify {record.record_id}` again"
            )
        registry.get_entry(record.model)  # unknown model: UnknownModelError names the fix
    return spec


def verify(
    record_id: str,
    store: ResultStore,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    suite_path: str | None = None,
    data_root: str | None = None,
    device: str = "cpu",
    work_dir: str | Path | None = None,
    progress: bool = False,
    submitter: str | None = None,
) -> Outcome:
    """Re-run the record `record_id` (or a unique prefix of it) and store a verified record if it holds."""
    if not tolerance >= 0:
        raise VerifyError(f"--tolerance must be >= 0 percentage points, not {tolerance}")
    _, device = init_from_env(device)  # under torchrun, as `bench run`: one process group, a device per rank
    record = store.find(record_id)
    if record.status not in ("submitted", "measured"):
        raise VerifyError(
            f"record {record.record_id} has status {record.status!r}; only submitted or measured "
            "records can be verified"
        )

    def not_verified_yet(stored: list[Record]) -> None:
        done = [r for r in stored if r.verification and r.verification.record_id == record.record_id]
        if done:
            raise VerifyError(
                f"record {record.record_id} is already verified by {done[0].record_id} "
                f"(store version {done[0].store_version})"
            )

    not_verified_yet(store.read(record.suite))  # before the re-run, and again under the store's lock
    spec = rebuild_spec(record, suite_path)
    data = load_datasets([record.dataset], data_root)[record.dataset]  # downloaded by rank 0 alone
    if data.eval_digest != record.data.eval_digest:
        raise VerifyError(
            f"the {record.dataset} evaluation data here (sha256 {data.eval_digest[:16]}…) is not the "
            f"record's ({record.data.eval_digest[:16]}…); point --data-root at the same dataset files"
        )
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        rerun = run_one(
            spec,
            data,
            device=device,
            work_dir=Path(work_dir or tmp),
            resume=False,
            progress=progress,
            submitter=submitter or default_submitter(),
        )
    rerun = broadcast_object(rerun)  # rank 0 measured it; every rank returns the same outcome
    is_main = world().is_main
    shutdown()  # every rank has finished: leave the process group torchrun set up (as `bench run`)
    if rerun.status == "failed":
        return Outcome(record, rerun, False, float("nan"), tolerance, None)
    delta = rerun.metrics.quality - record.metrics.quality
    if abs(delta) > tolerance:
        return Outcome(record, rerun, False, delta, tolerance, None)
    check = Verification(
        record_id=record.record_id,
        metric=record.metrics.quality_metric,
        submitted=record.metrics.quality,
        measured=rerun.metrics.quality,
        tolerance=tolerance,
    )
    verified = rerun.model_copy(update={"status": "verified", "verification": check})  # validated by append
    if not is_main:  # rank 0 alone writes
        return Outcome(record, verified, True, delta, tolerance, None)
    version = store.append([verified], check=not_verified_yet, channel="verify")
    (stored,) = [r for r in store.read(record.suite, at=version) if r.store_version == version]
    return Outcome(record, stored, True, delta, tolerance, version)
