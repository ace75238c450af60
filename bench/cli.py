"""The `bench` command: list, run, collect, status, measure, gates, leaderboard, submit, verify."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench import plugins, registry
from bench.data import DATASETS, DatasetNotFoundError
from bench.engine.config import PlanError, SuiteError, list_suites, load_suite
from bench.engine.env import require_device
from bench.measure.latency import MALLOC_ENV, malloc_tuned
from bench.store.results import ResultStore, StoreError
from bench.store.schema import METRIC_LABELS

USER_ERRORS = (SuiteError, registry.UnknownModelError, DatasetNotFoundError, StoreError, ValueError)


def _csv(cast):
    return lambda text: [cast(x) for x in text.split(",") if x]


def cmd_list(args: argparse.Namespace) -> None:
    print("suites:  ", ", ".join(list_suites()))
    print("datasets:", ", ".join(DATASETS))
    print("models:  ", ", ".join(registry.list_models(args.pattern)))


def _training_options(args: argparse.Namespace) -> dict:
    """What `bench run` and `bench verify` hand to the training of every run."""
    return {
        "data_root": args.data_root,
        "device": args.device,
        "work_dir": Path(args.work_dir) if args.work_dir else None,  # verify: None = a temporary folder
        "progress": not args.no_progress,
    }


DEFAULT_STORE, DEFAULT_LEADERBOARD = "results", "leaderboard"


def leaderboard_dir(args: argparse.Namespace) -> Path:
    """Where the leaderboard of `args.out` goes: `--leaderboard-dir`, else `leaderboard/` for the default
    store and `<store>/leaderboard/` for any other (a scratch store never overwrites the committed pages)."""
    if args.leaderboard_dir:
        return Path(args.leaderboard_dir)
    if Path(args.out).resolve() == Path(DEFAULT_STORE).resolve():
        return Path(DEFAULT_LEADERBOARD)
    return Path(args.out) / "leaderboard"


def cmd_run(args: argparse.Namespace) -> None:
    from bench.commands.runner import run_suite, summary_line
    from bench.report.leaderboard import write_leaderboard

    suite = load_suite(args.suite)
    store = ResultStore(args.out)
    board = leaderboard_dir(args)

    def on_record(record) -> None:
        print(summary_line(record), flush=True)
        write_leaderboard(store, board, suite.name)

    if args.launcher or args.dry_run:  # one submitit job per run (bench/commands/launch.py)
        return _launch(args, suite, store, board)
    require_device(args.device)
    jobs, threads = getattr(args, "jobs", 1), getattr(args, "threads_per_job", None)
    try:
        if jobs != 1 or threads is not None:  # --jobs N: N runs at once (bench/commands/jobs.py)
            from bench.commands.jobs import check_jobs, run_suite_jobs

            check_jobs(jobs, threads)
        if jobs == 1:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            records = run_suite(
                suite,
                models=args.models,
                seeds=args.seeds,
                epochs=args.epochs,
                store=store,
                resume=args.resume,
                only_missing=args.only_missing,
                on_record=on_record,
                **_training_options(args),
            )
        else:  # the workers' records arrive one by one: the leaderboard is written once, at the end
            records = run_suite_jobs(
                suite,
                jobs=jobs,
                threads_per_job=threads,
                models=args.models,
                seeds=args.seeds,
                epochs=args.epochs,
                store=store,
                resume=args.resume,
                only_missing=args.only_missing,
                plugin_files=args.plugin,
                on_record=lambda record: print(summary_line(record), flush=True),
                **_training_options(args),
            )
            write_leaderboard(store, board, suite.name)
    except PlanError as e:  # a model that cannot take the data: say which plugin it came from
        raise PlanError(plugins.name_plugins(str(e))) from None
    from bench.engine.distributed import shutdown, world

    is_main = world().is_main
    shutdown()  # every rank has finished its runs: leave the process group torchrun set up
    if not is_main:  # under torchrun, rank 0 stores, writes and reports
        return
    print(f"{len(records)} run(s) stored in {store.path(suite.name)}")
    print(f"leaderboard: {board / (suite.name + '.md')}")


def _launch(args: argparse.Namespace, suite, store: ResultStore, board: Path) -> int:
    from bench.commands.launch import ClusterOptions, launch_suite, parse_sbatch
    from bench.report.leaderboard import write_leaderboard

    if not args.launcher:
        raise PlanError("--dry-run shows what a launcher would submit: add --launcher slurm (or local)")
    if args.jobs != 1:
        raise PlanError(f"--jobs {args.jobs} and --launcher: each run is its own job; drop --jobs")
    gpus = args.gpus_per_run if args.gpus_per_run is not None else int(args.device == "cuda")
    options = ClusterOptions(
        launcher=args.launcher,
        partition=args.partition,
        gpus_per_run=gpus,
        nodes_per_run=args.nodes_per_run,
        time_min=args.time,
        array_parallelism=args.array_parallelism,
        sbatch=parse_sbatch(args.sbatch),
        wait=not args.no_wait,
    )
    failed, collected = launch_suite(
        suite,
        args.suite,
        options,
        store=store,
        work_dir=Path(args.work_dir),
        data_root=args.data_root,
        device=args.device,
        models=args.models,
        seeds=args.seeds,
        epochs=args.epochs,
        resume=args.resume,
        only_missing=args.only_missing,
        threads_per_job=args.threads_per_job,
        plugin_files=args.plugin,
        dry_run=args.dry_run,
    )
    if collected is not None:
        _report_collected(collected, store)
        write_leaderboard(store, board, suite.name)
        print(f"leaderboard: {board / (suite.name + '.md')}")
    if failed:
        print(f"{failed} job(s) failed; `bench status --suite {args.suite}` lists them with their logs")
    return 1 if failed else 0


def _report_collected(collected, store: ResultStore) -> None:
    for path, reason in collected.set_aside:
        print(f"set aside {path}: {reason}")
    if collected.version is not None:
        print(
            f"collected {len(collected.records)} record(s) as store version {collected.version} in {store.runs}"
        )
    elif collected.already_stored:
        print(f"{len(collected.already_stored)} incoming record(s) were already stored; nothing appended")


def cmd_collect(args: argparse.Namespace) -> int:
    from bench.report.leaderboard import write_leaderboard
    from bench.store.incoming import collect

    store = ResultStore(args.out)
    collected = collect(store, args.suite)
    _report_collected(collected, store)
    if not (collected.version or collected.set_aside or collected.already_stored):
        print(f"nothing to collect in {store.runs / 'incoming'}")
    board = leaderboard_dir(args)
    for suite in sorted({r.suite for r in collected.records}):
        write_leaderboard(store, board, suite)
        print(f"leaderboard: {board / (suite + '.md')}")
    return 1 if collected.set_aside else 0


def cmd_status(args: argparse.Namespace) -> None:
    from bench.commands.status import format_matrix, suite_matrix

    suite = load_suite(args.suite)
    cells = suite_matrix(
        suite,
        ResultStore(args.out),
        Path(args.work_dir),
        models=args.models,
        seeds=args.seeds,
        epochs=args.epochs,
    )
    print(format_matrix(cells))


def cmd_measure(args: argparse.Namespace) -> None:
    from bench.commands.measure import cmd_measure as measure

    measure(args)


def cmd_leaderboard(args: argparse.Namespace) -> None:
    from bench.report.leaderboard import write_leaderboard
    from bench.store.incoming import collect

    store = ResultStore(args.out)
    _report_collected(collect(store, args.suite), store)  # the records cluster jobs left, first
    for path in write_leaderboard(store, leaderboard_dir(args), args.suite, args.at):
        print(path)


def cmd_submit(args: argparse.Namespace) -> None:
    from bench.report.leaderboard import write_leaderboard
    from bench.store.submit import SubmissionError, check_submission, submit

    store = ResultStore(args.out)
    store.paper_files()  # a broken paper file fails here, not after the records are stored
    if args.check:
        records, problems = check_submission(args.file, store, args.submitter, args.code_url)
        for problem in problems:
            print(f"{args.file} {problem}")
        if problems:
            raise SubmissionError(
                f"{args.file}: {len(problems)} problem(s), listed above; nothing was stored"
            )
        print(f"{args.file}: all {len(records)} record(s) would be accepted")
        return
    board = leaderboard_dir(args)

    def render(trial: ResultStore, suites: list[str]) -> None:  # the records, rendered before stored
        with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
            for suite in suites:
                write_leaderboard(trial, tmp, suite)

    version, records = submit(args.file, store, args.submitter, args.code_url, render=render)
    for r in records:
        print(
            f"accepted {r.record_id}: {r.model} · {r.dataset} · seed {r.seed} · "
            f"{METRIC_LABELS[r.metrics.quality_metric]} {r.metrics.quality:.2f}%"
        )
    print(f"{len(records)} record(s) stored as store version {version} in {store.runs}")
    for suite in sorted({r.suite for r in records}):
        write_leaderboard(store, board, suite)
        print(f"leaderboard: {board / (suite + '.md')}")


def cmd_verify(args: argparse.Namespace) -> int:
    from bench.commands.verify import verify
    from bench.report.leaderboard import write_leaderboard

    require_device(args.device)
    store = ResultStore(args.out)
    store.paper_files()  # a broken paper file fails here, not after the re-run is stored
    outcome = verify(
        args.record_id,
        store,
        tolerance=args.tolerance,
        suite_path=args.suite,
        submitter=args.submitter,
        **_training_options(args),
    )
    from bench.engine.distributed import world

    if not world().is_main:  # under torchrun, rank 0 reports and writes
        return 0 if outcome.verified else 1
    print(outcome.summary())
    if not outcome.verified:
        return 1
    board = leaderboard_dir(args)
    write_leaderboard(store, board, outcome.record.suite)
    print(f"leaderboard: {board / (outcome.record.suite + '.md')}")
    return 0


def cmd_gates(args: argparse.Namespace) -> None:
    from bench.commands.measure import load_checkpoint
    from bench.data import load_dataset
    from bench.measure.report import gate_statistics, is_gated
    from bench.report.gate_figures import plot_gate_stats

    data = load_dataset(args.dataset, args.data_root)
    model = registry.create_model(args.model, data.num_classes, data.in_chans)
    if not is_gated(model):
        raise ValueError(f"model {args.model!r} has no gates; `bench gates` is for gated models")
    if args.checkpoint:  # one line for a missing, damaged or foreign file, or the weights of another model
        load_checkpoint(model, args.checkpoint, args.model)
    executed, gate_macs, gates = gate_statistics(model, data, args.batch_size, args.device)
    print(f"{args.model} on {args.dataset} ({len(data.test_labels)} evaluation images)")
    print(
        f"executed MACs per image: mean {executed['mean'] / 1e6:.2f}M, min {executed['min'] / 1e6:.2f}M, "
        f"max {executed['max'] / 1e6:.2f}M; gate network {gate_macs / 1e6:.2f}M"
    )
    print(
        f"gates: {gates['gates']} — always on {gates['always_on']}, always off {gates['always_off']}, "
        f"input-dependent {gates['input_dependent']}"
    )
    path = plot_gate_stats(
        gates, f"{args.model} · {args.dataset}", Path(args.out) / f"{args.model}-{args.dataset}.png"
    )
    print(f"figure: {path}")


LEADERBOARD_HELP = (
    "where the leaderboard is written (default: leaderboard/ for results/, else OUT/leaderboard/)"
)
PLUGIN_HELP = "a .py file that registers models (repeatable); installed plugins load by themselves"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="ChannelBench: benchmark channel-level CNN methods."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered suites, datasets and models")
    p.add_argument("pattern", nargs="?", default="*", help="glob over model names, e.g. 'resnet*'")
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="train, evaluate, measure and store every run of a suite")
    p.add_argument("--suite", required=True, help="a built-in suite name (see `bench list`) or a .toml path")
    p.add_argument("--models", type=_csv(str), help="comma-separated subset of the suite's models")
    p.add_argument("--seeds", type=_csv(int), help="comma-separated seeds instead of the suite's")
    p.add_argument("--epochs", type=int, help="override the suite's number of epochs")
    p.add_argument("--data-root", help="folder holding the datasets (else $BENCH_DATA, then system folders)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument("--leaderboard-dir", help=LEADERBOARD_HELP)
    p.add_argument("--work-dir", default="runs", help="checkpoints go here (default: runs/)")
    p.add_argument("--resume", action="store_true", help="continue each run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, each in its own process (CPU: sharing the cores; CUDA: one GPU each); default 1",
    )
    p.add_argument(
        "--threads-per-job",
        type=int,
        help="torch threads of each run (default: CPU cores // --jobs)",
    )
    p.add_argument(
        "--only-missing",
        action="store_true",
        help="run only the runs not done (no measured record in the store or the incoming folder, "
        "and under --launcher no job running or waiting)",
    )
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    cluster = p.add_argument_group("cluster (one submitit job per run; see the README's cluster section)")
    cluster.add_argument("--launcher", choices=("slurm", "local"), help="submit each run as a job")
    cluster.add_argument("--partition", help="Slurm partition")
    cluster.add_argument(
        "--gpus-per-run",
        type=int,
        help="GPUs per node of each run, one rank each (default: 1 with --device cuda)",
    )
    cluster.add_argument("--nodes-per-run", type=int, default=1, help="nodes of each run (default: 1)")
    cluster.add_argument(
        "--time", type=int, default=240, help="time limit of a job in minutes (default: 240)"
    )
    cluster.add_argument(
        "--array-parallelism", type=int, default=16, help="jobs of the array running at once (default: 16)"
    )
    cluster.add_argument(
        "--sbatch", action="append", metavar="KEY=VALUE", help="an extra sbatch parameter (repeatable)"
    )
    cluster.add_argument("--dry-run", action="store_true", help="print the job array and its sbatch lines")
    cluster.add_argument("--no-wait", action="store_true", help="Slurm: return once submitted")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("collect", help="store the records cluster jobs left in the incoming folder")
    p.add_argument("--suite", help="only this suite's records (default: every suite's)")
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument("--leaderboard-dir", help=LEADERBOARD_HELP)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("status", help="the state of every run of a suite: done, failed, running, pending")
    p.add_argument("--suite", required=True, help="a built-in suite name or a .toml path")
    p.add_argument("--models", type=_csv(str), help="comma-separated subset of the suite's models")
    p.add_argument("--seeds", type=_csv(int), help="comma-separated seeds instead of the suite's")
    p.add_argument("--epochs", type=int, help="the --epochs the runs were launched with")
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument(
        "--work-dir", default="runs", help="the work dir the runs were launched with (default: runs/)"
    )
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("measure", help="params, static/executed/gate MACs and latency of models, untrained")
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or more registered models, side by side")
    p.add_argument(
        "--dataset", default="fashion_mnist", help="shapes and evaluation images (default: %(default)s)"
    )
    p.add_argument("--data-root")
    p.add_argument(
        "--batch-sizes", type=_csv(int), default=[1, 64], help="latency batch sizes (default: 1,64)"
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument(
        "--eval-images", type=int, default=500, help="evaluation images for executed MACs (default: 500)"
    )
    p.add_argument("--checkpoint", help="weights to load (runs/.../last.pt or a state_dict); one model only")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed runs per batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before timing")
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("gates", help="gate statistics and figures of a gated model on a dataset")
    p.add_argument("model")
    p.add_argument("--checkpoint", help="a checkpoint of `bench run` (runs/.../last.pt) or a state_dict")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--data-root")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", default="gates", help="folder for the figure (default: gates/)")
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    p.set_defaults(func=cmd_gates)

    p = sub.add_parser("leaderboard", help="regenerate the markdown leaderboard from the store")
    p.add_argument(
        "--suite", help="only this suite (default: every built-in suite and every suite in the store)"
    )
    p.add_argument("--at", type=int, help="rebuild the leaderboard as it was at this store version")
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument("--leaderboard-dir", help=LEADERBOARD_HELP)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("submit", help="validate a JSONL file of result records and store them all, or none")
    p.add_argument("file", help="one JSON record per line (what `bench run --out DIR` writes is accepted)")
    p.add_argument(
        "--submitter",
        help="your name or team (overrides the records' submitter): up to 64 letters, digits, space . _ @ + -",
    )
    p.add_argument("--code-url", help="link to the code that produced the records (overrides code_url)")
    p.add_argument("--check", action="store_true", help="list every problem of the file and store nothing")
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument("--leaderboard-dir", help=LEADERBOARD_HELP)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "verify", help="re-run a stored record's configuration and mark it verified if it holds"
    )
    p.add_argument("record_id", help="the record's id (or a unique prefix of at least 6 characters)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="allowed |Δ| of top-1 (mIoU for segmentation) in points (default: 1.0)",
    )
    p.add_argument("--suite", help="the suite file, for a record of a suite that is not built in")
    p.add_argument("--data-root", help="folder holding the datasets (else $BENCH_DATA, then system folders)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--work-dir", help="keep the re-run's checkpoint here (default: a temporary folder)")
    p.add_argument("--submitter", help="who verified it (default: the user name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", default="results", help="the result store (default: results/)")
    p.add_argument("--leaderboard-dir", help=LEADERBOARD_HELP)
    p.add_argument("--plugin", action="append", metavar="PATH", help=PLUGIN_HELP)
    p.set_defaults(func=cmd_verify)

    from bench.commands import perf  # `bench perf train | gated | suite`

    perf.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plugins.load_files(getattr(args, "plugin", None))
        code = args.func(args)
    except USER_ERRORS as e:
        # under torchrun every rank reads the same suite and builds the same plan: rank 0 reports those
        # errors once; anything else (data missing on one node, say) is reported by each rank, named
        rank, ranks = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if rank == 0 or not isinstance(e, (SuiteError, registry.UnknownModelError, PlanError)):
            where = f" (rank {rank} of {ranks})" if ranks > 1 else ""
            print(f"bench {args.command}: error{where}: {e}", file=sys.stderr)
        return 2
    return code or 0


def entry() -> None:
    """Console entry point. Timings need glibc's malloc thresholds set before the process starts
    (see the README's "What the numbers mean"): set them and start again, once."""
    if not malloc_tuned() and os.name == "posix" and not os.environ.get("BENCH_NO_REEXEC"):
        env = {**os.environ, **{k: "1000000000" for k in MALLOC_ENV}, "BENCH_NO_REEXEC": "1"}
        os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], env)
    sys.exit(main())
