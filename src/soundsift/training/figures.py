"""The report's figures, drawn on matplotlib's Agg canvas (headless; pyplot's global state is left
alone) and saved as PNG and SVG: training curves, the paper's top-50 correspondence figure, calibration.

Each function takes plain values (lists, arrays) and returns a Figure; ``save_figure`` writes it.
matplotlib is the ``plots`` extra, imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from soundsift.atomic import atomic_write
from soundsift.errors import require

FIGURE_FORMATS = ("png", "svg")
TOP = 50
TRUE, FALSE, OWN = "#2a9d5c", "#c8c8c8", "#1f2f4a"
PLOTS = ("matplotlib", "pip install 'soundsift[plots]'", "soundsift report (plots)")


# ---------------------------------------------------------------------------------------- figures
def _figure(*args: Any, **kwargs: Any):
    """A matplotlib Figure on the Agg canvas (headless; pyplot's global state stays untouched)."""
    require(*PLOTS)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(*args, layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.svg``, each written atomically."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FIGURE_FORMATS:
        paths.append(atomic_write(Path(f"{stem}.{fmt}"), lambda tmp, fmt=fmt: fig.savefig(
            tmp, format=fmt, dpi=150 if fmt == "png" else None, bbox_inches="tight")))
    return paths


def curves_figure(name: str, epochs: list[dict[str, Any]], metrics: dict[str, Any], losses_from: str = ""):
    """Loss terms (left) and validation mAP@10, R@1, R@10 (right, percent) per epoch of one run:
    ``epochs`` as in history.json, ``metrics`` its metrics.json (the selected epoch, test mAP@10)."""
    fig = _figure(figsize=(10, 3.6))
    loss_ax, val_ax = fig.subplots(1, 2)
    numbers = [e["epoch"] + 1 for e in epochs]
    terms = sorted({k for e in epochs for k in e.get("train", {})}, key=lambda k: (k != "loss", k))
    if len(terms) == 2 and "loss" in terms:  # one loss term: the total is the same line
        terms.remove("loss")
    for key in terms:
        pts = [(e["epoch"] + 1, e["train"][key]) for e in epochs if key in e.get("train", {})]
        loss_ax.plot(*zip(*pts), marker="o", ms=3, label={"loss": "total loss"}.get(key, key))
    loss_ax.set(xlabel="epoch", ylabel="mean over the epoch's steps", title=f"training loss ({losses_from})")
    if terms:
        loss_ax.legend(fontsize=8)
    else:
        loss_ax.text(0.5, 0.5, "no per-epoch losses saved", ha="center", va="center", transform=loss_ax.transAxes)
    for key, style in (("mAP@10", "-"), ("R@1", ":"), ("R@10", "--")):
        pts = [(e["epoch"] + 1, 100 * e["val"][key]) for e in epochs if key in e.get("val", {})]
        if pts:
            val_ax.plot(*zip(*pts), style, marker="o" if key == "mAP@10" else None, ms=3, label=f"val {key}")
    best = metrics.get("best_epoch")
    if best is not None:
        val_ax.axvline(best + 1, color="gray", lw=0.8, ls="-.", label=f"selected (epoch {best + 1})")
    test = (metrics.get("test") or {}).get("mAP@10")
    title = "validation" + (f" (test mAP@10 of the selected model: {100 * test:.2f})" if test is not None else "")
    val_ax.set(xlabel="epoch", ylabel="percent", title=title)
    if 0 < len(numbers) <= 20:
        for ax in (loss_ax, val_ax):
            ax.set_xticks(numbers)
    val_ax.legend(fontsize=8)
    fig.suptitle(name)
    return fig


def overview_figure(runs: dict[str, list[dict[str, Any]]]):
    """Validation mAP@10 per epoch of every run (name -> epochs) in one plot."""
    fig = _figure(figsize=(7, 4))
    ax = fig.subplots()
    for name, epochs in runs.items():
        pts = [(e["epoch"] + 1, 100 * e["val"]["mAP@10"]) for e in epochs if "mAP@10" in e.get("val", {})]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (of each run)", ylabel="validation mAP@10 (percent)", title="every run")
    ax.legend(fontsize=7, ncol=2 if len(runs) > 6 else 1)
    return fig


def correspondence_figure(c_hat: np.ndarray, truth: np.ndarray, own: int, caption: str, label: str,
                          tau: float, top: int = TOP):
    """The paper's figure for one query caption: its ``top`` highest estimated correspondences
    (C_hat over the split's clips, sorted) coloured by the ground truth, the caption's own clip (stage
    1's only positive) marked; below, the stage-2 target p_hat = softmax(C_hat / tau) on those clips."""
    order = np.argsort(-c_hat, kind="stable")[: min(top, c_hat.size)]
    p_hat = np.exp((c_hat - c_hat.max()) / tau)
    p_hat /= p_hat.sum()
    colours = [TRUE if truth[i] else FALSE for i in order]
    fig = _figure(figsize=(11, 5.2))
    upper, lower = fig.subplots(2, 1, sharex=True)
    x = np.arange(order.size)
    for ax, values, ylabel in ((upper, c_hat[order], "estimated correspondence\nC_hat (mean cosine)"),
                               (lower, p_hat[order], f"stage-2 target\np_hat = softmax(C_hat / {tau:g})")):
        ax.bar(x, values, color=colours, edgecolor=[OWN if i == own else "none" for i in order], linewidth=1.5)
        ax.set_ylabel(ylabel, fontsize=9)
        if own in order:
            where = int(np.flatnonzero(order == own)[0])
            ax.plot([where], [max(float(values[where]), 0.0)], marker="v", color=OWN, ms=7, ls="none",
                    transform=ax.transData)
    upper.axhline(0, color="black", lw=0.5)
    lower.set_xlabel(f"the caption's top {order.size} of {c_hat.size} clips by C_hat")
    lower.set_xticks(x[::5] if order.size > 20 else x)
    lower.set_xticklabels([str(i + 1) for i in (x[::5] if order.size > 20 else x)])
    from matplotlib.patches import Patch

    n_true = int(truth.sum())
    fig.legend(handles=[Patch(color=TRUE, label="truly described (ground truth)"),
                        Patch(color=FALSE, label="not described"),
                        Patch(facecolor="white", edgecolor=OWN, label="\u25bc the caption's own clip (stage 1's only "
                                                                     "positive)")],
               fontsize=8, loc="outside lower center", ncol=3, frameon=False)
    mass = float(p_hat[truth].sum())
    lower.text(0.99, 0.95, f"p_hat mass on the {n_true} truly described clips: {100 * mass:.1f}% "
               f"(stage 1's target: 100% on the own clip)", transform=lower.transAxes, ha="right", va="top",
               fontsize=8)
    wrapped = caption if len(caption) <= 110 else caption[:107] + "..."
    fig.suptitle(f"{label}: \u201c{wrapped}\u201d\n{int(truth[order].sum())} of the top {order.size} truly "
                 f"described; {n_true} clips truly described in all", fontsize=10)
    return fig


def calibration_bins(scores: np.ndarray, truth: np.ndarray, n_bins: int = 15) -> list[dict[str, float]]:
    """Equal-count bins of ``scores``: mean score, fraction of truly relevant pairs, count per bin."""
    order = np.argsort(scores, kind="stable")
    bins = []
    for part in np.array_split(order, min(n_bins, scores.size)):
        if part.size:
            bins.append({"C_hat": float(scores[part].mean()), "relevant": float(truth[part].mean()),
                         "n": int(part.size)})
    return bins


def calibration_figure(estimates: list[dict[str, Any]]):
    """Fraction truly relevant against binned C_hat per estimator (left); the C_hat distributions of
    true and false pairs of the largest ensemble (right)."""
    fig = _figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for est in estimates:
        bins = est["calibration"]
        left.plot([b["C_hat"] for b in bins], [b["relevant"] for b in bins], marker="o", ms=3,
                  label=f"{est['label']} (AUC {est['auc']:.3f})")
    base = estimates[0]["base_rate"]
    left.axhline(base, color="gray", ls="--", lw=0.8, label=f"base rate {base:.3f}")
    left.set(xlabel="estimated correspondence C_hat (bin mean, equal-count bins)",
             ylabel="fraction truly relevant", title="calibration against the ground truth",
             ylim=(0, min(1.0, 1.15 * max(b["relevant"] for e in estimates for b in e["calibration"]) + 0.02)))
    left.legend(fontsize=7)
    main = max(estimates, key=lambda e: e["M"])
    scores, truth = main["_scores"], main["_truth"]
    edges = np.linspace(float(scores.min()), float(scores.max()), 41)
    right.hist(scores[~truth], bins=edges, density=True, alpha=0.6, color="#808080", label="not described")
    right.hist(scores[truth], bins=edges, density=True, alpha=0.6, color=TRUE, label="truly described")
    right.set(xlabel="C_hat", ylabel="density", title=main["label"])
    right.legend(fontsize=8)
    return fig
