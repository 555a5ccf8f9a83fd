"""The posterior-collapse diagnostics of :mod:`pyro_vae.evaluation.collapse` as a picture."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from pyro_vae.plots.training import save_figure


def plot_collapse(result: dict, path) -> None:
    """A bar chart of the KL of each latent dimension (or the variance of its mean code), active units marked."""
    values = result.get("kl_per_dim") or result["mean_variance"]
    label = "KL(q(z_i | x) || p(z_i)), nats" if "kl_per_dim" in result else "Cov_x(E_q[z_i | x])"
    active = [v > result["active_threshold"] for v in result["mean_variance"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(values)), 3.6))
    ax.bar(range(len(values)), values, color=["tab:blue" if a else "tab:gray" for a in active])
    ax.set_xlabel(f"latent dimension of {result['site']!r} (grey: inactive)")
    ax.set_ylabel(label)
    mi = result.get("mutual_information")
    ax.set_title(f"{result['active_units']} of {result['dims']} units active"
                 + (f"; I(x; z) = {mi:.2f} nats (at most log N = {result['mutual_information_cap']:.2f})"
                    if mi is not None else ""))
    save_figure(fig, path)
