"""Records of cluster jobs: one file per run in an incoming folder, collected into the store by one writer.

The store's `fcntl` lock is unreliable on the NFS-style file systems cluster jobs share, so a job never
appends to the store. It writes its finished record as a file of its own,
`results/runs/incoming/<suite>/<run name>.json`, atomically (a temporary file, then `os.replace`): a
reader sees the whole record or none. `collect` (run by `bench collect`, by the launcher when its jobs
end, and by `bench leaderboard`) moves the files it takes into `incoming/<suite>/claimed/` (a rename: a
job that writes the same run again meanwhile writes a new file, never lost), validates each record as
the store validates a `bench run` record, and appends them all in the order of their suite and file
name, under the store's lock, as one store version; then the claimed files go. A record the store
already holds (a collector stopped after appending, before deleting) is not appended again, so
collecting twice adds nothing twice. A file that is not a valid record is set aside in
`results/runs/rejected/<suite>/` with its reason beside it (`<name>.reason.txt`), and named; it never
blocks the others.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bench.store.limits import LimitError, check_limits
from bench.store.results import ResultStore, write_atomic
from bench.store.schema import Record

INCOMING, CLAIMED, REJECTED = "incoming", "claimed", "rejected"
DONE_STATUSES = ("measured", "verified")  # a run whose cell needs no more work; "failed" does


def run_name(model: str, dataset: str, seed: int, config_hash: str) -> str:
    """The name of one run (one cell of a suite's matrix): its checkpoint folder and its incoming file."""
    return f"{model}-{dataset}-s{seed}-{config_hash[:8]}"


def record_run_name(record: Record) -> str:
    return run_name(record.model, record.dataset, record.seed, record.config_hash)


def incoming_dir(store: ResultStore, suite: str) -> Path:
    return store.runs / INCOMING / suite


def rejected_dir(store: ResultStore, suite: str) -> Path:
    return store.runs / REJECTED / suite


def write_incoming(store: ResultStore, record: Record) -> Path:
    """A job's finished record, as a file of its own (replacing an earlier record of the same run)."""
    folder = incoming_dir(store, record.suite)
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder / f"{record_run_name(record)}.json", record.model_dump_json())


def _pending_files(store: ResultStore, suite: str | None = None) -> list[Path]:
    """Incoming files (and files a stopped collector claimed), by suite and name; no temporary files."""
    suites = [suite] if suite else sorted(p.name for p in (store.runs / INCOMING).glob("*") if p.is_dir())
    files = []
    for name in suites:
        folder = incoming_dir(store, name)
        files += sorted(p for p in folder.glob("*.json") if p.is_file())
        files += sorted(p for p in (folder / CLAIMED).glob("*.json") if p.is_file())
    return files


def parse_incoming(path: Path, store: ResultStore, suite: str) -> Record:
    """The record in `path`, validated as the store validates a `bench run` record; ValueError says why not."""
    try:
        record = Record.model_validate_json(path.read_bytes())
        check_limits(record)
    except (ValidationError, LimitError) as e:
        raise ValueError(f"not a valid record: {_why(e)}") from None
    if record.suite != suite:
        raise ValueError(f"a record of suite {record.suite!r} in the incoming folder of suite {suite!r}")
    store.prepare([record], version=1, channel="run")  # the status a job may enter, and the stamped limits
    return record


def _why(error: ValidationError | LimitError) -> str:
    if isinstance(error, LimitError):
        return str(error)
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def read_incoming(store: ResultStore, suite: str) -> tuple[list[Record], list[Path]]:
    """The valid records waiting in `suite`'s incoming folder, and the files that are not valid records."""
    records, malformed = [], []
    for path in _pending_files(store, suite):
        try:
            records.append(parse_incoming(path, store, suite))
        except ValueError:
            malformed.append(path)
    return records, malformed


@dataclass
class Collected:
    version: int | None = None  # the store version of the collected batch; None when nothing was appended
    records: list[Record] = field(default_factory=list)
    already_stored: list[Path] = field(default_factory=list)
    set_aside: list[tuple[Path, str]] = field(default_factory=list)  # (where it now is, why)


def collect(store: ResultStore, suite: str | None = None) -> Collected:
    """Append every valid incoming record (of `suite`, else of every suite) as one store version."""
    out = Collected()
    if not _pending_files(store, suite):  # nothing waits: no lock, nothing written
        return out
    with store.lock():
        claimed = []
        for path in _pending_files(store, suite):  # under the lock: no other collector takes them
            if path.parent.name != CLAIMED:
                # a name of its own: a file a stopped collector claimed for the same run stays beside it
                target = path.parent / CLAIMED / f"{path.stem}.{time.time_ns()}.json"
                target.parent.mkdir(exist_ok=True)
                os.replace(path, target)
                path = target
            claimed.append(path)
        stored_ids = {r.record_id for r in store.read()}
        batch: list[tuple[Path, Record]] = []
        for path in sorted(claimed, key=lambda p: (p.parent.parent.name, p.name)):
            suite_name = path.parent.parent.name
            try:
                record = parse_incoming(path, store, suite_name)
            except ValueError as e:
                out.set_aside.append((_set_aside(store, suite_name, path, str(e)), str(e)))
                continue
            if record.with_id().record_id in stored_ids or any(r == record for _, r in batch):
                out.already_stored.append(path)
            else:
                batch.append((path, record))
        if batch:
            out.records = [r for _, r in batch]
            out.version = store.append(out.records, channel="run")
            out.records = [line.record for line in store.lines() if line.record.store_version == out.version]
        for path in [p for p, _ in batch] + out.already_stored:
            path.unlink(missing_ok=True)
    return out


def _set_aside(store: ResultStore, suite: str, path: Path, reason: str) -> Path:
    folder = rejected_dir(store, suite)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists():  # an earlier malformed file of the same run keeps its place
        target = folder / f"{path.stem}.{time.time_ns()}{path.suffix}"
    os.replace(path, target)
    write_atomic(target.with_name(target.name + ".reason.txt"), reason + "\n")
    return target
