"""The leaderboard is a pure function of the store: committed files match it, old versions rebuild."""

import re
from pathlib import Path

from bench.leaderboard import NOT_RUN, write_leaderboard
from bench.results import ResultStore
from tests.test_results import make_record

REPO = Path(__file__).resolve().parent.parent


def test_committed_leaderboard_is_generated_from_the_committed_store(tmp_path):
    store = ResultStore(REPO / "results")
    written = write_leaderboard(store, tmp_path)
    committed = REPO / "leaderboard"
    for path in (p for p in written if p.suffix == ".md"):
        assert (committed / path.name).read_text() == path.read_text(), (
            f"leaderboard/{path.name} differs from what the store generates: run `bench leaderboard`"
        )


def test_at_an_old_version_reproduces_that_versions_files(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, top1=60.0)])
    first = {p.name: p.read_text() for p in write_leaderboard(store, tmp_path / "v1")}
    store.append([make_record(1, top1=70.0)])
    write_leaderboard(store, tmp_path / "v2")
    again = {p.name: p.read_text() for p in write_leaderboard(store, tmp_path / "at1", at=1)}
    assert again == first and (tmp_path / "v2" / "tiny.md").read_text() != first["tiny.md"]


def test_rows_show_mean_std_over_seeds(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, top1=60.0), make_record(1, top1=70.0)])
    (path, _) = write_leaderboard(store, tmp_path / "lb", suite="tiny")
    row = next(line for line in path.read_text().splitlines() if line.startswith("| resnet20"))
    assert "65.00 ± 7.07" in row and re.search(r"\|\s+2\s+\|", row)


def test_declared_but_unrun_models_say_so(tmp_path):
    store = ResultStore(tmp_path / "results")
    store.append([make_record(0, suite="quick")])
    (path, _) = write_leaderboard(store, tmp_path / "lb", suite="quick")
    from bench.config import load_suite

    unrun = [m for m in load_suite("quick").models if m != "resnet20"]
    text = path.read_text()
    assert all(f"| {m} " in text for m in unrun) and (NOT_RUN in text or not unrun)
