"""Training sweeps: the beta-VAE over a list of betas, measured as rate against distortion."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import rate_distortion
from pyro_vae.plots.training import plot_latent_traversals, plot_rate_distortion
from pyro_vae.training import TrainConfig, Trainer, write_csv, write_json


def beta_sweep(betas: Sequence[float], base: TrainConfig, out_dir: str | Path, *, progress: Optional[bool] = None,
               log: Callable[[str], None] = print) -> list[dict]:
    """Train ``beta-vae`` once per beta (same seed and budget) and measure each on the test split.

    Writes into ``out_dir``: one run directory per beta, ``traversals-beta-B.png`` per beta,
    ``results.csv`` / ``results.json`` (beta, rate, distortion, ELBO, seconds) and ``rate_distortion.png``.
    """
    if not betas:
        raise PyroVAEError("give at least one beta")
    if any(not beta >= 0 for beta in betas):
        raise PyroVAEError(f"beta weights the KL term and must be non-negative, got {list(betas)}")
    if len({f"{beta:g}" for beta in betas}) != len(betas):
        raise PyroVAEError(f"each beta may appear once, got {list(betas)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PyroVAEError(f"the sweep directory {out_dir} already exists; choose another --out-dir")
    rows = []
    for beta in betas:
        config = replace(base, model="beta-vae", model_options={**base.model_options, "beta": float(beta)})
        trainer = Trainer(config, out_dir / f"beta-{beta:g}", progress=progress, log=log)
        log(f"beta = {beta:g}")
        history = trainer.fit()
        model = trainer.model.eval()
        measured = rate_distortion(model.model, model.guide, trainer.batches("test"))
        code = model.encode(trainer.dataset.test.images[:1])[0]
        plot_latent_traversals(model, code, out_dir / f"traversals-beta-{beta:g}.png",
                               title=f"beta = {beta:g}: latent i varied from -3 to 3 in row i")
        rows.append({"beta": float(beta), **measured, "elbo": -(measured["rate"] + measured["distortion"]),
                     "epochs": config.epochs, "seconds": history[-1]["seconds"]})
        log(f"beta = {beta:g}: rate {measured['rate']:.2f} nats, distortion {measured['distortion']:.2f} nats")
    write_csv(rows, out_dir / "results.csv")
    write_json(rows, out_dir / "results.json")
    plot_rate_distortion(rows, out_dir / "rate_distortion.png")
    return rows




