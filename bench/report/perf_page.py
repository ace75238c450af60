"""The perf page: the benchmarks of `bench perf` (`bench.commands.perf`), read from the JSON files it
writes under `results/perf/`, as markdown sections. `bench leaderboard` writes them to
`leaderboard/perf.md`; this module only reads and renders, it runs nothing.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.report.tables import device_label, markdown_table


def load_results(results_dir: str | Path) -> list[dict]:
    """The benchmark results in `results_dir/perf/` (or in `results_dir` itself), in file-name order;
    unreadable files are skipped."""
    root = Path(results_dir)
    folder = root / "perf" if (root / "perf").is_dir() else root
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return found


def _when(r: dict) -> str:
    load = r.get("load_average") or ["?"]
    return f"{r.get('date', '?')[:16]} · load {load[0]}"


def _device(r: dict) -> str:
    env = r.get("environment") or {}  # results written before they carried their environment: "?"
    return device_label(env.get("device", "cpu"), env.get("device_name", "?"))


def _precision(train_config: dict) -> str:
    """The train config's numerics switches: AMP, memory format, and the fast (not deterministic) mode."""
    facts = ["AMP" if train_config.get("amp") else "fp32"]
    facts += ["channels_last"] if train_config.get("channels_last") else []
    facts += [] if train_config.get("deterministic", True) else ["fast mode"]
    return ", ".join(facts)


TRAIN_FORMATS = {"harness img/s": "{:.0f}", "bare img/s": "{:.0f}", "harness / bare": "{:.3f}"}


def _train_rows(results: list[dict]) -> list[dict]:
    return [
        {
            "model": r["model"],
            "device": _device(r),
            "precision": _precision(r["train_config"]),
            "batch": r["train_config"]["batch_size"],
            "steps": r["steps"],
            "threads": r["num_threads"],
            "harness img/s": r["harness_median"],
            "bare img/s": r["bare_median"],
            "harness / bare": r["ratio_median"],
            "measured": _when(r),
        }
        for r in results
    ]


GATED_FORMATS = {"closed gates": "{:.0f}%"} | {
    column: "{:.2f}"
    for column in (
        "MAC ratio",
        "dense ms",
        "sparse ms",
        "realised",
        "realised ÷ MAC",
        "folding",
        "realised ÷ MAC, interleaved",
        "sparsity alone, interleaved",
    )
}


def _gated_rows(results: list[dict]) -> list[dict]:
    return [
        {
            "model": r["model"],
            "device": _device(r),
            "input": "×".join(map(str, r["input_shape"])),
            "batch": r["batch_size"],
            "closed gates": 100 * r["closed_gate_fraction"],
            "MAC ratio": r["mac_ratio"],
            "dense ms": statistics.median(r["dense_ms"]),
            "sparse ms": statistics.median(r["sparse_ms"]),
            "realised": r["realised_ratio"],
            "realised ÷ MAC": r["realised_over_mac"],
            "folding": r["dense_over_sparse_open"],
            "realised ÷ MAC, interleaved": r.get("realised_over_mac_interleaved"),  # older results lack
            "sparsity alone, interleaved": r.get("sparse_open_over_sparse_interleaved"),  # the interleaved
            "threads": r["num_threads"],
            "measured": _when(r),
        }
        for r in results
    ]


SUITE_FORMATS = {
    "wall s": "{:.0f}",
    "training": "{:.0f}%",
    "evaluation": "{:.0f}%",
    "measurement": "{:.0f}%",
    "I/O": "{:.1f}%",
    "other": "{:.1f}%",
}


def _suite_rows(results: list[dict]) -> list[dict]:
    return [
        {
            "suite": r["suite"],
            "runs": r["runs"],
            "wall s": r["wall_s"],
            "training": 100 * r["shares"]["training"],
            "evaluation": 100 * r["shares"]["evaluation"],
            "measurement": 100 * r["shares"]["measurement"],
            "I/O": 100 * r["shares"]["io"],
            "other": 100 * (r["shares"]["other"] + r["shares"]["build_check"]),
            "threads": r["num_threads"],
            "measured": _when(r),
        }
        for r in results
    ]


JOBS_FORMATS = {"wall s": "{:.1f}", "runs per hour": "{:.0f}"}


def _jobs_rows(results: list[dict]) -> list[dict]:
    return [
        {
            "suite": r["suite"],
            "model": r["model"],
            "device": _device(r),
            "epochs a run": r["epochs_per_run"],
            "threads a run": r.get("threads_per_job") or "–",
            "--jobs": row["jobs"],
            "runs": row["runs"],
            "wall s": row["wall_s"],
            "runs per hour": row["runs_per_hour"],
            "top-1 same at every N": "yes" if r["top1_identical_across_jobs"] else "no",
            "measured": _when(r),
        }
        for r in results
        for row in r["rows"]
    ]


STORE_FORMATS = {"store MB": "{:.1f}", "append ms, median": "{:.1f}", "min": "{:.1f}", "max": "{:.1f}"}


def _store_rows(results: list[dict]) -> list[dict]:
    return [
        {
            "records": r["records"],
            "store MB": r["store_bytes"] / 1e6,
            "appends": r["appends"],
            "append ms, median": r["append_ms_median"],
            "min": r["append_ms_min"],
            "max": r["append_ms_max"],
            "measured": _when(r),
        }
        for r in results
    ]


SECTIONS = [  # kind, heading (with the command that measures it), introduction (lines), rows, column formats
    (
        "train",
        "Training throughput: harness loop vs bare PyTorch loop (`bench perf train`)",
        [],
        _train_rows,
        TRAIN_FORMATS,
    ),
    (
        "gated",
        "Sparse inference of gated models (`bench perf gated`)",
        [
            "MAC ratio = static / executed MACs; realised = masked dense latency / sparse latency; "
            "folding = dense / sparse path with every gate open (what BatchNorm folding alone buys).",
            "",
            "Interleaved: the same three timed call by call in turn (steadier on a shared CPU); "
            "sparsity alone = sparse with every gate open / sparse at the given sparsity.",
            "",
        ],
        _gated_rows,
        GATED_FORMATS,
    ),
    ("suite", "Suite wall time by stage (`bench perf suite`)", [], _suite_rows, SUITE_FORMATS),
    (
        "jobs",
        "Runs per hour of a suite with `bench run --jobs N` (`bench perf jobs`)",
        [
            "The same short runs (max N seeds of one model) at each N, each into its own scratch store "
            "(on a GPU, `make gpu-check` runs it); their top-1 values must not depend on N.",
            "",
        ],
        _jobs_rows,
        JOBS_FORMATS,
    ),
    (
        "store",
        "Appending one record to a large store (`bench perf store`)",
        ["An append writes to the end of the store file: its cost does not grow with the store.", ""],
        _store_rows,
        STORE_FORMATS,
    ),
]


def perf_markdown(results_dir: str | Path) -> str:
    """The `results/perf/*.json` benchmarks as a markdown section (empty string when there are none)."""
    results = load_results(results_dir)
    if not results:
        return ""
    lines = ["## Performance of the harness", ""]
    lines.append(
        "Measured on the device each row names (a shared CPU unless it says cuda); each ratio comes "
        "from one process, its repeats alternated. "
        "Load is the 1-minute load average when the benchmark finished."
    )
    of = {kind: [r for r in results if r.get("benchmark") == kind] for kind, *_ in SECTIONS}
    for kind, heading, intro, rows, formats in SECTIONS:
        if of[kind]:
            lines += [
                "",
                f"### {heading}",
                "",
                *intro,
                markdown_table(rows(of[kind]), formats),
            ]
    return "\n".join(lines) + "\n"
