"""Pictures of disentanglement: which latent carries which factor, and metrics against beta."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from pyro_vae.plots.training import save_figure

#: the metrics a beta sweep plots against beta, with their labels
SWEEP_METRICS = {"mig": "MIG", "dci_disentanglement": "DCI disentanglement", "sap": "SAP",
                 "modularity": "modularity", "beta_vae_eval_accuracy": "BetaVAE score",
                 "factor_vae_eval_accuracy": "FactorVAE score"}


def plot_mutual_information(matrix: Sequence[Sequence[float]], factor_names: Sequence[str], path: Path, *,
                            title: str = "normalised mutual information I(z_j; v_k) / H(v_k)") -> Path:
    """Latents (rows) against the factors that vary (columns, ``factor_names``), each cell the normalised mutual
    information."""
    matrix, names = np.asarray(matrix, dtype=float), list(factor_names)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 0.4 * matrix.shape[0] + 1.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(1e-9, float(matrix.max()), 0.5), aspect="auto")
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="black" if value > 0.6 * matrix.max() else "white")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [f"z[{j}]" for j in range(matrix.shape[0])])
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path)


def plot_metrics_against_beta(rows: Sequence[dict], path: Path, weight: str = "beta") -> Path:
    """Each metric against the swept weight (``weight``: beta, or FactorVAE's gamma): one point per run, the
    line through the mean over seeds."""
    present = [key for key in SWEEP_METRICS if any(key in row for row in rows)]
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 3.2), squeeze=False)
    betas = sorted({row[weight] for row in rows})
    for ax, key in zip(axes[0], present):
        for row in rows:
            if key in row:
                ax.plot(row[weight], row[key], "o", color="C0", alpha=0.5)
        means = [statistics.mean(r[key] for r in rows if r[weight] == b and key in r) for b in betas]
        ax.plot(betas, means, "-", color="C0")
        if min(betas) > 0 and len(betas) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(weight)
        ax.set_title(SWEEP_METRICS[key])
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
