"""Pictures of the gradient-estimator comparisons: the toy problem, gradient statistics, training curves, and
the errors of estimators for discrete latents against the exact gradient."""
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
    of the gradient, for the guide's and the model's parameters; estimators that do not apply are left out."""
    rows = [row for row in rows if "not_applicable" not in row]
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
    """Validation ELBO against SVI steps and against seconds of training, one line per estimator that applies."""
    rows = [row for row in rows if "not_applicable" not in row]
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


def plot_estimator_errors(rows: Sequence[dict], path: Path, *, title: str = "") -> Path:
    """Against the number of samples N (log-log), per parameter group: the MSE (solid) and the variance
    (dashed) of each estimator, and its bias (solid) beside the noise floor an unbiased estimator's measured
    bias stays near (dotted). Exact estimators (zero error) and inapplicable ones are named, not drawn."""
    measured = [row for row in rows if "not_applicable" not in row]
    drawn = [name for name in dict.fromkeys(row["estimator"] for row in measured)
             if any(row.get("guide_mse", 0) > 0 for row in measured if row["estimator"] == name)]
    groups = [group for group in ("guide", "model") if any(f"{group}_mse" in row for row in measured)]
    fig, axes = plt.subplots(2, len(groups), figsize=(6 * len(groups), 9), squeeze=False)
    colors = dict(zip(drawn, plt.cm.tab10.colors))
    for column, group in enumerate(groups):
        top, bottom = axes[0, column], axes[1, column]
        for name in drawn:
            curve = [row for row in measured if row["estimator"] == name]
            sizes = [row["num_samples"] for row in curve]
            color = colors[name]
            top.plot(sizes, [row[f"{group}_mse"] for row in curve], "o-", color=color, label=f"{name}: MSE")
            top.plot(sizes, [row[f"{group}_total_variance"] for row in curve], "--", color=color, alpha=0.7)
            bottom.plot(sizes, [row[f"{group}_bias"] for row in curve], "o-", color=color, label=name)
            bottom.plot(sizes, [row[f"{group}_bias_floor"] for row in curve], ":", color=color, alpha=0.7)
        top.set_title(f"{group} parameters: MSE (solid), variance (dashed)")
        bottom.set_title(f"{group} parameters: bias (solid), noise floor √(var/R) (dotted)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("samples per estimate N")
            ax.grid(alpha=0.3, which="both")
        top.set_ylabel("E‖estimate − exact‖²")
        bottom.set_ylabel("‖mean estimate − exact‖")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8)
    unseen = [name for name in dict.fromkeys(row["estimator"] for row in measured) if name not in drawn]
    notes = [f"{name}: exact, zero error" for name in unseen]
    notes += [f"{row['estimator']}: not applicable" for row in rows if "not_applicable" in row]
    fig.suptitle("Gradient of −ELBO against the exact one (enumeration)" + (f": {title}" if title else "")
                 + ("\n" + "; ".join(notes) if notes else ""))
    return save_figure(fig, path)


def plot_snr(rows: Sequence[dict], slopes: Sequence[dict], path: Path, *, title: str = "") -> Path:
    """SNR of the guide's and the model's gradients against the draws K (log-log), one line per estimator, the
    fitted slope and its 95 % interval in the legend."""
    rows = [row for row in rows if "not_applicable" not in row]
    estimators = list(dict.fromkeys(row["estimator"] for row in rows))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, group in zip(axes, ("guide", "model")):
        for i, name in enumerate(estimators):
            points = [(row["num_particles"], row[f"{group}_snr"]) for row in rows
                      if row["estimator"] == name and f"{group}_snr" in row]
            if not points:
                continue
            fit = next((s for s in slopes if s["estimator"] == name and s["group"] == group), None)
            label = name
            if fit is not None and np.isfinite(fit["slope"]):
                label += f": slope {fit['slope']:+.2f}"
                if np.isfinite(fit["slope_low"]):
                    label += f" [{fit['slope_low']:+.2f}, {fit['slope_high']:+.2f}]"
                if np.isfinite(fit.get("tail_slope", np.nan)):
                    label += f"; large K {fit['tail_slope']:+.2f}"
            ks, values = zip(*points)
            ax.plot(ks, values, "o-", color=colors[i % len(colors)], label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("draws per image K")
        ax.set_ylabel("SNR |mean| / std (mean over parameters, debiased)")
        ax.set_title(f"{'guide (inference network)' if group == 'guide' else 'model (generative network)'}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="estimator: log-log slope [95 % CI]; over the largest K", title_fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
