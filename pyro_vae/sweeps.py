"""Training sweeps: the beta-VAE (or beta-TCVAE, or FactorVAE) over a list of weights (beta; FactorVAE's gamma)
and seeds, measured as rate against distortion and, on data with known factors, by the disentanglement metrics."""
from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyro_vae.catalog import FACTOR_DATASETS, SWEPT_MODELS
from pyro_vae.disentanglement.measure import NUM_SAMPLES, measure, sampler_sizes
from pyro_vae.disentanglement.metrics import check_dci_trees
from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import rate_distortion
from pyro_vae.plots.disentanglement import plot_metrics_against_beta
from pyro_vae.plots.training import plot_latent_traversals, plot_rate_distortion
from pyro_vae.training import TrainConfig, Trainer, write_csv, write_json


def beta_sweep(betas: Sequence[float], base: TrainConfig, out_dir: str | Path, *, seeds: Sequence[int] = (),
               model: str = "beta-vae", score_points: Optional[int] = None, dci_trees: str = "gbt",
               progress: Optional[bool] = None, log: Callable[[str], None] = print) -> list[dict]:
    """Train ``model`` (beta-vae, beta-tcvae or factor-vae) once per value of its swept weight in ``betas`` and
    per seed (``seeds``, default ``base.seed``) with the same budget and measure each on the test split; on data with known factors (dSprites) also every
    disentanglement metric (:func:`pyro_vae.disentanglement.measure.measure`, with ``score_points`` points for
    the BetaVAE and FactorVAE scores, and DCI's importances from ``dci_trees``).

    The swept weight is the model option named by :data:`~pyro_vae.catalog.SWEPT_MODELS`: beta (the KL weight
    of beta-vae, the total-correlation weight of beta-tcvae) or gamma (FactorVAE's total-correlation weight);
    below W is its name and B its value. Writes into ``out_dir``: one run directory per value and seed (``W-B``
    for one seed, ``W-B-seed-S`` for several), ``traversals-W-B.png`` per value (first seed), ``results.csv`` /
    ``results.json`` (one row per run: W, seed, rate, distortion, ELBO, seconds, metrics), ``summary.json``
    (mean and standard deviation over seeds per value), ``rate_distortion.png`` and, with metrics,
    ``metrics_against_W.png``.
    """
    if not betas:
        raise PyroVAEError("give at least one beta")
    if base.dataset in FACTOR_DATASETS:  # before any training
        check_dci_trees(dci_trees)
    if model not in SWEPT_MODELS:
        raise PyroVAEError(f"a beta sweep trains {', '.join(SWEPT_MODELS)}, not {model}")
    weight = SWEPT_MODELS[model]
    if weight in base.model_options:
        raise PyroVAEError(f"beta-sweep sets {weight} from --betas; drop --model-option {weight}=... (use --betas "
                           f"{base.model_options[weight]} for that value alone)")
    if any(not beta >= 0 for beta in betas):
        raise PyroVAEError(f"{weight} must be non-negative, got {list(betas)}")
    if len({f"{beta:g}" for beta in betas}) != len(betas):
        raise PyroVAEError(f"each {weight} may appear once, got {list(betas)}")
    seeds = list(seeds) or [base.seed]
    if len(set(seeds)) != len(seeds):
        raise PyroVAEError(f"each seed may appear once, got {seeds}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PyroVAEError(f"the sweep directory {out_dir} already exists; choose another --out-dir")
    rows = []
    for beta in betas:
        for seed in seeds:
            name = f"{weight}-{beta:g}" + (f"-seed-{seed}" if len(seeds) > 1 else "")
            config = replace(base, model=model, seed=seed, model_options={**base.model_options, weight: float(beta)})
            trainer = Trainer(config, out_dir / name, progress=progress, log=log)
            log(f"{model}, {weight} = {beta:g}, seed {seed}")
            history = trainer.fit()
            trained = trainer.model.eval()
            measured = rate_distortion(trained.model, trained.guide, trainer.batches("test"))
            row = {weight: float(beta), "seed": seed, **measured, "elbo": -(measured["rate"] + measured["distortion"]),
                   "epochs": config.epochs, "seconds": history[-1]["seconds"]}
            if seed == seeds[0]:
                code = trained.encode(trainer.dataset.test.images[:1])[0]
                plot_latent_traversals(trained, code, out_dir / f"traversals-{weight}-{beta:g}.png",
                                       title=f"{weight} = {beta:g}: latent i varied from -3 to 3 in row i")
            if trainer.dataset.factor_sizes is not None:
                row.update(_metrics(trained, trainer.dataset, seed, score_points, dci_trees))
            rows.append(row)
            log(f"{weight} = {beta:g}, seed {seed}: rate {measured['rate']:.2f} nats, distortion "
                f"{measured['distortion']:.2f} nats" + (f", MIG {row['mig']:.3f}" if "mig" in row else ""))
    write_csv(rows, out_dir / "results.csv")
    write_json(rows, out_dir / "results.json")
    write_json(summarize(rows), out_dir / "summary.json")
    plot_rate_distortion([row for row in rows if row["seed"] == seeds[0]], out_dir / "rate_distortion.png",
                         weight=weight, title=f"{model}: rate against distortion (test split)")
    if "mig" in rows[0]:
        plot_metrics_against_beta(rows, out_dir / f"metrics_against_{weight}.png", weight=weight)
    return rows


def _metrics(model, dataset, seed: int, score_points: Optional[int], dci_trees: str) -> dict:
    sizes = sampler_sizes(score_points) if score_points else None
    result = measure(model, dataset, num_samples=min(NUM_SAMPLES, len(dataset.train)), seed=seed, sizes=sizes,
                     dci_trees=dci_trees)
    return {**{key: value for key, value in result.items() if isinstance(value, float) and key != "seconds"},
            "dci_trees": dci_trees}


def swept_weight(rows: Sequence[dict]) -> str:
    """The name of the weight a sweep's rows were trained over: "beta", or "gamma" for FactorVAE."""
    for weight in dict.fromkeys(SWEPT_MODELS.values()):
        if rows and weight in rows[0]:
            return weight
    raise PyroVAEError("these are not rows of a sweep: the first has neither beta nor gamma" if rows else
                       "there are no rows to summarize")


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per value of the swept weight (beta or gamma): the number of seeds and, for every measured number, its
    mean and standard deviation over seeds."""
    weight = swept_weight(rows)
    summary = []
    for beta in sorted({row[weight] for row in rows}):
        group = [row for row in rows if row[weight] == beta]
        entry = {weight: beta, "seeds": len(group),
                 **({"dci_trees": group[0]["dci_trees"]} if "dci_trees" in group[0] else {})}
        for key, value in group[0].items():
            if key in (weight, "seed", "epochs") or not isinstance(value, (int, float)):
                continue
            values = [row[key] for row in group]
            entry[key] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}
        summary.append(entry)
    return summary
