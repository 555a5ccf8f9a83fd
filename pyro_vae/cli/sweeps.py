"""``pyro-vae beta-sweep`` and ``pyro-vae disentanglement``: the commands over weights and factors, and their parsers."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from pyro_vae.catalog import FACTOR_DATASETS, SWEPT_DEFAULTS, SWEPT_MODELS
from pyro_vae.cli.common import existing_run_dir
from pyro_vae.cli.options import (_add_dci_trees_option, _add_train_options, _add_trained_run_options, _betas,
                                  _given_options, _listed, _seeds)
from pyro_vae.config import TrainConfig, check_positive, check_seed
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import check_can_create_dir, check_can_write_file, run_lock

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.


#: the disentanglement metrics beta-sweep prints (all are in results.csv)
SWEEP_METRIC_COLUMNS = (("mig", "MIG"), ("dci_disentanglement", "DCI-dis"), ("sap", "SAP"),
                        ("modularity", "modularity"), ("beta_vae_eval_accuracy", "BetaVAE"),
                        ("factor_vae_eval_accuracy", "FactorVAE"))


def beta_sweep_command(args: argparse.Namespace) -> int:
    from pyro_vae.sweeps import beta_sweep, resumed_sweep

    if args.beta is not None:
        raise PyroVAEError("beta-sweep trains one model per value of --betas; drop --beta (use --betas "
                           f"{args.beta:g} for that value alone)")
    given = _given_options(args)
    if args.resume:  # the sweep's settings come from its sweep.json, as a resumed run's come from its checkpoint
        if not args.out_dir:
            raise PyroVAEError("--resume continues an interrupted sweep: name its folder with --out-dir DIR")
        out_dir = Path(args.out_dir)
        spec = resumed_sweep(out_dir)  # a folder that holds no sweep is said first
        named = [option for option, value in (("--betas", args.betas), ("--seeds", args.seeds),
                                              ("--score-points", args.score_points), ("--dci-trees", args.dci_trees))
                 if value is not None] + [f"--{name.replace('_', '-')}" for name in given]
        if named:
            raise PyroVAEError(f"--resume continues the sweep as it was started (its sweep.json); drop "
                               f"{', '.join(named)}")
        base = TrainConfig.from_dict(spec["base"])
        model, weight = spec["model"], SWEPT_MODELS[spec["model"]]
        rows = beta_sweep(spec["betas"], base, out_dir, seeds=spec["seeds"], model=model,
                          score_points=spec["score_points"], dci_trees=spec["dci_trees"],
                          progress=False if args.no_progress else None, resume=True)
        return _print_sweep(rows, weight, out_dir)
    model = given.pop("model", "beta-vae")
    if model not in SWEPT_MODELS:
        raise PyroVAEError(f"beta-sweep trains --model {', '.join(SWEPT_MODELS)}, not {model}")
    weight = SWEPT_MODELS[model]
    from pyro_vae.disentanglement.measure import check_score_points, check_scores_fit, sampler_sizes
    from pyro_vae.training import check_config

    base = TrainConfig(**given)
    check_config(replace(base, model=model))
    # before the sweep trains: the scores come after every model is trained
    if args.score_points is not None:
        check_score_points(args.score_points)
    if base.dataset not in FACTOR_DATASETS and (args.score_points is not None or args.dci_trees is not None):
        raise PyroVAEError(f"--score-points and --dci-trees set the disentanglement metrics, which need data with "
                           f"known factors (--dataset {' or '.join(FACTOR_DATASETS)}); {base.dataset} has none")
    if args.score_points is not None:
        check_scores_fit(sampler_sizes(args.score_points), base.z_dim, base.device)
    out_dir = Path(args.out_dir or time.strftime("runs/beta-sweep-%Y%m%d-%H%M%S"))
    check_can_create_dir(out_dir, "--out-dir")
    rows = beta_sweep(args.betas or list(SWEPT_DEFAULTS[weight]), base, out_dir, seeds=args.seeds or (),
                      model=model, score_points=args.score_points, dci_trees=args.dci_trees or "gbt",
                      progress=False if args.no_progress else None)
    return _print_sweep(rows, weight, out_dir)


def _print_sweep(rows: list[dict], weight: str, out_dir: Path) -> int:
    columns = [(weight, weight, "g"), ("seed", "seed", "d"), ("rate", "rate", ".2f"),
               ("distortion", "distortion", ".2f"), ("elbo", "ELBO", ".2f")]
    columns += [(key, label, ".3f") for key, label in SWEEP_METRIC_COLUMNS if key in rows[0]]
    print(" ".join(f"{label:>11}" for _, label, _ in columns))
    for row in rows:
        print(" ".join(f"{row[key]:>11{spec}}" for key, _, spec in columns))
    extra = f", {out_dir / f'metrics_against_{weight}.png'}, {out_dir / 'summary.json'}" if "mig" in rows[0] else ""
    print(f"results: {out_dir / 'results.csv'}, {out_dir / 'rate_distortion.png'}{extra}, "
          f"{out_dir}/traversals-{weight}-*.png")
    return 0


def disentanglement_command(args: argparse.Namespace) -> int:
    import pyro

    from pyro_vae.disentanglement.measure import (MIN_NUM_SAMPLES, NUM_SAMPLES, check_has_factors,
                                                  check_score_points, check_scores_fit, measure, sampler_sizes)
    from pyro_vae.files import write_json
    from pyro_vae.plots.disentanglement import plot_mutual_information
    from pyro_vae.plots.training import plot_latent_traversals
    from pyro_vae.training import describe_checkpoint, load_run_data, load_trained_model, resolve_device

    check_positive(args.num_samples, "--num-samples", optional=True)  # None: NUM_SAMPLES, or all a run has if fewer
    if args.num_samples is not None and args.num_samples < MIN_NUM_SAMPLES:
        raise PyroVAEError(f"--num-samples must be at least {MIN_NUM_SAMPLES}, got {args.num_samples}: modularity "
                           "bins the two thirds of them it fits on into 20 histogram bins")
    check_score_points(args.score_points)
    check_seed(args.seed)
    resolve_device(args.device)
    run_dir = existing_run_dir(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "disentanglement.json"
    check_can_write_file(out, "--out")
    with run_lock(run_dir):
        model, config, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
        if config.dataset not in FACTOR_DATASETS:  # before the data are loaded
            raise PyroVAEError(f"the run {args.run_dir} was trained on {config.dataset}, which has no ground-truth "
                               f"factors; the disentanglement metrics need a run trained on "
                               f"{' or '.join(FACTOR_DATASETS)}")
        check_scores_fit(sampler_sizes(args.score_points), config.z_dim, args.device)
        dataset = load_run_data(config, device=args.device)
        check_has_factors(dataset, f"the run {args.run_dir}")
        available = len(dataset.train)
        num_samples = args.num_samples
        if num_samples is None:  # the default: disentanglement_lib's 10,000, or every image of a smaller run
            if available < MIN_NUM_SAMPLES:
                raise PyroVAEError(f"the run {args.run_dir} has {available} training images, fewer than the "
                                   f"{MIN_NUM_SAMPLES} the metrics need; train it on more (--subset)")
            num_samples = min(NUM_SAMPLES, available)
            if num_samples < NUM_SAMPLES:
                print(f"using the {available:,} training images the run has (fewer than the {NUM_SAMPLES:,} of "
                      "--num-samples' default)")
        elif num_samples > available:
            raise PyroVAEError(f"--num-samples {num_samples:,} asks for more images than the {available:,} training "
                               f"images the run {args.run_dir} has ({config.dataset}"
                               + (f", --subset {config.subset}" if config.subset else "") + f"); give at most "
                               f"{available:,}, or leave it out to use them all")
        pyro.set_rng_seed(args.seed)
        print(f"measuring disentanglement of {describe_checkpoint(checkpoint)} of {args.run_dir} on "
              f"{num_samples:,} training images of {config.dataset}")
        result = measure(model.eval(), dataset, num_samples=num_samples, seed=args.seed,
                         sizes=sampler_sizes(args.score_points), dci_trees=args.dci_trees or "gbt",
                         show_progress=not args.no_progress)
        result.update({"checkpoint": checkpoint["kind"], "epoch": checkpoint["epoch"], "dataset": config.dataset})
        for key, value in result.items():
            if isinstance(value, float) and key != "seconds":
                print(f"  {key:<28} {value:.4f}")
        if not result["sampler_scores"]:
            print("  (BetaVAE and FactorVAE scores need images of any factor combination: dsprites-procedural only)")
        write_json(result, out)
        # beside the JSON, named after it when --out names another file, so that runs sharing a folder keep theirs
        prefix = "" if out.name == "disentanglement.json" else f"{out.stem}-"
        pictures = [plot_mutual_information(result["mutual_information"], result["factor_names"],
                                            out.parent / f"{prefix}mutual_information.png"),
                    plot_latent_traversals(model, model.encode(dataset.test.images[:1].to(model.device))[0],
                                           out.parent / f"{prefix}traversals.png",
                                           title="latent i varied from -3 to 3 in row i, the others at a test image's code")]
    print(f"written to {out}; pictures: {', '.join(str(p) for p in pictures)} ({result['seconds']} s)")
    return 0


def add_sweep_parser(subparsers) -> None:
    sweep = subparsers.add_parser(
        "beta-sweep", help="train beta-VAEs (beta-TCVAEs, FactorVAEs) over a list of betas (gammas); plot rate "
                           "against distortion, traversals and, on dSprites, the disentanglement metrics",
        description="Train --model beta-vae (or beta-tcvae, or factor-vae) once per beta (and per seed of --seeds) "
                    "with the same options and budget, then measure rate (KL) and distortion (-E log p(x|z)) on the "
                    "test split, plot one against the other, and write latent traversals (one latent varied at a "
                    "time, the others held) for each beta. On data with known factors (--dataset "
                    "dsprites-procedural) every disentanglement metric of 'pyro-vae disentanglement' joins the table, "
                    "plotted against beta. For factor-vae the swept weight is its total-correlation weight gamma.")
    sweep.add_argument("--betas", type=_betas,
                       help="comma-separated betas: the KL weight of beta-vae, the total-correlation weight of "
                            "beta-tcvae, or gamma, the total-correlation weight of factor-vae (default: "
                            f"{_listed(SWEPT_DEFAULTS['beta'])}; for factor-vae {_listed(SWEPT_DEFAULTS['gamma'])}, "
                            "within the 10 to 100 of Kim & Mnih 2018)")
    sweep.add_argument("--seeds", type=_seeds, metavar="S,S,...",
                       help="train every beta once per seed, for the mean and spread over seeds in summary.json "
                            "(default: --seed alone)")
    sweep.add_argument("--score-points", type=int, metavar="N",
                       help="on data with known factors: training points of the BetaVAE and FactorVAE scores, at "
                            "least 10 (default: disentanglement_lib's 10,000, minutes per run on a 2-core CPU)")
    _add_dci_trees_option(sweep)
    sweep.add_argument("--out-dir", help="where the sweep goes (default: runs/beta-sweep-DATE-TIME)")
    sweep.add_argument("--resume", action="store_true",
                       help="continue the interrupted sweep in --out-dir as it was started (its sweep.json): "
                            "finished runs are read, an interrupted one continues from its checkpoint")
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_train_options(sweep)
    sweep.set_defaults(handler=beta_sweep_command)


def add_disentanglement_parser(subparsers, formatter) -> None:
    measure = subparsers.add_parser(
        "disentanglement", formatter_class=formatter,
        help="disentanglement metrics of a run trained on data with known factors (dSprites)",
        description="Encode --num-samples training images of the run's data set (dsprites-procedural or dsprites) and "
                    "compute the metrics of disentanglement_lib (Locatello et al. 2019) from the codes and the true "
                    "factors: MIG, DCI (disentanglement, completeness, informativeness), SAP, modularity and "
                    "explicitness, and on the procedural data, which renders any factor combination, the BetaVAE "
                    "and FactorVAE scores. Writes RUN_DIR/disentanglement.json, a latent-factor mutual-information "
                    "heat map and latent traversals.")
    measure.add_argument("run_dir", help="a run directory written by 'pyro-vae train'")
    measure.add_argument("--num-samples", type=int, metavar="N",
                         help="training images encoded for MIG, DCI, SAP and modularity (default: disentanglement_lib's "
                              "10,000, or all the training images of a run that has fewer, e.g. one trained with "
                              "--subset)")
    measure.add_argument("--score-points", type=int, default=10_000, metavar="N",
                         help="training points of the BetaVAE and FactorVAE scores (N // 2 to evaluate; each point "
                              "is a batch of 64 images rendered and encoded), at least 10: disentanglement_lib's "
                              "10,000 cost minutes on a 2-core CPU, so smaller N is quicker and noisier")
    _add_dci_trees_option(measure)
    measure.add_argument("--out", metavar="FILE",
                         help="where to write the metrics as JSON; the pictures go beside it (default: "
                              "RUN_DIR/disentanglement.json)")
    measure.add_argument("--no-progress", action="store_true",
                         help="no progress bar over the images the BetaVAE and FactorVAE scores render")
    _add_trained_run_options(measure, "random seed for the images drawn and the classifiers")
    measure.set_defaults(handler=disentanglement_command)
