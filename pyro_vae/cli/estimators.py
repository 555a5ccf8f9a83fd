"""``pyro-vae compare-estimators`` and ``pyro-vae discrete-estimators``: ELBO gradient estimators on a VAE and
on discrete latents; ``add_subcommands`` also sets up ``reparam-toy`` (:mod:`pyro_vae.cli.toy`)."""
from __future__ import annotations

import argparse
import time
from typing import Callable, Optional

from pyro_vae.catalog import (ACTIVATION_NAMES, BINARIZE_MODES, CONCRETE_TEMPERATURES, DATASETS, DEFAULT_ESTIMATORS,
                              DISCRETE_BASE_ESTIMATORS, DISCRETE_SAMPLE_SIZES, ESTIMATOR_SUMMARIES, MODEL_NAMES,
                              MULTI_SAMPLE_ESTIMATORS, SNR_ESTIMATORS,
                              TOY_SAMPLE_SIZES, concrete_name)
from pyro_vae.cli.common import HelpFormatter, existing_run_dir
from pyro_vae.cli.options import parse_hidden_dims, parse_model_option
from pyro_vae.cli.tables import (COMPARISON_FILES, DISCRETE_FILES, SNR_FILES, _estimator_names, _output_dir, _positive_floats,
                                 _positive_ints, _print_table, _progress)
from pyro_vae.cli.toy import reparam_toy_command
from pyro_vae.config import TrainConfig, check_positive, check_positive_finite, check_seed
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import write_csv, write_json

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


def _check_common(args: argparse.Namespace) -> None:
    """The options compare-estimators and discrete-estimators share, checked before any work."""
    from pyro_vae.training import check_config, resolve_device

    defaults = vars(args).pop("model_defaults", {})
    given = [f"--{name.replace('_', '-')}" for name in (*defaults, "model_option") if getattr(args, name) is not None]
    if args.run_dir is not None and given:
        raise PyroVAEError(f"--run-dir takes the model, its structure and its data settings from the run, so "
                           f"{', '.join(given)} would be ignored; drop {'it' if len(given) == 1 else 'them'}")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_seed(args.seed)
    check_positive_finite(args.lr, "--lr")
    resolve_device(args.device)
    if args.run_dir is not None:
        existing_run_dir(args.run_dir, "--run-dir ")
    if args.run_dir is None:
        config = TrainConfig(model=args.model, z_dim=args.z_dim, hidden_dims=args.hidden_dims,
                             activation=args.activation, model_options=dict(args.model_option or []),
                             subset=args.subset, lr=args.lr, seed=args.seed)
        check_config(config)


def _dataset_and_states(args: argparse.Namespace, *, check: Optional[Callable] = None) -> tuple:
    """The data, the freshly initialised structure, and a trained one: loaded from --run-dir (with its data
    settings), or trained here for --train-epochs with the structure's default ELBO from that same
    initialisation (--train-epochs 0, where ``args.allow_untrained``: no trained one). ``check(structure,
    dataset)`` runs on the fresh structure before any training."""
    import copy
    import tempfile

    import pyro
    import torch

    from pyro_vae.training import Trainer, load_run_data, load_trained_model

    if args.run_dir:
        trained, config, _ = load_trained_model(args.run_dir, args.device)
        dataset = load_run_data(config, subset=args.subset, device=args.device)
        pyro.set_rng_seed(args.seed)
        if check:
            check(trained, dataset)
        _check_gradient_memory(trained, args)
        fresh = type(trained)(**trained.config()).to(args.device)  # the run's structure, from the checkpoint's source
        with torch.no_grad():  # the run's own starting point, data-dependent initialisation included
            fresh.initialize(dataset.train.images, torch.Generator().manual_seed(config.seed))
        return dataset, {"fresh": fresh, "trained": trained}
    if not (getattr(args, "allow_untrained", False) and args.train_epochs == 0):
        check_positive(args.train_epochs, "--train-epochs")
    config = TrainConfig(dataset=args.dataset, binarize=args.binarize, subset=args.subset, model=args.model,
                         z_dim=args.z_dim, hidden_dims=args.hidden_dims, activation=args.activation,
                         model_options=dict(args.model_option or []), epochs=max(args.train_epochs, 1),
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    dataset = load_run_data(config, device=args.device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, progress=False if args.no_progress else None, dataset=dataset)
        _check_gradient_memory(trainer.model, args)
        fresh = copy.deepcopy(trainer.model)
        if check:
            check(fresh, dataset)
        if args.train_epochs == 0:
            return dataset, {"fresh": fresh}
        print(f"training {config.model} for {config.epochs} epochs on {len(dataset.train)} images "
              f"(--elbo {config.elbo})")
        trainer.fit()
    return dataset, {"fresh": fresh, "trained": trainer.model}


def _check_gradient_memory(model, args: argparse.Namespace) -> None:
    """The repeated gradient estimates are kept, one flat gradient of every parameter per repeat (and stacked
    once): refuse, before any training, a --repeats whose gradients cannot fit."""
    from pyro_vae.limits import FLOAT_BYTES, check_fits

    repeats = getattr(args, "repeats", None)
    if repeats is None:
        return
    params = sum(p.numel() for p in model.parameters())
    check_fits(2 * repeats * params * FLOAT_BYTES, f"--repeats {repeats:,} gradient estimates of the {params:,} "
               "parameters", "use fewer --repeats or a smaller model", args.device)


def compare_estimators_command(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from pyro_vae.studies.comparison import check_repeats, compare_estimators
    from pyro_vae.plots.estimators import plot_gradient_statistics, plot_training_curves

    from pyro_vae.studies.estimators import estimator_spec

    _check_common(args)
    check_repeats(args.repeats)
    if args.num_particles is not None:
        return snr_command(args)
    args.estimators = args.estimators or list(DEFAULT_ESTIMATORS)
    args.train_steps = 1000 if args.train_steps is None else args.train_steps
    if args.train_steps == 0 and args.eval_every is not None:
        raise PyroVAEError("--eval-every spaces the validation ELBOs of the training curves, and --train-steps 0 "
                           "trains none; drop one of them")
    if args.baseline_warmup and not any(estimator_spec(name).baseline for name in args.estimators):
        raise PyroVAEError(f"--baseline-warmup lets baselines settle, and none of --estimators "
                           f"{','.join(args.estimators)} has one; drop it")
    args.eval_every = 50 if args.eval_every is None else args.eval_every
    args.baseline_warmup = 100 if args.baseline_warmup is None else args.baseline_warmup
    for value, option in ((args.batch_size, "--batch-size"), (args.subset, "--subset"),
                          (args.eval_every, "--eval-every")):
        check_positive(value, option)
    if args.baseline_warmup < 0 or args.train_steps < 0:
        raise PyroVAEError("--baseline-warmup and --train-steps cannot be negative")
    out_dir = _output_dir(args.out, COMPARISON_FILES)
    start = time.perf_counter()
    dataset, states = _dataset_and_states(args)
    result = compare_estimators(states, dataset, args.estimators, train_from="fresh", batch_size=args.batch_size,
                                num_repeats=args.repeats, baseline_warmup=args.baseline_warmup,
                                num_steps=args.train_steps, eval_every=args.eval_every, lr=args.lr, seed=args.seed,
                                progress=_progress(args), say=tqdm.write)
    seconds = time.perf_counter() - start
    columns = [("model", "model", "s"), ("estimator", "estimator", "s")]
    for group in ("guide", "model"):
        columns += [(f"{group}_mean_grad_norm", f"{group} ‖mean‖", ".4g"),
                    (f"{group}_total_variance", f"{group} total var", ".4g"), (f"{group}_snr", f"{group} SNR", ".3f")]
    columns.append(("seconds_per_gradient", "s / gradient", ".4f"))
    _print_table(result.gradients, columns)
    final = {row["estimator"]: row for row in result.training}
    if final:
        print()
        _print_table(list(final.values()), [("estimator", "estimator", "s"), ("step", "steps", "d"),
                                            ("seconds", "seconds", ".1f"), ("valid_elbo", "valid ELBO", ".2f")])
    print(f"{seconds:.0f} s in all")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(result.gradients, out_dir / "gradient_statistics.csv")
    if result.training:
        write_csv(result.training, out_dir / "training_curves.csv")
        plot_training_curves(result.training, out_dir / "training_curves.png")
    settings = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    write_json({"settings": settings, "seconds": seconds, "gradients": result.gradients,
                 "training": result.training}, out_dir / "comparison.json")
    plot_gradient_statistics(result.gradients, out_dir / "gradient_statistics.png")
    print(f"results: {out_dir}/ ({', '.join(name for name in COMPARISON_FILES if (out_dir / name).exists())})")
    return 0


def snr_command(args: argparse.Namespace) -> int:
    """compare-estimators --num-particles K1,K2,...: the SNR of each estimator's guide and model gradients against
    the draws K, on the trained model (the fresh one with --train-epochs 0), with log-log slopes."""
    import pyro

    from pyro_vae.limits import FLOAT_BYTES, check_fits
    from pyro_vae.studies.snr import snr_against_particles

    given = [option for option, value in (("--train-steps", args.train_steps), ("--eval-every", args.eval_every),
                                          ("--baseline-warmup", args.baseline_warmup)) if value is not None]
    if given:
        raise PyroVAEError(f"--num-particles measures the SNR against K on one batch and trains no curves, so "
                           f"{', '.join(given)} would change nothing; drop {'it' if len(given) == 1 else 'them'}")
    _check_snr_estimators(args)
    for value, option in ((args.batch_size, "--batch-size"), (args.subset, "--subset")):
        check_positive(value, option)
    largest = _largest_draws(args)
    out_dir = _output_dir(args.out, SNR_FILES)
    start = time.perf_counter()

    def check(structure, dataset) -> None:
        if args.batch_size > len(dataset.train):
            raise PyroVAEError(f"--batch-size {args.batch_size} is larger than the {len(dataset.train)} training images")
        pixels = dataset.train.images[0].numel()
        # the draws' decoder outputs, their log-densities and gradients: about 8 tensors of (K, batch, pixels)
        check_fits(8 * largest * args.batch_size * pixels * FLOAT_BYTES,
                   f"--num-particles {largest:,} draws of {args.batch_size} images", "use fewer draws or a smaller "
                   "--batch-size", args.device)

    args.allow_untrained = True
    dataset, states = _dataset_and_states(args, check=check)
    state = "trained" if "trained" in states else "fresh"
    structure = states[state]
    pyro.set_rng_seed(args.seed)
    batch = _data_batch(dataset, args.batch_size, structure.needs_labels)
    rows = snr_against_particles(structure.model, structure.guide, batch, args.estimators, args.num_particles,
                                 num_repeats=args.repeats, progress=_progress(args))
    description = (f"{args.model if not args.run_dir else args.run_dir} ({state}), {args.batch_size} images, "
                   f"R = {args.repeats} estimates per K")
    _report_snr(rows, out_dir, description, time.perf_counter() - start, args, model_state=state)
    return 0


def _check_snr_estimators(args: argparse.Namespace) -> None:
    """--estimators for an SNR study: the multi-sample ones and reparam (the default: SNR_ESTIMATORS)."""
    args.estimators = args.estimators or list(SNR_ESTIMATORS)
    single = [name for name in args.estimators if name not in MULTI_SAMPLE_ESTIMATORS and name != "reparam"]
    if single:
        raise PyroVAEError(f"--num-particles varies the draws K of the multi-sample estimators (and of reparam, the "
                           f"ELBO averaged over K draws); {', '.join(single)} draw{'s' if len(single) == 1 else ''} one; "
                           f"choose among reparam, {', '.join(MULTI_SAMPLE_ESTIMATORS)}")


def _largest_draws(args: argparse.Namespace) -> int:
    """Draws per image at the largest K: MIWAE and PIWAE draw M K (M = 2 in the studies)."""
    return max(args.num_particles) * (2 if any(name in ("miwae", "piwae") for name in args.estimators) else 1)


def _report_snr(rows: list, out_dir, description: str, seconds: float, args: argparse.Namespace, **extra) -> None:
    """Print the SNR table and the fitted slopes; write SNR_FILES (tables, JSON with the settings, the plot)."""
    from pyro_vae.plots.estimators import plot_snr
    from pyro_vae.studies.snr import TAIL, snr_slopes

    slopes = snr_slopes(rows)
    columns = [("estimator", "estimator", "s"), ("num_particles", "K", "d"), ("guide_snr", "guide SNR", ".4g"),
               ("model_snr", "model SNR", ".4g"), ("guide_total_variance", "guide total var", ".4g"),
               ("model_total_variance", "model total var", ".4g"), ("seconds_per_gradient", "s / gradient", ".4f")]
    _print_table(rows, columns)
    print()
    _print_table(slopes, [("estimator", "estimator", "s"), ("group", "parameters", "s"),
                          ("slope", "slope of log SNR on log K", "+.3f"), ("slope_low", "95 % low", "+.3f"),
                          ("slope_high", "95 % high", "+.3f"), ("tail_slope", f"largest {TAIL} K: slope", "+.3f"),
                          ("tail_low", "95 % low", "+.3f"), ("tail_high", "95 % high", "+.3f")])
    print(f"{description}; {seconds:.0f} s in all")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / SNR_FILES[0])
    write_csv(slopes, out_dir / SNR_FILES[1])
    settings = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    write_json({"settings": settings, **extra, "seconds": seconds, "rows": rows, "slopes": slopes},
               out_dir / SNR_FILES[2])
    plot_snr(rows, slopes, out_dir / SNR_FILES[3], title=description)
    print("results: " + ", ".join(str(out_dir / name) for name in SNR_FILES))


def snr_toy_command(args: argparse.Namespace) -> int:
    """snr-toy: the SNR against K on Rainforth et al.'s Gaussian problem (studies.gaussian_snr)."""
    import pyro

    from pyro_vae.limits import FLOAT_BYTES, check_fits
    from pyro_vae.studies.gaussian_snr import GaussianProblem
    from pyro_vae.studies.snr import snr_against_particles

    _check_snr_estimators(args)
    check_seed(args.seed)
    check_positive(args.repeats, "--repeats")
    if args.repeats < 2:
        raise PyroVAEError("--repeats must be at least 2: a standard deviation needs two estimates")
    check_positive(args.dim, "--dim")
    check_positive(args.num_data, "--num-data")
    if not (args.perturbation >= 0 and args.perturbation < float("inf")):
        raise PyroVAEError(f"--perturbation must be a finite number >= 0, got {args.perturbation}")
    largest = _largest_draws(args)
    # the draws' tensors, about 8 of (K, N, D), and the R kept gradients of A (D x D), b and mu
    check_fits((8 * largest * args.num_data * args.dim + args.repeats * (args.dim ** 2 + 2 * args.dim)) * FLOAT_BYTES,
               f"--num-particles {largest:,} draws of {args.num_data} points in {args.dim} dimensions with "
               f"{args.repeats} kept gradients", "use fewer draws, less --num-data, a smaller --dim or fewer --repeats",
               "cpu")
    out_dir = _output_dir(args.out, SNR_FILES)
    start = time.perf_counter()
    problem = GaussianProblem.make(args.dim, args.num_data, args.perturbation, seed=args.seed)
    pyro.set_rng_seed(args.seed)
    rows = snr_against_particles(problem.model, problem.guide, (problem.x,), args.estimators, args.num_particles,
                                 num_repeats=args.repeats, progress=_progress(args))
    description = (f"Gaussian problem, D = {args.dim}, {args.num_data} points, parameters the optimum + "
                   f"N(0, {args.perturbation:g}²), R = {args.repeats} estimates per K")
    _report_snr(rows, out_dir, description, time.perf_counter() - start, args)
    return 0


def _data_batch(dataset, batch_size: int, with_labels: bool) -> tuple:
    from pyro_vae.data import iterate_batches

    return next(iterate_batches(dataset.train, batch_size, binarize=dataset.binarize, with_labels=with_labels))


def discrete_estimators_command(args: argparse.Namespace) -> int:
    import pyro

    from pyro_vae.studies.comparison import check_repeats
    from pyro_vae.studies.discrete import check_exact_gradient_exists, estimator_errors
    from pyro_vae.studies.estimators import BASELINE_LR_FACTOR
    from pyro_vae.plots.estimators import plot_estimator_errors

    _check_common(args)
    check_repeats(args.repeats)
    for value, option in ((args.batch_size, "--batch-size"), (args.subset, "--subset")):
        check_positive(value, option)
    if args.baseline_warmup < 0 or args.train_epochs < 0:
        raise PyroVAEError("--baseline-warmup and --train-epochs cannot be negative")
    estimators = [*args.estimators, *(concrete_name(t) for t in args.temperatures)]
    out_dir = _output_dir(args.out, DISCRETE_FILES)

    def check(structure, dataset) -> None:
        if args.batch_size > len(dataset.train):
            raise PyroVAEError(f"--batch-size {args.batch_size} is larger than the {len(dataset.train)} "
                               "training images")
        check_exact_gradient_exists(structure.guide, _data_batch(dataset, args.batch_size, structure.needs_labels))

    start = time.perf_counter()
    dataset, states = _dataset_and_states(args, check=check)
    state = "trained" if "trained" in states else "fresh"
    structure = states[state]
    pyro.set_rng_seed(args.seed)
    batch = _data_batch(dataset, args.batch_size, structure.needs_labels)
    rows = estimator_errors(structure.model, structure.guide, batch, estimators, args.sample_sizes, args.repeats,
                            baseline_warmup=args.baseline_warmup, baseline_lr=BASELINE_LR_FACTOR * args.lr,
                            progress=_progress(args))
    seconds = time.perf_counter() - start
    columns = [("estimator", "estimator", "s"), ("num_samples", "N", "d")]
    for group in ("guide", "model"):
        columns += [(f"{group}_bias", f"{group} bias", ".4g"), (f"{group}_bias_floor", f"{group} noise floor", ".3g"),
                    (f"{group}_total_variance", f"{group} variance", ".4g"), (f"{group}_mse", f"{group} MSE", ".4g")]
    columns.append(("seconds_per_gradient", "s / gradient", ".4f"))
    _print_table(rows, columns)
    description = (f"{args.model if not args.run_dir else args.run_dir} ({state}), {args.batch_size} images, "
                   f"R = {args.repeats} estimates per N")
    print(f"{description}; {seconds:.0f} s in all")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / DISCRETE_FILES[0])
    settings = {key: value for key, value in vars(args).items() if key not in ("handler", "command")}
    write_json({"settings": settings, "model_state": state, "seconds": seconds, "rows": rows},
               out_dir / DISCRETE_FILES[1])
    plot_estimator_errors(rows, out_dir / DISCRETE_FILES[2], title=description)
    print("results: " + ", ".join(str(out_dir / name) for name in DISCRETE_FILES))
    return 0


def _add_model_options(parser: argparse.ArgumentParser, *, default_model: str, train_epochs: int,
                       train_help: str) -> None:
    # the options of the model trained here default to None, so that --run-dir can refuse them when they are given
    # (the run's own structure and data are used); _check_common fills in these defaults otherwise
    defaults = {"train_epochs": train_epochs, "model": default_model, "z_dim": 50, "hidden_dims": [200, 200],
                "activation": "relu", "dataset": "binarized-mnist", "binarize": "none"}
    parser.set_defaults(model_defaults=defaults)
    model = parser.add_argument_group("model and data")
    model.add_argument("--run-dir", help="take the trained model, and its data settings, from this run directory "
                                         "('pyro-vae train') instead of training one here; the options marked "
                                         "'without --run-dir' are then refused")
    model.add_argument("--train-epochs", type=int, help=f"{train_help} (default: {train_epochs})")
    model.add_argument("--model", help=f"without --run-dir: one of {', '.join(sorted(MODEL_NAMES))}, "
                                       f"or your own as path/to/file.py:ClassName (default: {default_model})")
    model.add_argument("--model-option", action="append", metavar="KEY=VALUE", type=parse_model_option,
                       help="without --run-dir: a constructor argument of the model; repeat for several")
    model.add_argument("--z-dim", type=int, help="without --run-dir: latent dimensions (default: 50)")
    model.add_argument("--hidden-dims", type=parse_hidden_dims,
                       help="without --run-dir: hidden widths, comma-separated (default: 200,200)")
    model.add_argument("--activation", choices=sorted(ACTIVATION_NAMES), help="without --run-dir (default: relu)")
    model.add_argument("--dataset", choices=[name for name in DATASETS if name != "mnist"],
                       help="without --run-dir: a data set shipped with the package (binarized-mnist-labelled for "
                            "models that need labels) (default: binarized-mnist)")
    model.add_argument("--binarize", choices=BINARIZE_MODES,
                       help="without --run-dir: how grey-scale pixels become binary (default: none)")
    model.add_argument("--subset", type=int, default=10000, help="images per split (at most)")


def add_subcommands(subparsers) -> None:
    formatter = HelpFormatter
    toy = subparsers.add_parser(
        "reparam-toy", formatter_class=formatter,
        help="score function against reparameterization on d/dtheta E[x^2], x ~ N(theta, 1)",
        description="Estimate d/dθ E[x²] with x ~ N(θ, 1) through Pyro's ELBOs: Trace_ELBO differentiates the "
                    "reparameterized sample, 2(θ + ε); TraceGraph_ELBO with the site made non-reparameterized gives "
                    "the score function x²(x − θ). For each N, R repeated N-sample estimates give the mean and "
                    "variance of each, next to the analytic variances (θ⁴ + 14θ² + 15)/N and 4/N. Writes a table "
                    "(CSV, JSON) and a log-log plot of variance against N.")
    toy.add_argument("--theta", type=float, default=2.0, help="the location θ of q")
    toy.add_argument("--repeats", "-R", type=int, default=1000,
                     help="repeated estimates per N (at least 2). The work is R x sum(N) samples per estimator, done "
                          "in passes of at most 2 million, so memory stays bounded (about 1.5 GB) however large R "
                          "and N are; the expected time is printed first when it exceeds a minute")
    toy.add_argument("--sample-sizes", type=_positive_ints, default=",".join(map(str, TOY_SAMPLE_SIZES)),
                     help="comma-separated sample sizes N")
    toy.add_argument("--seed", type=int, default=0, help="random seed")
    toy.add_argument("--out", default="runs/reparam-toy", help="folder for reparam_toy.{csv,json,png}")
    toy.add_argument("--no-progress", action="store_true", help="no progress bars")
    toy.set_defaults(handler=reparam_toy_command)

    snr = subparsers.add_parser(
        "snr-toy", formatter_class=formatter,
        help="SNR of the guide's and the model's gradients against K on Rainforth et al.'s Gaussian problem",
        description="The signal-to-noise ratio of each multi-sample estimator's guide and model gradients against "
                    "the draws K, on the problem where Rainforth et al. 2018 derive its rates: z ~ N(mu, I), "
                    "x | z ~ N(z, I) in D dimensions, q(z | x) = N(Ax + b, 2/3 I), the parameters at their "
                    "optimum (mu the data's mean, A = I/2, b = mu/2) moved by N(0, p^2) noise. Under the IWAE bound "
                    "the guide's SNR falls as K^(-1/2) and the model's rises as K^(+1/2) (Rainforth et al.); DReG's "
                    "guide SNR rises (Tucker et al. 2019). Each K gets R gradient estimates on the same data; the "
                    "SNR per parameter is |mean| / std with the squared mean debiased, averaged over the guide's "
                    "(A, b) and the model's (mu) parameters; log-log slopes over every K and over the largest four. "
                    "Seconds, not minutes, for the defaults. Writes " + ", ".join(SNR_FILES) + ".")
    snr.add_argument("--num-particles", type=_positive_ints, default="1,3,10,30,100,300,1000", metavar="K1,K2,...",
                     help="the numbers of draws K")
    snr.add_argument("--estimators", type=_estimator_names, default=",".join(SNR_ESTIMATORS),
                     help=f"comma-separated, among reparam and {','.join(MULTI_SAMPLE_ESTIMATORS)}")
    snr.add_argument("--dim", type=int, default=20, help="dimensions D of z and x")
    snr.add_argument("--num-data", type=int, default=32, help="data points in every gradient estimate")
    snr.add_argument("--perturbation", type=float, default=0.01,
                     help="standard deviation of the noise added to each parameter at the optimum")
    snr.add_argument("--repeats", "-R", type=int, default=1000, help="gradient estimates per estimator and K")
    snr.add_argument("--seed", type=int, default=0, help="random seed (data, perturbation and draws)")
    snr.add_argument("--out", default="runs/snr-toy", help="folder for " + ", ".join(SNR_FILES))
    snr.add_argument("--no-progress", action="store_true", help="no progress bars")
    snr.set_defaults(handler=snr_toy_command)

    compare = subparsers.add_parser(
        "compare-estimators", formatter_class=formatter,
        help="gradient variance, SNR and cost of ELBO gradient estimators on any structure; training with each",
        description="For a freshly initialised model and a trained one, estimate the gradient of the ELBO on one "
                    "batch R times with each estimator and report, for the guide's and the model's parameters, "
                    "the norm of the mean gradient, the total variance and the signal-to-noise ratio, with the "
                    "seconds per gradient. Then train from the fresh initialisation with each estimator for the "
                    "same steps and plot the validation ELBO against steps and seconds. An estimator that does "
                    "not apply to the model's latent sites (a pathwise one on a discrete site, enumeration without "
                    "a site marked for it, the relaxation without a one-hot site) is listed as not applicable, "
                    "with the reason. Estimators: "
                    + "; ".join(f"{name}: {summary}" for name, summary in ESTIMATOR_SUMMARIES.items()) + ".")
    _add_model_options(compare, default_model="vae", train_epochs=3,
                       train_help="without --run-dir: epochs of training (the structure's default ELBO) for the "
                                  "trained model")
    comparison = compare.add_argument_group("comparison")
    comparison.add_argument("--estimators", type=_estimator_names,
                            help=f"comma-separated estimators (default: {','.join(DEFAULT_ESTIMATORS)}; with "
                                 f"--num-particles: {','.join(SNR_ESTIMATORS)})")
    comparison.add_argument("--num-particles", type=_positive_ints, metavar="K1,K2,...",
                            help="instead of the gradient table and the training curves: the signal-to-noise ratio "
                                 "of each estimator's guide and model gradients at each number of draws K, on the "
                                 "trained model, drawn on log-log axes with fitted slopes and their 95 %% intervals "
                                 "(Rainforth et al. 2018: IWAE's guide slope near -1/2, its model's near +1/2; "
                                 "Tucker et al. 2019: DReG's guide slope >= 0); e.g. 1,3,10,30,100,300,1000. "
                                 "Writes " + ", ".join(SNR_FILES))
    comparison.add_argument("--batch-size", type=int, default=100, help="images per gradient estimate and SVI step")
    comparison.add_argument("--repeats", "-R", type=int, default=100, help="gradient estimates per estimator and model")
    comparison.add_argument("--baseline-warmup", type=int,
                            help="estimates on the same batch before measuring, for the baselines to settle "
                                 "(default: 100)")
    comparison.add_argument("--train-steps", type=int,
                            help="SVI steps of training with each estimator (0: no training curves) (default: 1000)")
    comparison.add_argument("--eval-every", type=int, help="steps between validation ELBOs (default: 50)")
    comparison.add_argument("--lr", type=float, default=1e-3,
                            help="Adam learning rate (the neural baseline's is 10 times larger)")
    comparison.add_argument("--seed", type=int, default=0, help="random seed")
    comparison.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the models and data live")
    comparison.add_argument("--out", default="runs/compare-estimators", help="folder for the tables and plots")
    comparison.add_argument("--no-progress", action="store_true", help="no progress bars")
    compare.set_defaults(handler=compare_estimators_command)

    discrete = subparsers.add_parser(
        "discrete-estimators", formatter_class=formatter,
        help="bias, variance and MSE of gradient estimators for discrete latents against the exact gradient",
        description="On a structure whose latent sites are all discrete and marked for enumeration (the "
                    "Bernoulli mixture by default), TraceEnum_ELBO gives the exact gradient of the ELBO on one "
                    "batch. Every other estimator then estimates it R times with N samples each (N = "
                    "num_particles, vectorized), for each N, and the table reports, for the guide's and the model's "
                    "parameters: the bias ||mean - exact||, the noise floor sqrt(variance / R) that an unbiased "
                    "estimator's measured bias stays near, the total variance (trace of the covariance) and the "
                    "mean squared error E||estimate - exact||^2 = bias^2 + variance. Unbiased estimators' MSE falls "
                    "as 1/N; the Concrete relaxation's levels off at its bias^2, which shrinks as the temperature "
                    "falls while its variance grows. Estimators: " + "; ".join(
                        f"{name}: {ESTIMATOR_SUMMARIES[name]}" for name in DISCRETE_BASE_ESTIMATORS)
                    + "; concrete-T for each --temperatures T: one-hot sites relaxed by the Gumbel-softmax at "
                    "temperature T, with the exact categorical KL (TraceMeanField_ELBO; biased, less as T falls). "
                    "Writes "
                    + ", ".join(DISCRETE_FILES) + " (MSE, variance and bias against N, log-log).")
    _add_model_options(discrete, default_model="bernoulli-mixture", train_epochs=1,
                       train_help="without --run-dir: epochs of training (the structure's default ELBO) before "
                                  "measuring; 0 measures the freshly initialised model")
    study = discrete.add_argument_group("study")
    study.add_argument("--estimators", type=_estimator_names, default=",".join(DISCRETE_BASE_ESTIMATORS),
                       help="comma-separated estimators besides the Concrete ones")
    study.add_argument("--temperatures", type=_positive_floats,
                       default=",".join(f"{t:g}" for t in CONCRETE_TEMPERATURES),
                       help="comma-separated temperatures of the Concrete relaxation (one estimator each)")
    study.add_argument("--sample-sizes", type=_positive_ints, default=",".join(map(str, DISCRETE_SAMPLE_SIZES)),
                       help="comma-separated numbers of samples N per estimate")
    study.add_argument("--repeats", "-R", type=int, default=100, help="repeated N-sample estimates per estimator and N")
    study.add_argument("--batch-size", type=int, default=100, help="images in the batch (and per training step)")
    study.add_argument("--baseline-warmup", type=int, default=100,
                       help="estimates on the same batch before measuring, for the baselines to settle")
    study.add_argument("--lr", type=float, default=1e-3,
                       help="Adam learning rate of the training; the neural baseline learns at 10 times this")
    study.add_argument("--seed", type=int, default=0, help="random seed")
    study.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the models and data live")
    study.add_argument("--out", default="runs/discrete-estimators", help="folder for " + ", ".join(DISCRETE_FILES))
    study.add_argument("--no-progress", action="store_true", help="no progress bars")
    discrete.set_defaults(handler=discrete_estimators_command, allow_untrained=True)
