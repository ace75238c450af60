"""Top-1 (mIoU for segmentation) against MACs, one figure per suite and dataset, like the accuracy–MACs
figures of the Batch-Shaping paper (Ehteshami Bejnordi et al. 2020): one marker per method family, the
Pareto front (no other point has at least the accuracy at no more MACs) drawn as a step line.

Gated models are placed at their mean executed MACs over the evaluation set, every other model at its
static MACs. Drawn with the Agg backend and written without the matplotlib version in the PNG's
metadata, so the same points give the same bytes.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.store.results import write_atomic  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


@dataclass(frozen=True)
class Point:
    label: str  # the leaderboard row's model label
    family: str  # Record.model_family: one marker per family
    macs: float  # executed MACs (gated) or static MACs, per sample
    executed: bool  # True when `macs` are executed MACs
    quality: float  # the headline metric (top-1 or mIoU, %), mean over seeds
    quality_std: float = 0.0


def plot_text(text: str) -> str:
    """`text` for a figure: one line, and a `$` shown as itself (not the start of matplotlib's mathtext,
    which a malformed formula would make fail)."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", str(text)).replace("$", r"\$")


def pareto_front(points: list[Point]) -> list[Point]:
    """Points no other point beats: none is better at no more MACs (or as good at fewer)."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p.macs, -p.quality, p.label)):
        if p.quality > best:
            front.append(p)
            best = p.quality
    return front


def plot_accuracy_macs(
    points: list[Point], title: str, path: str | Path, ylabel: str = "top-1 accuracy (%)"
) -> Path:
    """Write the figure to `path` (PNG, atomically) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    families = sorted({p.family for p in points})
    style = {f: (MARKERS[i % len(MARKERS)], COLOURS[i % len(COLOURS)]) for i, f in enumerate(families)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in families:
        marker, colour = style[family]
        mine = sorted((p for p in points if p.family == family), key=lambda p: (p.macs, p.label))
        for p in mine:
            ax.errorbar(
                p.macs / 1e6,
                p.quality,
                yerr=p.quality_std or None,
                fmt=marker,
                color=colour,
                markerfacecolor="none" if p.executed else colour,
                markersize=7,
                capsize=2,
            )
            ax.annotate(
                plot_text(p.label),
                (p.macs / 1e6, p.quality),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=6,
            )
        ax.plot([], [], marker, color=colour, label=plot_text(family))
    front = pareto_front(points)
    if len(front) > 1:
        ax.step(
            [p.macs / 1e6 for p in front],
            [p.quality for p in front],
            where="post",
            color="#444444",
            linewidth=1,
            linestyle="--",
            label="Pareto front",
        )
    if any(p.executed for p in points):
        ax.plot([], [], "o", color="#444444", markerfacecolor="none", label="executed MACs (gated)")
    ax.set_xlabel("MACs per image (millions; executed MACs for gated models)")
    ax.set_ylabel(ylabel)
    ax.set_title(plot_text(title))
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """The figure as a PNG without a timestamp, written whole under a temporary name of its own (any
    number of writers of the same page may run at once)."""
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return write_atomic(path, png.getvalue())
