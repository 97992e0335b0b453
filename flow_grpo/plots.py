"""Training plots from metrics.jsonl rows: curves and histograms, written as PNG."""

from __future__ import annotations

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(rows: list[dict], panels: list[tuple[str, list[str]]], path: str, x_key: str = "epoch", title: str = "") -> None:
    """One panel per ``(title, [metric keys])``; rows missing a key are skipped for that key."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for ax, (panel_title, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(row[x_key], row[key]) for row in rows if row.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 12 else None, ms=3, label=key)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(x_key)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def training_panels(rows: list[dict], eval_key: str) -> list[tuple[str, list[str]]]:
    """The panels of :func:`plot_training_curves`. A reward with a strict pass/fail column beside its partial
    credit (GenEval's ``correct``) gets an accuracy panel next to the reward's: the two can move apart (a
    partial-credit reward that holds while the accuracy falls)."""
    keys = sorted({key for row in rows for key in row})
    accuracy = [k for k in keys if k.endswith("_correct") and k.startswith(("eval_", "batch_"))]
    panels = [("reward", ["reward_mean", eval_key])]
    if accuracy:
        panels.append(("accuracy (strict)", accuracy))
    return panels + [("losses", ["policy_loss", "kl_loss"]), ("on-policy diagnostics", ["approx_kl", "clipfrac"])]


def plot_training_curves(rows: list[dict], eval_key: str, path: str, title: str = "") -> None:
    """The trainers' curves: batch and held-out reward (and accuracy, when the reward has one), the losses, and
    the on-policy diagnostics."""
    plot_curves(rows, training_panels(rows, eval_key), path, title=title)

def plot_histogram(values, path: str, title: str, xlabel: str, bins: int = 60) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.hist(np.asarray(values).reshape(-1), bins=bins, color="tab:blue", alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
