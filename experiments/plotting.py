"""Shared output helpers of the experiment scripts: matplotlib figures (headless backend, one
style, one save) and CSV tables."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; no display on CI or the device machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: One look for every figure of the project.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
}
# Set once here: labels and legends read the style when they are created, after subplots().
plt.rcParams.update(STYLE)
#: Line colour, marker and style of each method, so a method looks the same in every figure
#: (ao dashed: it often ties with fp, drawn over it).
METHOD_STYLE = {
    "fp": ("C0", "o", "-"), "fp-makespan": ("C9", "s", "--"),
    "fp-paper": ("C8", "D", ":"), "fp-energy": ("C1", "P", "-."),
    "fp-no-upload": ("tab:olive", "X", "--"), "ao": ("C1", "s", "--"),
    "alpha-only": ("C2", "^", "-"),
    "resource-only": ("C3", "v", "-"), "greedy": ("C4", "D", "-"),
    "random-association": ("C5", "x", "-"), "edge-only": ("C6", "<", "-"),
    "local-only": ("C7", ">", "-"), "exhaustive": ("k", "*", "-"),
}


def subplots(nrows: int = 1, ncols: int = 1, *, panel: tuple[float, float] = (3.4, 2.6),
             **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure of ``nrows x ncols`` panels of ``panel`` inches each; axes always 2-D."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                             squeeze=False, layout="constrained", **kwargs)
    return fig, axes


def method_kwargs(method: str) -> dict:
    """Colour, marker, line style and label of a method's line (grey for unknown methods)."""
    color, marker, linestyle = METHOD_STYLE.get(method, ("0.5", ".", "-"))
    return {"color": color, "marker": marker, "linestyle": linestyle, "label": method}


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a 150-dpi PNG, close it (figures are many), return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def write_csv(rows: list[dict], path: Path) -> Path:
    """Write dict rows (all with the same keys) as a CSV (an empty file for no rows)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    return path
