"""Pictures of the gradient-estimator comparisons: the toy problem, gradient statistics, training curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from pyro_vae.plots.training import save_figure


def plot_toy_variances(rows: Sequence[dict], path: Path, *, estimators: Sequence[str] = ("score", "reparam"),
                       title: str = "") -> Path:
    """Variance of the N-sample gradient estimate against N (log-log): measured points, analytic lines."""
    sizes = [row["num_samples"] for row in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, color in zip(estimators, ("tab:red", "tab:blue", "tab:green", "tab:purple")):
        ax.plot(sizes, [row[f"{name}_variance_analytic"] for row in rows], "-", color=color, alpha=0.6,
                label=f"{name}: analytic")
        ax.plot(sizes, [row[f"{name}_variance"] for row in rows], "o", color=color, label=f"{name}: measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples per estimate N")
    ax.set_ylabel("variance of the gradient estimate")
    ax.set_title(title or "d/dθ E[x²], x ~ N(θ, 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return save_figure(fig, path)


def plot_gradient_statistics(rows: Sequence[dict], path: Path) -> Path:
    """Bars per estimator, one colour per model state: total variance (log scale) and signal-to-noise ratio
    of the gradient, for the guide's and the model's parameters."""
    estimators = list(dict.fromkeys(row["estimator"] for row in rows))
    states = list(dict.fromkeys(row["model"] for row in rows))
    panels = [(group, stat) for group in ("guide", "model") for stat in ("total_variance", "snr")
              if any(f"{group}_{stat}" in row for row in rows)]
    fig, axes = plt.subplots(len(panels) // 2, 2, figsize=(11, 3.6 * (len(panels) // 2)), squeeze=False)
    width = 0.8 / len(states)
    positions = np.arange(len(estimators))
    for ax, (group, stat) in zip(axes.flat, panels):
        for i, state in enumerate(states):
            by_name = {row["estimator"]: row.get(f"{group}_{stat}", np.nan) for row in rows if row["model"] == state}
            ax.bar(positions + (i - (len(states) - 1) / 2) * width, [by_name.get(n, np.nan) for n in estimators],
                   width, label=state)
        if stat == "total_variance":
            ax.set_yscale("log")
        ax.set_xticks(positions, estimators, rotation=20, ha="right")
        ax.set_title(f"{group} parameters: " + ("total variance" if stat == "total_variance" else "SNR |mean| / std"))
        ax.grid(alpha=0.3, axis="y")
        ax.legend(title="model")
    return save_figure(fig, path)


def plot_training_curves(rows: Sequence[dict], path: Path) -> Path:
    """Validation ELBO against SVI steps and against seconds of training, one line per estimator."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name in dict.fromkeys(row["estimator"] for row in rows):
        curve = [row for row in rows if row["estimator"] == name]
        for ax, key in zip(axes, ("step", "seconds")):
            ax.plot([row[key] for row in curve], [row["valid_elbo"] for row in curve], "o-", ms=3, label=name)
    trained = [row["valid_elbo"] for row in rows if row["step"] > 0 and np.isfinite(row["valid_elbo"])]
    if trained:  # the common starting point is far below; keep the scale for the differences that matter
        spread = max(trained) - min(trained)
        axes[0].set_ylim(min(trained) - 0.1 * spread, max(trained) + 0.1 * spread)
    start = next(row["valid_elbo"] for row in rows if row["step"] == 0)
    axes[0].set_xlabel("SVI steps")
    axes[1].set_xlabel("seconds of training (evaluation excluded)")
    axes[0].set_ylabel("validation ELBO (nats per image)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Training with each gradient estimator from the same initialisation (validation ELBO {start:.0f} "
                 "at step 0)")
    return save_figure(fig, path)
