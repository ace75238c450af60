"""Figures of gate statistics, in the spirit of GaterNet's Figures 3–5 (Chen et al. 2019).

Left: per gated unit, how many of its gates are always on, always off and input-dependent over the
evaluation set. Right: the distribution over evaluation images of the share of gates that are open.
Drawn from a record's `gates` summary, so they can be regenerated from the store alone.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.report.plots import plot_text, save_figure  # noqa: E402

COLOURS = {"always on": "#2b8cbe", "input-dependent": "#fdae61", "always off": "#bdbdbd"}


def classify(pass_rate: list[float]) -> dict[str, int]:
    return {
        "always on": sum(r == 1 for r in pass_rate),
        "input-dependent": sum(0 < r < 1 for r in pass_rate),
        "always off": sum(r == 0 for r in pass_rate),
    }


def plot_gate_stats(gates: dict, title: str, path: str | Path) -> Path:
    """Write the two-panel figure for one run's gate summary to `path` (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    units = list(gates["pass_rate"])
    counts = [classify(gates["pass_rate"][u]) for u in units]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2, 1]})
    bottom = [0] * len(units)
    for kind, colour in COLOURS.items():
        values = [c[kind] for c in counts]
        left.bar(range(len(units)), values, bottom=bottom, color=colour, label=kind)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    left.set_xticks(
        range(len(units)), [plot_text(u).replace("layer", "L") for u in units], rotation=90, fontsize=6
    )
    left.set_ylabel("gates")
    left.set_title("gates per unit over the evaluation set")
    left.legend(fontsize=8)
    right.hist([100 * a for a in gates["active_fraction_per_sample"]], bins=30, color="#2b8cbe")
    right.set_xlabel("open gates per image (%)")
    right.set_ylabel("images")
    right.set_title("open gates per image")
    fig.suptitle(plot_text(title))
    fig.tight_layout()
    return save_figure(fig, path)
