"""The result store: append-only JSONL files under `results/runs/<suite>.jsonl`.

Every append happens under a file lock and rewrites the file through a temporary file and an atomic
rename, so a killed process leaves either the old file or the new one, never half a line, and two
writers never interleave. Each appended batch gets the next store version, which is what the
leaderboard's version is: `--at V` shows the store as it was after batch V.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from bench.schema import Record


class StoreError(ValueError):
    """The store holds a line that is not a valid record; the message names the file and line."""


class ResultStore:
    def __init__(self, root: str | os.PathLike = "results"):
        self.root = Path(root)
        self.runs = self.root / "runs"

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
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, suite: str | None = None, at: int | None = None) -> list[Record]:
        """Every record (of `suite`), validated; with `at`, only those of store versions <= at."""
        records = []
        for path in [self.path(suite)] if suite else self.files():
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = Record.model_validate_json(line)
                except ValidationError as e:
                    raise StoreError(f"{path}:{number} is not a valid record: {e}") from None
                if at is None or (record.store_version or 0) <= at:
                    records.append(record)
        return records

    def version(self) -> int:
        return max((r.store_version or 0 for r in self.read()), default=0)

    def append(self, records: list[Record]) -> int:
        """Append `records` as one batch; returns the store version they were given."""
        with self.lock():
            version = self.version() + 1
            by_suite: dict[str, list[Record]] = {}
            for record in records:
                stamped = record.model_copy(update={"store_version": version}).with_id()
                Record.model_validate(stamped.model_dump())  # validated on write as on read
                by_suite.setdefault(record.suite, []).append(stamped)
            for suite, batch in by_suite.items():
                path = self.path(suite)
                old = path.read_bytes() if path.is_file() else b""
                if old and not old.endswith(b"\n"):
                    raise StoreError(
                        f"{path} does not end with a newline: it was edited by hand; restore it from git"
                    )
                new = b"".join(r.model_dump_json().encode() + b"\n" for r in batch)
                tmp = path.with_suffix(".jsonl.tmp")
                with open(tmp, "wb") as f:
                    f.write(old + new)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            return version


def records_digest(records: list[Record]) -> str:
    """sha256 over records as stored: the same records give the same digest, at any store version."""
    h = hashlib.sha256()
    for record in records:
        h.update(record.model_dump_json().encode() + b"\n")
    return h.hexdigest()
