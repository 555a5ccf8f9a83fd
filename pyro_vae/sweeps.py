"""Training sweeps: the beta-VAE (or beta-TCVAE, or FactorVAE) over a list of weights (beta; FactorVAE's gamma)
and seeds, measured as rate against distortion and, on data with known factors, by the disentanglement metrics."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

from pyro_vae.catalog import CHECKPOINT, FACTOR_DATASETS, SWEPT_MODELS
from pyro_vae.disentanglement.measure import NUM_SAMPLES, measure, sampler_sizes
from pyro_vae.disentanglement.metrics import check_dci_trees
from pyro_vae.errors import CheckpointError, PyroVAEError, first_line
from pyro_vae.evaluation import rate_distortion
from pyro_vae.plots.disentanglement import plot_metrics_against_beta
from pyro_vae.plots.training import plot_latent_traversals, plot_rate_distortion
from pyro_vae.files import locked_run_dir, read_json
from pyro_vae.training import TrainConfig, Trainer, write_csv, write_json


#: the sweep's own record in its directory: what it trains, so that ``resume=True`` continues the same sweep
SWEEP_FILE = "sweep.json"
#: in each run directory of a sweep, the run's finished row (written last): a resumed sweep reads it, not retrains
ROW_FILE = "sweep_row.json"


def beta_sweep(betas: Sequence[float], base: TrainConfig, out_dir: str | Path, *, seeds: Sequence[int] = (),
               model: str = "beta-vae", score_points: Optional[int] = None, dci_trees: str = "gbt",
               progress: Optional[bool] = None, log: Callable[[str], None] = print, resume: bool = False) -> list[dict]:
    """Train ``model`` (beta-vae, beta-tcvae or factor-vae) once per value of its swept weight in ``betas`` and
    per seed (``seeds``, default ``base.seed``) with the same budget and measure each on the test split; on data with known factors (dSprites) also every
    disentanglement metric (:func:`pyro_vae.disentanglement.measure.measure`, with ``score_points`` points for
    the BetaVAE and FactorVAE scores, and DCI's importances from ``dci_trees``).

    The swept weight is the model option named by :data:`~pyro_vae.catalog.SWEPT_MODELS`: beta (the KL weight
    of beta-vae, the total-correlation weight of beta-tcvae) or gamma (FactorVAE's total-correlation weight);
    below W is its name and B its value. Writes into ``out_dir``: ``sweep.json`` (what the sweep trains), one run
    directory per value and seed (``W-B`` for one seed, ``W-B-seed-S`` for several) with its row in
    ``sweep_row.json`` once measured, ``traversals-W-B.png`` per value (first seed), ``results.csv`` /
    ``results.json`` (one row per run: W, seed, rate, distortion, ELBO, seconds, metrics), ``summary.json``
    (mean and standard deviation over seeds per value), ``rate_distortion.png`` and, with metrics,
    ``metrics_against_W.png``.

    ``resume=True`` continues an interrupted sweep in ``out_dir`` as ``sweep.json`` describes it (the arguments
    must describe the same sweep; :func:`resumed_sweep` reads them): finished runs are read, not trained again,
    and a run interrupted mid-training continues from its last checkpoint, so that the rows equal an
    uninterrupted sweep's. Ctrl-C names the runs kept and the command that continues.
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
    spec = {"betas": [float(beta) for beta in betas], "seeds": seeds, "model": model, "base": asdict(base),
            "score_points": score_points, "dci_trees": dci_trees}
    saved = resumed_sweep(out_dir) if resume else None
    with locked_run_dir(out_dir, "--out-dir"):  # one sweep at a time in a folder
        if resume:
            if json.loads(json.dumps(spec)) != saved:
                raise PyroVAEError(f"the sweep in {out_dir} was started with other settings than these; resume it as "
                                   f"{SWEEP_FILE} there records them (pyro-vae beta-sweep --out-dir {out_dir} --resume)")
        else:
            if out_dir.exists() and any(out_dir.iterdir()):
                raise PyroVAEError(f"the sweep directory {out_dir} already exists; choose another --out-dir, or pass "
                                   "--resume to continue the sweep in it")
            write_json(spec, out_dir / SWEEP_FILE)
        runs = [(beta, seed) for beta in betas for seed in seeds]
        rows: list[dict] = []
        try:
            for beta, seed in runs:
                run_dir = out_dir / (f"{weight}-{beta:g}" + (f"-seed-{seed}" if len(seeds) > 1 else ""))
                if (run_dir / ROW_FILE).is_file():
                    rows.append(read_json(run_dir / ROW_FILE))
                    log(f"{weight} = {beta:g}, seed {seed}: measured before, read from {run_dir / ROW_FILE}")
                    continue
                config = replace(base, model=model, seed=seed, model_options={**base.model_options, weight: float(beta)})
                rows.append(_train_and_measure(config, run_dir, weight, beta, first_seed=seed == seeds[0],
                                               score_points=score_points, dci_trees=dci_trees, progress=progress, log=log))
        except KeyboardInterrupt as interrupt:
            parts = getattr(interrupt, "sentence", "").split("; ")  # the Trainer's: what of the run was kept
            kept = next((part for part in parts if "checkpoint is kept" in part), None)
            interrupt.sentence = (f"interrupted during run {len(rows) + 1} of {len(runs)} of the sweep"
                                  + (f" ({kept})" if kept else " (before its first checkpoint: it starts again)")
                                  + f"; the {len(rows)} finished run(s) are kept in {out_dir}; continue the sweep with: "
                                  f"pyro-vae beta-sweep --out-dir {out_dir} --resume")
            raise
        write_csv(rows, out_dir / "results.csv")
        write_json(rows, out_dir / "results.json")
        write_json(summarize(rows), out_dir / "summary.json")
        plot_rate_distortion([row for row in rows if row["seed"] == seeds[0]], out_dir / "rate_distortion.png",
                             weight=weight, title=f"{model}: rate against distortion (test split)")
        if "mig" in rows[0]:
            plot_metrics_against_beta(rows, out_dir / f"metrics_against_{weight}.png", weight=weight)
        return rows


def resumed_sweep(out_dir: str | Path) -> dict:
    """The settings an interrupted sweep in ``out_dir`` was started with (its ``sweep.json``): ``betas``,
    ``seeds``, ``model``, ``base`` (a :class:`TrainConfig` as a dict), ``score_points`` and ``dci_trees``."""
    path = Path(out_dir) / SWEEP_FILE
    if not path.is_file():
        raise PyroVAEError(f"{out_dir} holds no sweep to resume (no {SWEEP_FILE}); start one with pyro-vae beta-sweep "
                           f"--out-dir {out_dir}" + ("" if Path(out_dir).exists() else " (the folder does not exist)"))
    saved = read_json(path)
    if (not isinstance(saved, dict) or set(saved) != {"betas", "seeds", "model", "base", "score_points", "dci_trees"}
            or saved["model"] not in SWEPT_MODELS or not isinstance(saved["base"], dict)
            or not isinstance(saved["betas"], list) or not isinstance(saved["seeds"], list)):
        raise PyroVAEError(f"{path} is not a sweep's record (pyro-vae beta-sweep writes it); it cannot be resumed")
    return saved


def _train_and_measure(config: TrainConfig, run_dir: Path, weight: str, beta: float, *, first_seed: bool,
                       score_points: Optional[int], dci_trees: str, progress: Optional[bool],
                       log: Callable[[str], None]) -> dict:
    """One run of a sweep, trained (or continued from its checkpoint) and measured; its row is written last."""
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / CHECKPOINT).exists():
        raise PyroVAEError(f"{run_dir} holds no {CHECKPOINT} to continue that run of the sweep from (deleted, or never "
                           f"written); move the folder away and resume the sweep again to train it anew")
    try:
        trainer = Trainer(config, run_dir, resume=(run_dir / CHECKPOINT).is_file(), progress=progress, log=log)
    except CheckpointError as err:
        raise PyroVAEError(f"{first_line(err).split('; the run cannot')[0].split('; --checkpoint best')[0]}; move {run_dir} away and resume the sweep "
                           "again to train that run anew") from None
    log(f"{config.model}, {weight} = {beta:g}, seed {config.seed}")
    history = trainer.fit()
    trained = trainer.model.eval()
    measured = rate_distortion(trained.model, trained.guide, trainer.batches("test"))
    row = {weight: float(beta), "seed": config.seed, **measured, "elbo": -(measured["rate"] + measured["distortion"]),
           "epochs": config.epochs, "seconds": history[-1]["seconds"]}
    if first_seed:
        code = trained.encode(trainer.dataset.test.images[:1])[0]
        plot_latent_traversals(trained, code, run_dir.parent / f"traversals-{weight}-{beta:g}.png",
                               title=f"{weight} = {beta:g}: latent i varied from -3 to 3 in row i")
    if trainer.dataset.factor_sizes is not None:
        row.update(_metrics(trained, trainer.dataset, config.seed, score_points, dci_trees, progress))
    write_json(row, run_dir / ROW_FILE)
    log(f"{weight} = {beta:g}, seed {config.seed}: rate {measured['rate']:.2f} nats, distortion "
        f"{measured['distortion']:.2f} nats" + (f", MIG {row['mig']:.3f}" if "mig" in row else ""))
    return row


def _metrics(model, dataset, seed: int, score_points: Optional[int], dci_trees: str,
             progress: Optional[bool] = None) -> dict:
    sizes = sampler_sizes(score_points) if score_points else None
    result = measure(model, dataset, num_samples=min(NUM_SAMPLES, len(dataset.train)), seed=seed, sizes=sizes,
                     dci_trees=dci_trees, show_progress=progress is not False)
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
