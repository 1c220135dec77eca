"""Evaluation and training plots as PNG files (matplotlib, Agg canvas; pyplot's global state is not used).

Each function draws one figure, writes it to `path` (parent folders created) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from models.metrics import FROC_FP_RATES

_DPI = 110


def _save(fig: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def froc_plot(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]],
    path: Path | str,
    *,
    title: str = "FROC",
    fp_rates: Sequence[float] = FROC_FP_RATES,
) -> Path:
    """FROC curves: sensitivity (0..1) against average false positives per scan (log2 x axis, 1/16 to 16).

    `curves` maps a label (say "nodules >= 4 mm") to (false positives per scan, sensitivity, CPM) of a curve's
    corner points; each curve is drawn as LUNA16 interpolates it, with its sensitivity at the seven LUNA16
    rates marked, and the CPMs go in the title.
    """
    if not curves:
        raise ValueError("froc_plot needs at least one curve, got none")
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    x_lo, x_hi = min(fp_rates) / 2, max(fp_rates) * 2
    xs = np.geomspace(x_lo, x_hi, 400)
    cpms = []
    styles = ("-", "--", ":", "-.")
    for n, (label, (fps, sens, cpm)) in enumerate(curves.items()):
        fps_a, sens_a = np.asarray(fps, dtype=float), np.asarray(sens, dtype=float)
        ys = np.interp(xs, fps_a, sens_a)
        (line,) = ax.plot(xs, ys, styles[n % len(styles)], lw=2, label=f"{label} (CPM {cpm:.3f})")
        marks = np.interp(np.asarray(fp_rates, dtype=float), fps_a, sens_a)
        ax.plot(fp_rates, marks, "o", color=line.get_color(), ms=5)
        cpms.append(f"{label}: {cpm:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(list(fp_rates), [f"{r:g}" for r in fp_rates])
    ax.set_xlabel("average false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="lower right")
    ax.set_title(f"{title}\nCPM {'; '.join(cpms)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def roc_plot(fpr: Sequence[float], tpr: Sequence[float], auc: float, path: Path | str, *, title: str = "ROC") -> Path:
    """ROC curve (true positive rate against false positive rate, both 0..1) with its AUC and the chance line."""
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, lw=2, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"{title} (AUC {auc:.3f})", fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.4)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix_plot(
    cm: np.ndarray | Sequence[Sequence[int]],
    labels: Sequence[str],
    path: Path | str,
    *,
    title: str = "confusion matrix",
) -> Path:
    """The matrix (rows true class, columns predicted class) as an image, each cell annotated with its count."""
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not fit {len(labels)} labels {list(labels)}")
    n = len(labels)
    fig = Figure(figsize=(1.3 * n + 2.5, 1.1 * n + 2.0))
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), [str(label) for label in labels], rotation=30, ha="right")
    ax.set_yticks(range(n), [str(label) for label in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    high = counts.max() if counts.size else 0
    for i in range(n):
        for j in range(n):
            colour = "white" if high and counts[i, j] > high / 2 else "black"
            ax.text(j, i, f"{counts[i, j]:g}", ha="center", va="center", color=colour)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def training_curves_plot(history: Sequence[Mapping[str, Any]], path: Path | str, *, title: str = "training") -> Path:
    """Per epoch: the training loss (left, log scale when positive) and every other numeric metric (right).

    `history` is a list of dicts with an "epoch" key, as a registry entry's ``metrics.history``; keys with
    "loss" in their name go on the left panel.
    """
    if not history:
        raise ValueError("training_curves_plot needs a non-empty history")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    keys = sorted({k for row in history for k, v in row.items() if k != "epoch" and isinstance(v, int | float)})
    loss_keys = [k for k in keys if "loss" in k]
    other_keys = [k for k in keys if "loss" not in k]
    fig = Figure(figsize=(10, 4))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for axis, names in ((left, loss_keys), (right, other_keys)):
        for key in names:
            values = [row.get(key, math.nan) for row in history]
            axis.plot(epochs, values, marker=".", label=key)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(True, alpha=0.4)
        if names:
            axis.legend(fontsize=8)
    all_loss = [row[k] for row in history for k in loss_keys if isinstance(row.get(k), int | float)]
    if all_loss and min(all_loss) > 0:
        left.set_yscale("log")
    left.set_title("loss", fontsize=10)
    right.set_title("validation metrics", fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def diameter_scatter_plot(
    true_mm: Sequence[float],
    measured_mm: Sequence[float],
    path: Path | str,
    *,
    mae_mm: float | None = None,
    title: str = "diameter",
) -> Path:
    """Measured against true mean diameter (mm), with the identity line (and the MAE in the title when given)."""
    t = np.asarray(true_mm, dtype=float)
    m = np.asarray(measured_mm, dtype=float)
    if t.shape != m.shape:
        raise ValueError(f"{t.shape} true values but {m.shape} measured values")
    fig = Figure(figsize=(5.2, 5.0))
    ax = fig.add_subplot()
    ax.scatter(t, m, s=18, alpha=0.8)
    high = max(float(np.nanmax(t)) if t.size else 0.0, float(np.nanmax(m)) if m.size else 0.0, 1.0) * 1.05
    ax.plot([0, high], [0, high], "--", color="grey", lw=1, label="identity")
    ax.set_xlim(0, high)
    ax.set_ylim(0, high)
    ax.set_aspect("equal")
    ax.set_xlabel("true mean diameter (mm)")
    ax.set_ylabel("measured diameter (mm)")
    ax.grid(True, alpha=0.4)
    ax.legend(loc="upper left")
    summary = f"MAE {mae_mm:.2f} mm, n={t.size}" if mae_mm is not None and not math.isnan(mae_mm) else f"n={t.size}"
    ax.set_title(f"{title}\n{summary}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def vdt_plot(
    lesions: Sequence[tuple[float, float, tuple[float, float | None] | None]],
    path: Path | str,
    *,
    title: str = "volume doubling time",
    tolerance: float = 0.25,
) -> Path:
    """Measured VDT (days, y) against the true VDT (days, x) on log axes, one point per lesion: (true, measured,
    range), the range (shortest, longest; longest None: growth not shown) drawn as a bar, open upwards with an
    arrow when it has no longest. The identity line and the band of ``tolerance`` (a share of the truth) around it
    are drawn; points within the band are filled, the others hollow."""
    if not lesions:
        raise ValueError("vdt_plot needs at least one lesion, got none")
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.add_subplot()
    values = [v for true, measured, _ in lesions for v in (true, measured)]
    low, high = min(values) / 1.6, max(values) * 1.6
    xs = np.geomspace(low, high, 50)
    ax.fill_between(xs, xs * (1 - tolerance), xs * (1 + tolerance), color="tab:green", alpha=0.15, lw=0)
    ax.plot(xs, xs, "-", color="tab:green", lw=1, label=f"truth, within {tolerance:.0%} shaded")
    within = 0
    for true, measured, vdt_range in lesions:
        inside = abs(measured - true) <= tolerance * true
        within += inside
        colour = "tab:blue" if inside else "tab:red"
        if vdt_range is not None:
            shortest, longest = vdt_range
            ax.plot([true, true], [shortest, longest if longest is not None else high], "-", color=colour, lw=0.8)
            if longest is None:
                ax.plot([true], [high], "^", color=colour, ms=4)
        ax.plot([true], [measured], "o", ms=4, color=colour, mfc=colour if inside else "white")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high * 1.05)
    ax.set_xlabel("true VDT (days)")
    ax.set_ylabel("measured VDT (days), bar: the range the volumes allow")
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="upper left")
    ax.set_title(f"{title}\n{within} of {len(lesions)} within {tolerance:.0%}; arrow: growth not shown", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
