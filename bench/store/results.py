"""The result store: append-only JSONL files under `results/runs/<suite>.jsonl`.

Appending costs the same whatever the store holds: each batch is appended to the end of the files it
touches (never a rewrite), under an exclusive file lock, after a journal naming every file and its size
before the batch has been written and synced. A writer killed mid-batch leaves the journal; the next
writer or reader rolls every file back to its journalled size, so a batch is seen whole or not at all,
and no reader sees half a line (readers hold a shared lock). The journal is data, never trusted: only
plain file names inside `runs/` are acted on; a journal that cannot be read (cut short while being
written, before any record) or names anything else is set aside as `.batch.broken-*` with a message.
A store file that does not end with a newline (a torn tail without a journal) is read without its
torn tail, and the next writer sets the tail aside as `<suite>.jsonl.torn-*` before appending.

Each appended batch gets the next store version, which is what the leaderboard's version is: `--at V`
shows the store as it was after batch V. A line that does not validate (a record an older version
wrote, or one edited by hand) is named on stderr and skipped, so one bad line never stops every
command; `ResultStore.skipped` lists them. How a record entered is its status, set by the channel
that appended it: `bench run` (measured, failed), `bench submit` (submitted, always), `bench verify`
(verified). Paper-reported numbers live beside the runs, in `results/paper/*.toml`
(`paper_references`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from bench.store.limits import LimitError, check_limits
from bench.store.schema import PaperFile, PaperReference, PublicResultsFile, Record

JOURNAL = ".batch"
STORE_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*\.jsonl$")  # what a journal may name
CHANNELS = {  # how a record enters -> the statuses it may have
    "run": ("measured", "failed"),
    "submit": ("submitted",),
    "verify": ("verified",),
}
TAIL_CHUNK = 1 << 16
_HELD: set[Path] = set()  # runs folders whose lock this process holds (flock is not re-entrant)


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


def _warn(message: str) -> None:
    print(f"bench: warning: {message}", file=sys.stderr)


class ResultStore:
    def __init__(self, root: str | os.PathLike = "results"):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.paper = self.root / "paper"
        self.reference = self.root / "reference"
        self.skipped: list[str] = []  # lines the last read skipped, each named with the reason

    def path(self, suite: str) -> Path:
        return self.runs / f"{suite}.jsonl"

    def files(self) -> list[Path]:
        return sorted(self.runs.glob("*.jsonl"))

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The exclusive lock of a writer; an interrupted batch is rolled back first."""
        self.runs.mkdir(parents=True, exist_ok=True)
        key = self.runs.resolve()
        if key in _HELD:  # a check run under this process's own lock reads the store
            yield
            return
        with open(self.runs / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _HELD.add(key)
            try:
                self._recover()
                yield
            finally:
                _HELD.discard(key)
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def _shared(self) -> Iterator[None]:
        """The shared lock of a reader: no writer is mid-batch while it is held."""
        if not self.runs.is_dir() or self.runs.resolve() in _HELD:
            yield
            return
        if (self.runs / JOURNAL).exists():
            with self.lock():  # a batch was cut short: roll it back first
                pass
        with open(self.runs / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- reading ------------------------------------------------------------------------------

    def lines(self, suite: str | None = None, at: int | None = None) -> list[StoredLine]:
        """Every stored line (of `suite`) with its validated record; with `at`, store versions <= at.

        A line that is not a valid record is named on stderr (and in `skipped`) and left out."""
        with self._shared():
            data = {
                path: path.read_bytes()
                for path in ([self.path(suite)] if suite else self.files())
                if path.is_file()
            }
        self.skipped = []
        out = []
        for path, content in data.items():
            complete, _, torn = content.rpartition(b"\n")
            if torn:
                self._skip(
                    f"{path}: its last {len(torn)} byte(s) are not a whole line (a write cut short or an "
                    "edit); they are left out, and the next append sets them aside"
                )
            previous = 0
            for number, raw in enumerate(complete.split(b"\n") if complete else [], 1):
                if not raw.strip():
                    continue
                try:
                    record = Record.model_validate_json(raw)
                    check_limits(record)
                except (ValidationError, LimitError) as e:
                    self._skip(f"{path}:{number} is not a valid record, skipped: {_first_error(e)}")
                    continue
                version = record.store_version
                if version is None or version < previous:
                    self._skip(
                        f"{path}:{number} has store_version {version} after {previous}: lines are only "
                        "ever appended by the store (restore the file from git); skipped"
                    )
                    continue
                previous = version
                if at is None or version <= at:
                    out.append(StoredLine(path, number, raw, record))
        return out

    def _skip(self, message: str) -> None:
        self.skipped.append(message)
        _warn(message)

    def check(self) -> None:
        """Raise StoreError naming the first skipped line, if the last read skipped any."""
        if self.skipped:
            raise StoreError(self.skipped[0])

    def read(self, suite: str | None = None, at: int | None = None) -> list[Record]:
        """Every record (of `suite`), validated; with `at`, only those of store versions <= at."""
        return [line.record for line in self.lines(suite, at)]

    def version(self) -> int:
        """The newest store version, from the last line of each file (constant time in the store's size)."""
        with self._shared():
            return max((_last_version(path) for path in self.files()), default=0)

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

    def prepare(self, records: list[Record], version: int, channel: str | None = None) -> list[Record]:
        """`records` as they would be stored at `version`: stamped, validated, within the limits, and
        of a status the channel (`run`, `submit`, `verify`; by default the record's own) may enter."""
        out = []
        for record in records:
            allowed = CHANNELS[channel] if channel else tuple(s for v in CHANNELS.values() for s in v)
            if record.status not in allowed:
                raise ValueError(
                    f"a {record.status!r} record cannot enter the store through `bench {channel}` "
                    f"(it enters {', '.join(allowed)} records)"
                )
            stamped = record.model_copy(update={"store_version": version}).with_id()
            stamped = Record.model_validate_json(stamped.model_dump_json())  # validated on write as on read
            check_limits(stamped)
            out.append(stamped)
        return out

    def append(
        self,
        records: list[Record],
        check: Callable[[list[Record]], None] | None = None,
        channel: str | None = None,
    ) -> int:
        """Append `records` as one batch; returns the store version they were given.

        `check(stored_records)` runs under the lock before anything is written (a submission's duplicate
        check and trial rendering); whatever it raises aborts the append with the store untouched. Only
        then (or when `check` is None) is the store read in full: an append costs the same however many
        records the store holds. Non-finite numbers and anything beyond `bench.store.limits` are refused.
        """
        if not records:
            raise ValueError("nothing to append: the batch is empty")
        for record in records:  # before the lock: a refused record never waits for it
            check_limits(record.model_copy(update={"store_version": 1}))
        with self.lock():
            if check is not None:
                check(self.read())
            version = max((_last_version(path) for path in self.files()), default=0) + 1
            by_suite: dict[str, list[Record]] = {}
            for stamped in self.prepare(records, version, channel):
                by_suite.setdefault(stamped.suite, []).append(stamped)
            paths = {suite: self.path(suite) for suite in sorted(by_suite)}
            for path in paths.values():
                self._set_aside_torn_tail(path)
            sizes = {suite: (path.stat().st_size if path.is_file() else 0) for suite, path in paths.items()}
            _write_synced(
                self.runs / JOURNAL,
                json.dumps(
                    {"version": version, "files": [[paths[s].name, sizes[s]] for s in sorted(paths)]}
                ).encode(),
            )
            _sync_dir(self.runs)
            for suite, batch in sorted(by_suite.items()):
                with open(paths[suite], "ab") as f:
                    f.write(b"".join(r.model_dump_json().encode() + b"\n" for r in batch))
                    f.flush()
                    os.fsync(f.fileno())
            (self.runs / JOURNAL).unlink()
            _sync_dir(self.runs)
            return version

    def _set_aside_torn_tail(self, path: Path) -> None:
        """Under the lock: a file whose last line is not whole loses that tail to `<file>.torn-*`."""
        if not path.is_file() or path.stat().st_size == 0:
            return
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            end = f.seek(0, os.SEEK_END)
            start = _last_newline(f, end) + 1
            f.seek(start)
            tail = f.read()
            aside = path.with_name(f"{path.name}.torn-{time.time_ns()}")
            _write_synced(aside, tail)
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())
        _warn(f"{path}: its last {len(tail)} byte(s) were not a whole line; set aside as {aside.name}")

    def _recover(self) -> None:
        """Under the lock: roll back a batch whose journal is still there (or finish the renames of a
        batch an older version journalled); a journal that cannot be trusted is set aside, untouched."""
        journal = self.runs / JOURNAL
        if not journal.exists():
            return
        try:
            plan = _journal_plan(self.runs, journal.read_bytes())
        except ValueError as e:
            aside = journal.with_name(f"{JOURNAL}.broken-{time.time_ns()}")
            os.replace(journal, aside)
            _sync_dir(self.runs)
            _warn(f"{journal}: {e}; set aside as {aside.name}, no store file was touched")
            return
        for kind, a, b in plan:
            if kind == "truncate" and a.is_file() and a.stat().st_size > b:
                with open(a, "rb+") as f:
                    f.truncate(b)
                    os.fsync(f.fileno())
            elif kind == "rename" and a.exists():
                os.replace(a, b)
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

    def public_results(self) -> list[PublicResultsFile]:
        """`results/reference/*.toml`, validated: public benchmarks' results for networks not run here."""
        out = []
        for path in sorted(self.reference.glob("*.toml")):
            try:
                out.append(PublicResultsFile.model_validate(tomllib.loads(path.read_text())))
            except (tomllib.TOMLDecodeError, ValidationError) as e:
                raise StoreError(f"{path} is not a valid public-results file: {e}") from None
        return out

    def paper_references(self, confirmed_only: bool = True) -> list[tuple[str, PaperReference]]:
        """(paper title, reference) pairs; by default only the numbers marked confirmed."""
        return [
            (f.paper, ref)
            for f in self.paper_files().values()
            for ref in f.results
            if ref.status == "confirmed" or not confirmed_only
        ]


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """A generated file (leaderboard page, figure, benchmark result) replaced whole or not at all.

    The temporary file has a name of its own (`tempfile.mkstemp` beside `path`), so any number of
    writers of the same file may run at once: the last rename wins, and none loses its temporary."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """`write_atomic` for text (kept for its callers)."""
    write_atomic(path, text)


def digest_of(lines: list[StoredLine]) -> str:
    """sha256 over the stored bytes of `lines`, in their order."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line.raw + b"\n")
    return h.hexdigest()


def _first_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        error = e.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        return f"{where}: {error['msg']}" if where else error["msg"]
    return str(e)


def _last_newline(f, end: int) -> int:
    """Offset of the last b"\\n" before `end` in the open binary file `f`, or -1."""
    pos = end
    while pos > 0:
        start = max(0, pos - TAIL_CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _last_version(path: Path) -> int:
    """The store version of the last whole line of `path` that is a record, read from its end."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        stop = _last_newline(f, end)  # a torn tail after it is not a line
        while stop > 0:
            start = _last_newline(f, stop) + 1
            f.seek(start)
            raw = f.read(stop - start)
            stop = start - 1
            try:
                version = json.loads(raw).get("store_version")
            except (ValueError, AttributeError):
                continue  # a line that is not a record: skipped by readers, so here too
            if isinstance(version, int) and not isinstance(version, bool):
                return version
    return 0


def _journal_plan(runs: Path, data: bytes) -> list[tuple[str, Path, object]]:
    """What a journal asks for, confined to plain store files in `runs`; ValueError if anything else."""
    try:
        journal = json.loads(data)
    except ValueError:
        raise ValueError("the journal is not whole JSON (a write cut short before the batch)") from None
    plan: list[tuple[str, Path, object]] = []
    if isinstance(journal, dict) and isinstance(journal.get("files"), list):  # this version's
        for entry in journal["files"]:
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and STORE_FILE.match(entry[0])
                and isinstance(entry[1], int)
                and not isinstance(entry[1], bool)
                and entry[1] >= 0
            ):
                raise ValueError(f"the journal names {str(entry)[:80]!r}, not a store file and its size")
            plan.append(("truncate", runs / entry[0], entry[1]))
        return plan
    if isinstance(journal, list):  # an older version's: [[temporary, file], ...] renames
        for entry in journal:
            if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(p, str) for p in entry)):
                raise ValueError(f"the journal names {str(entry)[:80]!r}, not a pair of store files")
            tmp, path = Path(entry[0]), Path(entry[1])
            inside = all(p.parent.resolve() == runs.resolve() for p in (tmp, path))
            if not (inside and STORE_FILE.match(path.name) and tmp.name == path.name + ".tmp"):
                raise ValueError(f"the journal names {str(entry)[:80]!r}, outside the store's files")
            plan.append(("rename", runs / tmp.name, runs / path.name))
        return plan
    raise ValueError("the journal is not one this version writes")


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
