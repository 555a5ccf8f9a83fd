"""``pyro-vae compare-estimators --snr`` on a structure and ``pyro-vae snr-toy``: the signal-to-noise ratio of the
multi-sample estimators' gradients against the number of draws K."""
from __future__ import annotations

import argparse
import time

from pyro_vae.catalog import MULTI_SAMPLE_ESTIMATORS, SNR_ESTIMATORS
from pyro_vae.cli.study_setup import _data_batch, _dataset_and_states
from pyro_vae.cli.tables import SNR_FILES, _estimator_names, _output_dir, _positive_ints, _print_table, _progress
from pyro_vae.config import check_positive, check_seed
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import write_csv, write_json

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


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


def add_snr_toy_parser(subparsers, formatter) -> None:
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
