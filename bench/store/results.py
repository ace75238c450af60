"""The result store: append-only JSONL files under `results/runs/<suite>.jsonl`.

Every append happens under an exclusive file lock and rewrites each file it touches through a
temporary file and an atomic rename, so a killed process leaves either the old file or the new one,
never half a line, and two writers never interleave or lose a record. A batch that touches several
suite files first writes every temporary file and a journal naming them, then renames; a batch cut
short between two renames is finished by the next reader or writer, so a batch is seen whole or not at
all. Each appended batch gets the next store version, which is what the leaderboard's version is:
`--at V` shows the store as it was after batch V. Paper-reported numbers live beside the runs, in
`results/paper/*.toml` (`paper_references`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from bench.store.schema import PaperFile, PaperReference, Record

JOURNAL = ".batch"


class StoreError(ValueError):
    """The store holds a line that is not a valid record; the message names the file and line."""


class UnknownRecordError(ValueError):
    """No record (or more than one) has the id a user asked for."""


@dataclass(frozen=True)
class StoredLine:
    path: Path
    number: int
    raw: bytes
    record: Record


class ResultStore:
    def __init__(self, root: str | os.PathLike = "results"):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.paper = self.root / "paper"

    def path(self, suite: str) -> Path:
        return self.runs / f"{suite}.jsonl"

    def files(self) -> list[Path]:
        return sorted(self.runs.glob("*.jsonl"))

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.runs.mkdir(parents=True, exist_ok=True)
        with open(self.runs / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                self._finish_interrupted_batch()
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- reading ------------------------------------------------------------------------------

    def lines(self, suite: str | None = None, at: int | None = None) -> list[StoredLine]:
        """Every stored line (of `suite`) with its validated record; with `at`, store versions <= at."""
        if (self.runs / JOURNAL).exists():
            with self.lock():  # a batch was cut short between two renames: finish it first
                pass
        out = []
        for path in [self.path(suite)] if suite else self.files():
            if not path.is_file():
                continue
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                raise StoreError(
                    f"{path} does not end with a newline: it was edited by hand; restore it from git"
                )
            previous = 0
            for number, raw in enumerate(data.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    record = Record.model_validate_json(raw)
                except ValidationError as e:
                    raise StoreError(f"{path}:{number} is not a valid record: {e}") from None
                version = record.store_version
                if version is None or version < previous:
                    raise StoreError(
                        f"{path}:{number} has store_version {version} after {previous}: lines are "
                        "only ever appended by the store; restore the file from git"
                    )
                previous = version
                if at is None or version <= at:
                    out.append(StoredLine(path, number, raw, record))
        return out

    def read(self, suite: str | None = None, at: int | None = None) -> list[Record]:
        """Every record (of `suite`), validated; with `at`, only those of store versions <= at."""
        return [line.record for line in self.lines(suite, at)]

    def version(self) -> int:
        return _newest_version(self.read())

    def digest(self, suite: str | None = None, at: int | None = None) -> str:
        """sha256 over the stored bytes of the records (of `suite`, up to version `at`), file by file."""
        return digest_of(self.lines(suite, at))

    def find(self, record_id: str) -> Record:
        """The record whose id is `record_id`, or starts with it (at least 6 characters)."""
        if len(record_id) < 6:
            raise UnknownRecordError(
                f"record id {record_id!r} is too short; give at least 6 of its 16 characters"
            )
        found = [r for r in self.read() if r.record_id.startswith(record_id)]
        if not found:
            raise UnknownRecordError(
                f"no record {record_id!r} in {self.runs}; record ids are printed by `bench submit` and listed "
                "in the leaderboard's Submissions section"
            )
        if len({r.record_id for r in found}) > 1:
            ids = ", ".join(sorted({r.record_id for r in found}))
            raise UnknownRecordError(f"record id {record_id!r} is ambiguous ({ids}); give more characters")
        return found[0]

    # --- writing ------------------------------------------------------------------------------

    def append(self, records: list[Record], check: Callable[[list[Record]], None] | None = None) -> int:
        """Append `records` as one batch; returns the store version they were given.

        `check(stored_records)` runs under the lock before anything is written (a submission's duplicate
        check); whatever it raises aborts the append with the store untouched.
        """
        if not records:
            raise ValueError("nothing to append: the batch is empty")
        with self.lock():
            stored = self.read()
            if check is not None:
                check(stored)
            version = _newest_version(stored) + 1
            by_suite: dict[str, list[Record]] = {}
            for record in records:
                stamped = record.model_copy(update={"store_version": version}).with_id()
                stamped = Record.model_validate(stamped.model_dump())  # validated on write as on read
                by_suite.setdefault(record.suite, []).append(stamped)
            renames = []
            for suite, batch in sorted(by_suite.items()):
                path = self.path(suite)
                old = path.read_bytes() if path.is_file() else b""  # read() above checked its last newline
                new = b"".join(r.model_dump_json().encode() + b"\n" for r in batch)
                tmp = path.with_name(path.name + ".tmp")
                _write_synced(tmp, old + new)
                renames.append((tmp, path))
            if len(renames) > 1:  # several files: a journal makes the batch all-or-nothing
                _write_synced(
                    self.runs / JOURNAL, json.dumps([[str(t), str(p)] for t, p in renames]).encode()
                )
            for tmp, path in renames:
                os.replace(tmp, path)
            (self.runs / JOURNAL).unlink(missing_ok=True)
            _sync_dir(self.runs)
            return version

    def _finish_interrupted_batch(self) -> None:
        """Under the lock: complete the renames of a batch whose journal is still there."""
        journal = self.runs / JOURNAL
        if not journal.exists():
            return
        for tmp, path in json.loads(journal.read_text()):
            if Path(tmp).exists():
                os.replace(tmp, path)
        journal.unlink()
        _sync_dir(self.runs)

    # --- paper-reported numbers ---------------------------------------------------------------

    def paper_files(self) -> dict[str, PaperFile]:
        """`results/paper/<name>.toml` by name, validated; a bad file is a StoreError naming it."""
        out = {}
        for path in sorted(self.paper.glob("*.toml")):
            try:
                out[path.stem] = PaperFile.model_validate(tomllib.loads(path.read_text()))
            except (tomllib.TOMLDecodeError, ValidationError) as e:
                raise StoreError(f"{path} is not a valid paper reference file: {e}") from None
        return out

    def paper_references(self, confirmed_only: bool = True) -> list[tuple[str, PaperReference]]:
        """(paper title, reference) pairs; by default only the numbers marked confirmed."""
        return [
            (f.paper, ref)
            for f in self.paper_files().values()
            for ref in f.results
            if ref.status == "confirmed" or not confirmed_only
        ]


def write_text_atomic(path: Path, text: str) -> None:
    """A generated file (leaderboard page, benchmark result) replaced whole or not at all."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def digest_of(lines: list[StoredLine]) -> str:
    """sha256 over the stored bytes of `lines`, in their order."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.raw + b"\n")
    return h.hexdigest()


def _newest_version(records: list[Record]) -> int:
    return max((r.store_version for r in records), default=0)  # every stored line has one (lines())


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
