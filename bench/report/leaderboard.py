"""The leaderboard, generated from the result store and nothing else (never edited by hand).

`leaderboard/<suite>.md` has, per dataset, one row per model, configuration and origin (our runs, or
one submitter's): the headline metric (top-1, or mIoU on segmentation datasets) mean ± std over seeds
with n, a status badge (measured / submitted / verified), the paper-reported number with our difference
to it, top-5 (pixel accuracy), params, static and executed MACs, the gate
network's MACs, latency and device, and a figure of the headline metric against MACs (`bench.report.plots`). Models the
suite declares but nobody has run show "not yet run". `leaderboard/README.md` indexes the suites and
lists every store version; `leaderboard/paper.md` lists the paper-reported numbers with their sources.

Generation is deterministic: the same store gives the same bytes, so any store version can be rebuilt
(`--at`) and a test can check that the committed leaderboard matches the committed store. Paper
numbers and suite declarations come from the files in the working tree, not from the store version.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean, stdev

from bench.data import DATASET_TASKS
from bench.engine.config import Suite, SuiteError, list_suites, load_suite
from bench.report.gate_figures import plot_gate_stats
from bench.report.perf_page import perf_markdown  # the benchmarks of `bench perf`, under results/perf/
from bench.report.plots import Point, plot_accuracy_macs
from bench.report.tables import (
    NONE,
    Markdown,
    code_span,
    device_label,
    escape_cell,
    local_link,
    markdown_link,
    markdown_table,
    safe_name,
)
from bench.store.results import ResultStore, digest_of, write_text_atomic
from bench.store.schema import METRIC_LABELS, TASK_METRICS, PaperReference, PublicResultsFile, Record

NOT_RUN = "not yet run"
ROWS = ("measured", "submitted")  # verified records are re-runs: they mark rows, they are not rows


@dataclass(frozen=True)
class Columns:
    """A task's metrics and the names of their columns."""

    metric: str  # the headline metric: rows are sorted by it and plotted against MACs
    second: str  # shown beside it
    header: str
    second_header: str
    paper_header: str
    axis: str  # the figure's y label


COLUMNS = {  # the metrics are the schema's pair of each task
    "classification": Columns(
        *TASK_METRICS["classification"],
        header="Top-1 (%)",
        second_header="Top-5 (%)",
        paper_header="Paper top-1 (%)",
        axis="top-1 accuracy (%)",
    ),
    "segmentation": Columns(
        *TASK_METRICS["segmentation"],
        header="mIoU (%)",
        second_header="Pixel acc. (%)",
        paper_header="Paper mIoU (%)",
        axis="mIoU (%)",
    ),
}


def columns_of(dataset: str) -> Columns:
    return COLUMNS[DATASET_TASKS.get(dataset, "classification")]


@dataclass(frozen=True)
class MeanStd:
    """A metric over seeds: its mean, and its standard deviation where there is more than one seed."""

    mean: float
    std: float | None

    @classmethod
    def of(cls, values: list[float]) -> MeanStd:
        return cls(mean(values), stdev(values) if len(values) > 1 else None)

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f}"


def _millions(value: float) -> str:
    return f"{value / 1e9:.3f}G" if value >= 1e9 else f"{value / 1e6:.2f}M"


SECONDARY_MARK = "†"
SECONDARY_NOTE = (
    f"{SECONDARY_MARK} known only from a secondary summary of the paper (not the paper, its code or its "
    "authors): not confirmed, shown for orientation until it is transcribed from the paper."
)


def _paper_numbers(refs: list[tuple[int, float, str]]) -> str:
    return "; ".join(f"{value:.2f}{mark} [{n}]" for n, value, mark in refs)


def _latency_bs1(record: Record) -> float | None:
    for lat in record.metrics.latency:
        if lat.batch_size == 1:
            return lat.median_ms
    return None


def _device(record: Record) -> str:
    return device_label(record.environment.device, record.environment.device_name)


def _training(record: Record) -> str | None:
    """How the run trained, where it was more than one process in full precision: "8 × 32, bfloat16, SyncBN"."""
    t = record.training
    if t is None:
        return None
    facts = [
        f"{t.world_size} × {t.batch_size_per_rank}",
        t.amp_dtype or "",
        "channels_last" if t.channels_last else "",
        "SyncBN" if t.sync_bn else "",
        f"compiled ({t.compile})" if t.compile else "",
    ]
    return ", ".join(f for f in facts if f)


def _plain(record: Record) -> bool:
    t = record.training
    return t is None or (t.world_size == 1 and t.amp_dtype is None and not t.channels_last and not t.compile)


def _badge(status: str) -> str:
    return code_span(status)


@dataclass
class Group:
    """One table row: the runs (seeds) of one model, configuration and origin on one dataset."""

    model: str
    config_hash: str
    origin: str  # OURS (our runs, `measured`) or the submitter's name (never empty)
    records: list[Record] = field(default_factory=list)
    verified: set[str] = field(default_factory=set)  # ids of the records that a verification re-ran

    def values(self, metric: str) -> list[float]:
        return [getattr(r.metrics, metric) for r in self.records]

    @property
    def executed_macs(self) -> float | None:
        """Mean executed MACs over the runs (gated models), else None."""
        executed = [r.metrics.executed_macs.mean for r in self.records if r.metrics.executed_macs]
        return mean(executed) if executed else None

    @property
    def backbone_executed_pct(self) -> float | None:
        """Executed MACs of the backbone alone, as a share of its MACs: the gate network's cost (a gate
        head, GaterNet's whole gater) taken out of both, so gated methods compare on one scale."""
        executed = self.executed_macs
        if executed is None:
            return None
        m = self.records[0].metrics
        gate = m.gate_network_macs or 0
        return 100 * (executed - gate) / (m.static_macs - gate)


def _matches(ref: PaperReference, model: str, model_args: dict, model_info: dict | None) -> bool:
    """Does `ref` describe this model? Same name, its arguments, and the same layout where both say."""
    if ref.model != model or any(model_args.get(k) != v for k, v in ref.model_args.items()):
        return False
    layout = (model_info or {}).get("layout")
    return ref.layout is None or layout is None or layout == ref.layout


class References:
    """The paper numbers shown on one page (confirmed and secondary), numbered in order of first use."""

    def __init__(self, refs: list[tuple[str, PaperReference]]):
        self.refs = refs
        self.used: list[tuple[str, PaperReference]] = []

    def matching(
        self, dataset: str, metric: str, model: str, model_args: dict, model_info: dict | None
    ) -> list[tuple[int, PaperReference]]:
        out = []
        for paper, ref in self.refs:
            if (
                ref.dataset == dataset
                and ref.our_metric == metric
                and _matches(ref, model, model_args, model_info)
            ):
                if (paper, ref) not in self.used:
                    self.used.append((paper, ref))
                out.append((self.used.index((paper, ref)) + 1, ref))
        return out


def _reference_line(number: int, paper: str, ref: PaperReference) -> str:
    """A paper reference, from `results/paper/` (files of this repository, reviewed like its code, not
    records): shown as written, so a quoted markdown table row keeps its emphasis."""
    shown = f"{METRIC_LABELS[ref.our_metric]} {ref.our_value:.2f}%"
    facts = [f"layout {ref.layout}" if ref.layout else "", ref.protocol, ref.note]
    extra = "".join(f"; {f}" for f in facts if f)
    quote = f": “{ref.quote.strip()}”" if ref.quote.strip() else ""
    secondary = f"{SECONDARY_MARK} secondary, not confirmed: " if ref.status == "secondary" else ""
    return (
        f"{number}. {secondary}{paper}, {ref.table}: `{ref.model}` on {ref.dataset}, {ref.stated()} "
        f"(shown as {shown}){extra}. Source: {ref.source}{quote}"
    )


def _paper_cells(refs: list[tuple[int, PaperReference]], ours: list[float] | None, cols: Columns) -> dict:
    """The paper's numbers (reference number, value, mark: † for a secondary one) and our mean minus the
    first confirmed one (never a secondary one)."""
    confirmed = [ref for _, ref in refs if ref.status == "confirmed"]
    marks = {"confirmed": "", "secondary": SECONDARY_MARK}
    return {
        cols.paper_header: [(n, ref.our_value, marks[ref.status]) for n, ref in refs] or None,
        "Δ vs paper": mean(ours) - confirmed[0].our_value if confirmed and ours else None,
    }


def _status(group: Group) -> str:
    badges = [_badge("measured" if group.origin == OURS else "submitted")]
    verified = len(group.verified)
    if verified:
        badges.append(
            _badge("verified")
            + ("" if verified == len(group.records) else f" {verified}/{len(group.records)}")
        )
    return Markdown(" ".join(badges))


def _row(label: str, group: Group, refs: References, dataset: str, training: bool) -> dict:
    """One row of raw values (numbers stay numbers until `_table_markdown` formats them)."""
    m = [r.metrics for r in group.records]
    first = group.records[0]
    cols = columns_of(dataset)
    paper = refs.matching(dataset, cols.metric, group.model, first.model_args, first.model_info)
    ours = group.values(cols.metric)
    return {
        "Model": label,
        "Status": _status(group),
        cols.header: MeanStd.of(ours),
        "n": len(group.records),
        **_paper_cells(paper, ours, cols),
        cols.second_header: MeanStd.of(group.values(cols.second)),
        "Params": m[0].params,
        "MACs": m[0].static_macs,
        "Executed MACs": group.executed_macs,
        "Gate MACs": m[0].gate_network_macs,
        "Backbone executed (%)": group.backbone_executed_pct,
        "Latency bs1 (ms)": _latency_bs1(first),
        "Device": _device(first),
    } | ({"Training": _training(first)} if training else {})


def _not_run_row(model: str, model_args: dict, refs: References, dataset: str) -> dict:
    cols = columns_of(dataset)
    row = {"Model": model, "Status": NONE, cols.header: NOT_RUN, "n": 0}
    return row | _paper_cells(refs.matching(dataset, cols.metric, model, model_args, None), None, cols)


OURS = ""  # the origin of our runs: no submitter's name, whatever it is, can stand for them


def _origin(record: Record) -> str:
    return OURS if record.status == "measured" else record.submitter


def counted(records: list[Record]) -> list[Record]:
    """The records the tables count: a seed run again with the same configuration counts once, with its
    newest record (a re-run is not another seed); the older records stay in the store."""
    newest: dict[tuple[str, str, str, str, int], Record] = {}
    for r in records:  # the store's order: by store version
        if r.status in ROWS:
            newest[(r.dataset, r.model, r.config_hash, _origin(r), r.seed)] = r
    return [newest[k] for k in sorted(newest)]


def _verifiers(records: list[Record]) -> dict[str, Record]:
    """Verified record id -> the record that verified it."""
    return {r.verification.record_id: r for r in records if r.status == "verified" and r.verification}


def group_records(records: list[Record], dataset: str) -> list[Group]:
    """The rows of one dataset (its counted records), verified records attached to the rows of the
    records they verified."""
    groups: dict[tuple[str, str, str], Group] = {}
    for r in counted([r for r in records if r.dataset == dataset]):
        groups.setdefault(
            (r.model, r.config_hash, _origin(r)), Group(r.model, r.config_hash, _origin(r))
        ).records.append(r)
    verified = _verifiers(records).keys()
    for g in groups.values():
        g.verified = {r.record_id for r in g.records} & verified
    return [groups[k] for k in sorted(groups)]


@dataclass
class DatasetTable:
    dataset: str
    rows: list[dict]  # raw values, in group order; `_table_markdown` sorts and formats them
    points: list[Point]


def dataset_table(
    dataset: str, records: list[Record], declared: list[str], declared_args: dict[str, dict], refs: References
) -> DatasetTable:
    groups = group_records(records, dataset)
    metric = columns_of(dataset).metric
    configs = Counter(model for model, _ in {(g.model, g.config_hash) for g in groups})
    training = not all(
        _plain(r) for g in groups for r in g.records
    )  # a column only where a run was not plain
    rows, points = [], []
    for g in groups:
        label = g.model if configs[g.model] == 1 else f"{g.model} (config {g.config_hash[:8]})"
        if g.origin != OURS:
            label += f" (submitted by {g.origin})"
        rows.append(_row(label, g, refs, dataset, training))
        executed, ours = g.executed_macs, g.values(metric)
        points.append(
            Point(
                label,
                g.records[0].model_family,
                g.records[0].metrics.static_macs if executed is None else executed,
                executed is not None,
                mean(ours),
                stdev(ours) if len(ours) > 1 else 0.0,
            )
        )
    run = {g.model for g in groups if g.origin == OURS}  # a submission is not our run
    rows += [_not_run_row(m, declared_args.get(m, {}), refs, dataset) for m in declared if m not in run]
    return DatasetTable(dataset, rows, points)


def _rank(row: dict, cols: Columns) -> tuple:
    """Best headline mean first, then by model name; rows not yet run last."""
    score = row[cols.header]
    return (0, -score.mean, row["Model"]) if isinstance(score, MeanStd) else (1, 0.0, row["Model"])


def _formats(cols: Columns) -> dict:
    """How each column's numbers are shown (text cells are shown as they are, missing values as "–")."""
    return {
        cols.paper_header: _paper_numbers,
        "Δ vs paper": "{:+.2f}",
        **{column: _millions for column in ("Params", "MACs", "Executed MACs", "Gate MACs")},
        "Backbone executed (%)": "{:.1f}",
        "Latency bs1 (ms)": "{:.2f}",
    }  # a MeanStd (the headline and second metric) shows as "mean ± std", a count as itself


def _table_markdown(rows: list[dict], cols: Columns) -> str:
    if not rows:
        return "_no runs yet_"
    return markdown_table(sorted(rows, key=lambda row: _rank(row, cols)), _formats(cols))


def plot_name(suite: str, dataset: str) -> str:
    return f"{safe_name(suite)}-{safe_name(dataset)}.png"


def page_name(suite: str) -> str:
    return f"{safe_name(suite)}.md"


def public_results_markdown(dataset: str, public: list[PublicResultsFile]) -> list[str]:
    """The public results listed for `dataset` (`results/reference/`), as their own table below ours:
    other networks, other recipes, self-reported; a reader compares, the page does not rank them."""
    lines = []
    for source in public:
        rows = [
            {
                "Network (as listed)": r.network,
                "Preprocessing": r.preprocessing,
                "Top-1 (%)": r.top1_pct,
                "Reported by": r.reported_by,
                "Code": markdown_link("code", r.code) if r.code else NONE,
            }
            for r in sorted(source.results, key=lambda r: -r.top1_pct)
            if r.dataset == dataset
        ]
        if rows:
            lines += [
                "",
                f"### Public results on {escape_cell(dataset)}: {escape_cell(source.title)} (not ours)",
                "",
                f"Other networks and recipes, as {markdown_link('the source', source.source)} lists them; "
                f"not run here. {escape_cell(source.note)}",
                "",
                markdown_table(rows, {"Top-1 (%)": "{:.1f}"}),
            ]
    return lines


def _ours_by_seed(records: list[Record]) -> dict[tuple[str, str], dict[int, Record]]:
    """Our counted runs by (dataset, model) and seed; where a seed ran in two configurations, the newest."""
    runs: dict[tuple[str, str], dict[int, Record]] = defaultdict(dict)
    for r in sorted(counted(records), key=lambda r: r.store_version):
        if _origin(r) == OURS:
            runs[(r.dataset, r.model)][r.seed] = r
    return runs


def control_markdown(suite: str, records: list[Record], other: str, other_records: list[Record]) -> list[str]:
    """A control suite's section (`control_of`): every model it shares with `other`, seed by seed, and
    whether their means differ by more than the spread over seeds, so a setting the suites differ in
    (bf16 autocast against float32) is kept or dropped on stored runs, not on a note."""
    lines = ["", f"## Against {code_span(other)}", ""]
    mine, theirs = _ours_by_seed(records), _ours_by_seed(other_records)
    pairs = sorted(mine.keys() & theirs.keys())
    if not pairs:
        return lines + [
            f"_no model of this suite has runs in both {code_span(suite)} and {code_span(other)} yet_"
        ]
    # the device, where the suites differ in it (a GPU run against the CPU's), has cells of its own
    devices_differ = any(
        _device(r) != _device(o) for key in pairs for r in mine[key].values() for o in theirs[key].values()
    )
    lines += [
        f"The models both suites ran, per seed (our measured runs). Each side trains as its records "
        f"state (the Training cells: processes × batch, AMP dtype (none: float32), memory format"
        f"{'; the Device cells: where it ran' if devices_differ else ''}). "
        f"Δ is {code_span(other)} minus {code_span(suite)}; the verdict compares the difference of the "
        "means on the seeds both ran with the larger standard deviation over those seeds.",
        "",
    ]
    rows, verdicts = [], []
    for dataset, model in pairs:
        metric = columns_of(dataset).metric
        ours, others = mine[(dataset, model)], theirs[(dataset, model)]
        for seed in sorted(ours.keys() | others.keys()):
            a, b = ours.get(seed), others.get(seed)
            va = getattr(a.metrics, metric) if a else None
            vb = getattr(b.metrics, metric) if b else None
            rows.append(
                {
                    "Dataset": dataset,
                    "Model": model,
                    "Seed": str(seed),
                    f"{suite} (%)": va,
                    f"{other} (%)": vb,
                    "Δ (points)": vb - va if a and b else None,
                    f"Training ({suite})": _training(a) if a else None,
                    f"Training ({other})": _training(b) if b else None,
                }
                | (
                    {f"Device ({suite})": a and _device(a), f"Device ({other})": b and _device(b)}
                    if devices_differ
                    else {}
                )
            )
        both = sorted(ours.keys() & others.keys())
        if len(both) < 2:
            verdicts.append(
                f"- {code_span(model)} on {escape_cell(dataset)}: {len(both)} seed(s) in both; "
                "the verdict needs 2 or more."
            )
            continue
        a = MeanStd.of([getattr(ours[s].metrics, metric) for s in both])
        b = MeanStd.of([getattr(others[s].metrics, metric) for s in both])
        difference, spread = b.mean - a.mean, max(a.std, b.std)
        verdict = "within" if abs(difference) <= spread else "outside"
        verdicts.append(
            f"- {code_span(model)} on {escape_cell(dataset)}, seeds {', '.join(map(str, both))}: "
            f"{code_span(suite)} {a}, {code_span(other)} {b}; the means differ by {difference:+.2f} points, "
            f"{verdict} the spread over seeds ({spread:.2f})."
        )
    formats = {f"{suite} (%)": "{:.2f}", f"{other} (%)": "{:.2f}", "Δ (points)": "{:+.2f}"}
    return lines + [markdown_table(rows, formats), "", *verdicts]


def suite_markdown(
    suite: str,
    records: list[Record],
    version: int,
    digest: str,
    declared: Suite | None,
    refs: References,
    public: list[PublicResultsFile] = (),
    control: tuple[str, list[Record]] | None = None,
) -> tuple[str, list[DatasetTable]]:
    """The page of one suite and its tables (whose points the figures are drawn from); `public`: the
    public benchmarks' results shown below each dataset's table; `control`: the suite this one is a
    control for and its records, compared after the tables."""
    models, model_args, datasets = (
        (declared.models, declared.model_args, declared.datasets) if declared else ([], {}, [])
    )
    lines = [
        f"# Leaderboard: {code_span(suite)}",
        "",
        f"Generated by `bench leaderboard` from {len(records)} records of {code_span(f'results/runs/{suite}.jsonl')} "
        f"at store version {version} (store sha256 `{digest[:16]}`). "
        f"Newest record: {escape_cell(max((r.created_at for r in records), default=NONE))}.",
        "",
        "Top-1 (mIoU on segmentation datasets) is mean ± std over seeds (n seeds; a seed run again counts "
        "once, with its newest record). Status: `measured` rows "
        "were run by `bench run`, `submitted` rows were sent with `bench submit` (self-reported, with a link "
        "to their code), `verified` means `bench verify` re-ran the record's configuration and matched its "
        "top-1 (mIoU) within the stated tolerance. Paper top-1 is the paper-reported number (see the references below; "
        "error rates converted to accuracy), and Δ is our mean minus it. MACs are multiply-accumulates "
        "of convolution and linear layers per sample; executed MACs count only what the gates let run, "
        "as the mean over the evaluation set; gate MACs are the gate network's own cost (included in "
        "executed MACs); backbone executed is executed MACs less the gate MACs, as a share of MACs less the "
        "gate MACs. Latency is the median per batch of 1 after warm-up. Training, where a run was "
        "not one process in full precision: processes × batch per process, AMP dtype, memory format, "
        "synchronised BatchNorm.",
    ]
    shown = sorted(set(datasets) | {r.dataset for r in records})
    segmentation = [d for d in shown if columns_of(d).metric == "miou_pct"]
    if segmentation:
        lines += [
            "",
            f"On {escape_cell(', '.join(segmentation))} (semantic segmentation) mIoU takes top-1's place: the mean over "
            "classes of intersection over union, pixels labelled 255 ignored, evaluated on whole images at "
            "full resolution, single scale; pixel accuracy takes top-5's place. MACs and latency are per "
            "image at the size the table's model was measured at (see the model notes).",
        ]
    tables = []
    for dataset in shown:
        table = dataset_table(dataset, records, models, model_args, refs)
        tables.append(table)
        cols = columns_of(dataset)
        lines += ["", f"## {escape_cell(dataset)}", "", _table_markdown(table.rows, cols)]
        if table.points:
            alt = f"{cols.header.removesuffix(' (%)')} against MACs on {dataset}"
            lines += ["", local_link(alt, plot_name(suite, dataset), image=True)]
        lines += public_results_markdown(dataset, public)
    if control is not None:
        lines += control_markdown(suite, records, *control)
    if refs.used:
        lines += [
            "",
            "## Paper-reported references",
            "",
            "Numbers as the papers (or their authors' "
            "releases) state them; only numbers confirmed by a quote are shown.",
            "",
        ]
        if any(ref.status == "secondary" for _, ref in refs.used):
            lines += [SECONDARY_NOTE, ""]
        lines += [_reference_line(i + 1, paper, ref) for i, (paper, ref) in enumerate(refs.used)]
    lines += _notes(records)
    return "\n".join(lines) + "\n", tables


def _json(info: dict) -> str:
    return json.dumps(info, sort_keys=True, default=str)


def _model_notes(runs: list[Record]) -> list[str]:
    """Model notes by origin: a model's own notes come from our runs of it (`measured`) and nothing else;
    what a submission's `model_info` says is listed apart, attributed to the submission, and never
    stands in for a model's own notes (even of a model we have not run)."""
    ours: dict[str, dict] = {}
    for r in runs:
        if r.status == "measured" and r.model_info:
            ours.setdefault(r.model, r.model_info)
    theirs: dict[tuple[str, str, str], Record] = {}
    for r in runs:
        if r.status == "submitted" and r.model_info:
            theirs.setdefault((r.model, r.submitter, _json(r.model_info)), r)
    lines = []
    if ours:
        lines += [
            "",
            "## Model notes",
            "",
            "What each model's builder recorded about itself (layouts, widths, "
            "defaults the paper does not confirm):",
            "",
        ]
        lines += [f"- {code_span(m)}: {code_span(_json(info))}" for m, info in sorted(ours.items())]
    if theirs:
        lines += [
            "",
            "## Notes from submissions",
            "",
            "What a submission stated about its model (self-reported, not checked; a model's own notes "
            "above come only from our runs):",
            "",
        ]
        lines += [
            f"- {code_span(model)} in {code_span(r.record_id)}, submitted by {escape_cell(submitter)}: "
            f"{code_span(info)}"
            for (model, submitter, info), r in sorted(theirs.items())
        ]
    return lines


def _gate_counts(gates: dict) -> str:
    n = {k: escape_cell(gates.get(k, "?")) for k in ("always_on", "always_off", "input_dependent", "gates")}
    return (
        f"{n['always_on']} always on, {n['always_off']} always off, {n['input_dependent']} "
        f"input-dependent of {n['gates']} gates"
    )


def _notes(records: list[Record]) -> list[str]:
    runs = counted(records)
    lines = []
    submitted = sorted(
        (r for r in records if r.status == "submitted"), key=lambda r: (r.store_version, r.record_id)
    )
    verifier = _verifiers(records)
    if submitted:
        lines += ["", "## Submissions", ""]
        for r in submitted:
            v = verifier.get(r.record_id)
            check = (
                f"verified by {code_span(v.record_id)} (re-run {v.verification.measured:.2f}%, Δ "
                f"{v.verification.delta:+.2f}, tolerance {v.verification.tolerance:.2f})"
                if v
                else "not verified"
            )
            lines.append(
                f"- {code_span(r.record_id)} · {code_span(r.model)} · {escape_cell(r.dataset)} · seed {r.seed} · "
                f"{METRIC_LABELS[r.metrics.quality_metric]} {r.metrics.quality:.2f}% · by "
                f"{escape_cell(r.submitter)} · {markdown_link('code', r.code_url)} · store version "
                f"{r.store_version} · {check}"
            )
    verified = sorted(
        (r for r in records if r.status == "verified"), key=lambda r: (r.store_version, r.record_id)
    )
    if verified:
        lines += [
            "",
            "## Verifications",
            "",
            "Each line is a re-run by `bench verify` of the record it names:",
            "",
        ]
        for r in verified:
            v = r.verification
            lines.append(
                f"- {code_span(r.record_id)} verifies {code_span(v.record_id)} ({code_span(r.model)} · "
                f"{escape_cell(r.dataset)} · seed {r.seed}): "
                f"{v.metric} {v.submitted:.2f} stated, {v.measured:.2f} re-run (Δ {v.delta:+.2f}, "
                f"tolerance {v.tolerance:.2f}) on {escape_cell(_device(r))}, by {escape_cell(r.submitter)}"
            )
    lines += _model_notes(runs)
    gated = [r for r in runs if r.gates]
    if gated:
        lines += [
            "",
            "## Gate figures",
            "",
            "Per gated unit, gates always on / always off / input-dependent over "
            "the evaluation set, and the distribution of open gates per image:",
            "",
        ]
        lines += [
            f"- {local_link(f'{r.model} · {r.dataset} · seed {r.seed}', gate_figure(r))}: {_gate_counts(r.gates)}"
            for r in gated
        ]
    failed = [r for r in records if r.status == "failed"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [
            f"- {code_span(r.model)} · {escape_cell(r.dataset)} · seed {r.seed}: {escape_cell(r.failure_reason)}"
            for r in failed
        ]
    return lines


def index_markdown(suites: dict[str, Suite | None], records: list[Record], version: int, digest: str) -> str:
    lines = [
        "# ChannelBench leaderboard",
        "",
        f"Store version {version}, {len(records)} records (store sha256 `{digest[:16]}`). "
        "Generated from `results/` by `bench leaderboard`; do not edit by hand. "
        "Paper-reported numbers and their sources: [paper.md](paper.md); benchmarks of the harness "
        "itself (training overhead, sparse inference of gated models): [perf.md](perf.md).",
        "",
    ]
    rows = []
    for suite in suites:
        recs = [r for r in records if r.suite == suite]
        declared = suites[suite]
        datasets = sorted(set(declared.datasets if declared else []) | {r.dataset for r in recs})
        status = Counter(r.status for r in recs)
        run = len({r.model for r in recs if r.status == "measured"})
        rows.append(
            {
                "Suite": local_link(suite, page_name(suite)),
                "Suite version": declared.version
                if declared
                else max((r.suite_version for r in recs), default=None),
                "Datasets": ", ".join(datasets),
                "Models we ran": f"{run} of {len(declared.models)}" if declared else run,
                "Records": len(recs),
                "Submitted": status["submitted"],
                "Verified": status["verified"],
                "Newest record": max((r.created_at for r in recs), default=None),
            }
        )
    lines += [
        markdown_table(rows, compact=True),
        "",
        "## Versions",
        "",
        "Each accepted batch of records (a finished run, a submission, a verification) is one store "
        "version; `bench leaderboard --at VERSION` rebuilds the leaderboard as it was after it.",
        "",
    ]
    by_version = defaultdict(list)
    for r in records:
        by_version[r.store_version].append(r)
    rows = [
        {
            "Version": v,
            "Records": len(recs),
            "Suites": ", ".join(sorted({r.suite for r in recs})),
            "Added": ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.status for r in recs).items())),
            "Submitters": ", ".join(sorted({r.submitter for r in recs})),
            "Newest record": max(r.created_at for r in recs),
        }
        for v, recs in sorted(by_version.items(), reverse=True)
    ]
    lines.append(markdown_table(rows, compact=True) if rows else "_no records yet_")
    return "\n".join(lines) + "\n"


def paper_markdown(references: list[tuple[str, PaperReference]]) -> str:
    """The page of every confirmed paper-reported number, then the secondary ones (marked);
    `references` are all of them."""
    confirmed = [(paper, ref) for paper, ref in references if ref.status == "confirmed"]
    secondary = [(paper, ref) for paper, ref in references if ref.status == "secondary"]
    unconfirmed = len(references) - len(confirmed) - len(secondary)
    lines = [
        "# Paper-reported numbers",
        "",
        "Generated from `results/paper/*.toml` by `bench leaderboard`; do not edit by hand. Each number is "
        "shown as the source states it and in our unit (accuracy in percent), with the quote it is read "
        "from. ImageNet numbers name their bottleneck layout (v1: stride on the first 1×1 conv, as in He "
        "et al.'s Caffe models; v1.5: stride on the 3×3, as in torchvision); other networks name the "
        "definition they are compared with (torchvision: MobileNetV2, ShuffleNetV2; dcnets: the DCNets "
        "code's ImageNet ResNet-18). "
        f"{unconfirmed} further number(s) in `results/paper/` are marked unconfirmed (not yet transcribed "
        "from the paper) and are not shown.",
    ]
    lines += _paper_tables(confirmed)
    if secondary:
        lines += ["", f"## {SECONDARY_MARK} Secondary (not confirmed)", "", SECONDARY_NOTE]
        lines += _paper_tables(secondary, level="###")
    return "\n".join(lines) + "\n"


def _paper_tables(references: list[tuple[str, PaperReference]], level: str = "##") -> list[str]:
    """One table per dataset of `references`."""
    lines = []
    for dataset in sorted({ref.dataset for _, ref in references}):
        rows = [
            {
                "Model": Markdown(
                    code_span(ref.model)
                    + (
                        f" {escape_cell(json.dumps(ref.model_args, sort_keys=True))}"
                        if ref.model_args
                        else ""
                    )
                ),
                "Stated": ref.stated(),
                "Ours": f"{METRIC_LABELS[ref.our_metric]} {ref.our_value:.2f}%",
                "Layout": ref.layout or NONE,
                "Paper": paper,
                "Where": ref.table,
                "Notes": "; ".join(x for x in (ref.protocol, ref.note) if x) or NONE,
                "Source": ref.source,
            }
            for paper, ref in sorted(references, key=lambda pr: (pr[1].model, pr[1].metric, pr[0]))
            if ref.dataset == dataset
        ]
        lines += ["", f"{level} {dataset}", "", markdown_table(rows)]
    return lines


def gate_figure(record: Record) -> str:
    """Path of a gated record's figure, relative to the leaderboard folder."""
    parts = (record.model, record.dataset, f"s{record.seed}", record.config_hash[:8])
    return f"gates/{safe_name(record.suite)}/{'-'.join(safe_name(p) for p in parts)}.png"


def _declared(suite: str) -> Suite | None:
    """The built-in suite of that name; None for a suite that is not built in."""
    if suite not in list_suites():
        return None
    try:
        return load_suite(suite)
    except SuiteError:
        return None


def write_leaderboard(
    store: ResultStore, out_dir: str | Path = "leaderboard", suite: str | None = None, at: int | None = None
) -> list[Path]:
    """Regenerate `<out_dir>/<suite>.md` and its figures (every suite by default), the index `README.md`
    and `paper.md`; returns the paths written."""
    lines = store.lines()  # the store is read and validated once
    current = max((line.record.store_version for line in lines), default=0)
    if at is not None and not 0 <= at <= current:
        raise ValueError(f"--at {at}: the store has versions 1 to {current}; pick one of them")
    lines = [line for line in lines if at is None or line.record.store_version <= at]
    records = [line.record for line in lines]
    stored_suites = {r.suite for r in records}
    if suite is not None and suite not in stored_suites and suite not in list_suites():
        raise ValueError(
            f"no records of suite {suite!r} in {store.runs} and no built-in suite of that name; "
            f"built-in suites: {', '.join(list_suites())}"
        )
    references = store.paper_references(confirmed_only=False)
    shown = [pr for pr in references if pr[1].shown]  # confirmed, and secondary with its mark
    version = max((r.store_version for r in records), default=0)
    suites = {name: _declared(name) for name in sorted(stored_suites | set(list_suites()))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in [suite] if suite else suites:
        recs = [r for r in records if r.suite == name]
        control_of = suites[name].control_of if suites[name] else ""
        digest = digest_of([line for line in lines if line.path == store.path(name)])
        text, tables = suite_markdown(
            name,
            recs,
            version,
            digest,
            suites[name],
            References(shown),
            [f for f in store.public_results() if name in f.suites],
            (control_of, [r for r in records if r.suite == control_of]) if control_of else None,
        )
        for table in tables:
            if table.points:
                cols = columns_of(table.dataset)
                title = f"{name} · {table.dataset}: {METRIC_LABELS[cols.metric]} against MACs"
                written.append(
                    plot_accuracy_macs(table.points, title, out / plot_name(name, table.dataset), cols.axis)
                )
        path = out / page_name(name)
        write_text_atomic(path, text)
        written.append(path)
        for r in counted(recs):
            if r.gates:
                written.append(
                    plot_gate_stats(r.gates, f"{r.model} · {r.dataset} · seed {r.seed}", out / gate_figure(r))
                )
    paper = out / "paper.md"
    write_text_atomic(paper, paper_markdown(references))
    perf = perf_markdown(store.root)
    if perf:
        written.append(out / "perf.md")
        write_text_atomic(
            out / "perf.md",
            "# ChannelBench performance\n\nGenerated from `results/perf/` by "
            "`bench leaderboard`; re-measure with `bench perf train|gated|suite`.\n\n" + perf,
        )
    index = out / "README.md"
    write_text_atomic(index, index_markdown(suites, records, version, digest_of(lines)))
    return written + [paper, index]
