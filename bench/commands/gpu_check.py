"""`make gpu-check`: on one GPU, prove the CUDA paths and measure them, within a time budget (570 s by
default, under 10 minutes: on an H200 the steps before the suite took 35 s of tests, 26 s of perf train
at 50 steps, 160 s of perf gated and 146 s of perf jobs; one 15-epoch seed of fashion_gpu took 126 s).

    python -m bench.commands.gpu_check [--data-root DIR] [--models resnet20] [--seeds 0,1,2]
                                       [--epochs N] [--budget 570]

In order: the CUDA tests (`pytest -m cuda`); `bench perf train` on the GPU (float32, AMP + channels_last,
and that in the fast mode: what determinism costs); `bench perf gated` on the GPU at batch 1 and 64;
`bench perf jobs` on the GPU (runs per hour of `bench run --jobs 1` and `--jobs 4`, short runs into
scratch stores whose top-1 values must agree); then the `fashion_gpu` suite (the fashion suite's
schedule) on the GPU, one seed at a time for as long as the time budget allows (a seed that would not fit
is left out and said so). Writes results/perf/gpu-*.json (one per benchmark, plus gpu-check.json, the
summary; the tests' output in gpu-tests.log), the suite's records into the store under results/ (and its
leaderboard page), and prints one summary table. Without CUDA it prints one line and exits 1 at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

NO_GPU = (
    "gpu-check: no CUDA GPU here (torch.cuda.is_available() is False; torch {version}, CUDA build {cuda}); "
    "run it on a GPU node"
)
GATED_MODELS = ("aig_resnet20", "gaternet_resnet20", "bas_resnet20")


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="folder holding Fashion-MNIST (else $BENCH_DATA, then system folders)")
    p.add_argument(
        "--suite", default="fashion_gpu", help="the suite trained on the GPU (default: fashion_gpu)"
    )
    p.add_argument("--models", type=_csv(str), default=["resnet20"], help="the suite's models to train")
    p.add_argument("--seeds", type=_csv(int), default=[0, 1, 2], help="seeds, run in turn while time lasts")
    p.add_argument("--epochs", type=int, help="override the suite's epochs (default: the suite's own)")
    p.add_argument(
        "--jobs",
        type=_csv(int),
        default=[1, 4],
        help="--jobs values whose throughput is measured (default: 1,4)",
    )
    p.add_argument("--jobs-epochs", type=int, default=2, help="epochs of each throughput run (default: 2)")
    p.add_argument("--budget", type=float, default=570.0, help="seconds for the whole check (default: 570)")
    p.add_argument("--out", default="results", help="the result store; perf JSON goes to OUT/perf")
    p.add_argument("--skip-tests", action="store_true", help="leave out the CUDA tests")
    return p.parse_args(argv)


class Summary:
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, step: str, status: str, seconds: float, result: str) -> None:
        self.rows.append({"step": step, "status": status, "seconds": round(seconds, 1), "result": result})
        print(f"gpu-check: {step}: {status} ({seconds:.0f} s) {result}", flush=True)

    def table(self) -> str:
        from tabulate import tabulate

        return tabulate(self.rows, headers="keys", tablefmt="github")


def _timed(summary: Summary, step: str, fn) -> None:
    start = time.perf_counter()
    try:
        status, result = fn()
    except Exception as e:  # one failed step is reported and the check goes on
        status, result = "failed", f"{type(e).__name__}: {e}"[:200]
    summary.add(step, status, time.perf_counter() - start, result)


def run_tests(log: Path, timeout: float) -> tuple[str, str]:
    """pytest -m cuda, its output into `log` as it runs (a test that hangs still leaves what came before)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rs", "-p", "no:cacheprovider"]
    with log.open("w") as out:
        try:
            done = subprocess.run(
                [*command, "tests/test_cuda.py"], stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return "timed out", f"not done in {timeout:.0f} s; output so far in {log}"
    text = log.read_text()
    print(text[-4000:], flush=True)
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
    return ("passed" if done.returncode == 0 else "failed"), last[0].strip("= ") + f" -> {log}"


def perf_train(out: Path, data_root: str | None, amp: bool, deterministic: bool = True) -> tuple[str, str]:
    from bench.commands.perf import bench_train, write_result

    r = bench_train(
        "resnet20",
        data_root=data_root,
        amp=amp,
        channels_last=amp,
        deterministic=deterministic,
        device="cuda",
        repeats=3,
        steps=200,  # 50 steps (0.6 s a repeat on an H200) were too short to time
    )
    name = "resnet20" + ("-amp-channels_last" if amp else "") + ("" if deterministic else "-fast")
    path = write_result(r, out, "gpu-train", name)
    return "measured", (
        f"harness {r['harness_median']:.0f} img/s, bare {r['bare_median']:.0f} img/s, "
        f"ratio {r['ratio_median']:.3f} -> {path}"
    )


def perf_gated(out: Path, model: str, batch_size: int) -> tuple[str, str]:
    from bench.commands.perf import bench_gated, write_result

    r = bench_gated(model, batch_size=batch_size, device="cuda", min_run_time_s=0.3, repeats=3)
    path = write_result(r, out, "gpu-gated", f"{model}-bs{batch_size}")
    return "measured", (
        f"MAC ratio {r['mac_ratio']:.2f}, realised {r['realised_ratio']:.2f}, "
        f"max |sparse - dense| {r['max_abs_diff_sparse_vs_dense']:.1e} -> {path}"
    )


def run_suite(args: argparse.Namespace, seed: int, timeout: float) -> tuple[str, str]:
    command = [sys.executable, "-m", "bench", "run", "--suite", args.suite, "--device", "cuda"]
    command += ["--models", ",".join(args.models), "--seeds", str(seed), "--out", args.out, "--no-progress"]
    command += ["--epochs", str(args.epochs)] if args.epochs else []
    command += ["--data-root", args.data_root] if args.data_root else []
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return (
            "timed out",
            f"seed {seed} did not finish in {timeout:.0f} s (`bench run --resume` continues it)",
        )
    print(out.stdout[-3000:], out.stderr[-2000:], sep="\n", flush=True)
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    return ("stored" if out.returncode == 0 else "failed"), (lines[-1] if lines else out.stderr[-200:])


def throughput(args: argparse.Namespace, perf_dir: Path, timeout: float) -> tuple[str, str]:
    """`bench perf jobs` on the GPU: runs per hour of `bench run --jobs N` for each N (--jobs-epochs
    runs of the first model), their top-1 values compared across N."""
    from bench.commands.perf import bench_jobs, write_result

    r = bench_jobs(
        args.suite,
        model=args.models[0],
        jobs=args.jobs,
        epochs=args.jobs_epochs,
        data_root=args.data_root,
        device="cuda",
        timeout=timeout,
    )
    path = write_result(r, perf_dir, "gpu-jobs", Path(args.suite).stem)
    rates = ", ".join(f"--jobs {row['jobs']}: {row['runs_per_hour']:.0f} runs/h" for row in r["rows"])
    same = r["top1_identical_across_jobs"]
    return ("measured" if same else "failed"), f"{rates}; top-1 identical across N: {same} -> {path}"


def seed_estimate(args: argparse.Namespace, perf_dir: Path) -> float:
    """Seconds one seed of the suite will take, from the throughput step's --jobs 1 runs scaled by epochs
    (an over-estimate: a run's fixed costs scale too); 0 where that step measured nothing."""
    from bench.engine.config import load_suite

    try:
        measured = json.loads((perf_dir / f"gpu-jobs-{Path(args.suite).stem}.json").read_text())
        one = next(row for row in measured["rows"] if row["jobs"] == 1)
    except (OSError, ValueError, KeyError, StopIteration):
        return 0.0
    epochs = args.epochs or load_suite(args.suite).train.epochs
    return one["wall_s"] / one["runs"] * epochs / measured["epochs_per_run"] * len(args.models)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not torch.cuda.is_available():
        print(NO_GPU.format(version=torch.__version__, cuda=torch.version.cuda), flush=True)
        return 1
    start = time.perf_counter()
    left = lambda: args.budget - (time.perf_counter() - start)  # noqa: E731
    perf_dir = Path(args.out) / "perf"
    summary = Summary()
    print(
        f"gpu-check on {torch.cuda.get_device_name()}: torch {torch.__version__}, CUDA {torch.version.cuda}"
    )
    if not args.skip_tests:
        _timed(
            summary, "pytest -m cuda", lambda: run_tests(perf_dir / "gpu-tests.log", max(60.0, left() - 300))
        )
    for amp, deterministic in ((False, True), (True, True), (True, False)):
        step = "perf train resnet20" + (" amp+channels_last" if amp else "")
        step += "" if deterministic else " fast (not deterministic)"
        _timed(summary, step, lambda a=amp, d=deterministic: perf_train(perf_dir, args.data_root, a, d))
    for model in GATED_MODELS:
        for batch in (1, 64):
            _timed(
                summary, f"perf gated {model} bs{batch}", lambda m=model, b=batch: perf_gated(perf_dir, m, b)
            )
    step = f"throughput bench run --jobs {','.join(map(str, args.jobs))} ({args.jobs_epochs} epochs a run)"
    _timed(summary, step, lambda: throughput(args, perf_dir, timeout=max(60.0, left() / 2)))
    seed_s = seed_estimate(args, perf_dir)  # then the last seed's own time
    epochs = f"{args.epochs} epochs" if args.epochs else "the suite's epochs"
    for seed in args.seeds:
        step = f"{args.suite} {','.join(args.models)} seed {seed} ({epochs})"
        if left() < 30 or seed_s > left():
            summary.add(step, "left out", 0.0, f"needs ~{seed_s:.0f} s, {left():.0f} s of the budget left")
            continue
        t0 = time.perf_counter()
        _timed(summary, step, lambda seed=seed: run_suite(args, seed, timeout=max(30.0, left())))
        seed_s = time.perf_counter() - t0
    total = time.perf_counter() - start
    perf_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "device_name": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "total_s": round(total, 1),
        "steps": summary.rows,
    }
    (perf_dir / "gpu-check.json").write_text(json.dumps(record, indent=2) + "\n")
    print()
    print(summary.table())
    print(f"\ngpu-check: {total:.0f} s in all; summary in {perf_dir / 'gpu-check.json'}")
    failed = [r for r in summary.rows if r["status"] in ("failed", "timed out")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
