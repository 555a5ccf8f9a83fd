"""``pyro-vae compare-estimators`` and ``pyro-vae discrete-estimators``: ELBO gradient estimators on a VAE and
on discrete latents; ``add_subcommands`` also sets up ``reparam-toy`` (:mod:`pyro_vae.cli.toy`) and ``snr-toy``
(:mod:`pyro_vae.cli.snr`)."""
from __future__ import annotations

import argparse
import time

from pyro_vae.catalog import (ACTIVATION_NAMES, BINARIZE_MODES, CONCRETE_TEMPERATURES, DATASETS, DEFAULT_ESTIMATORS,
                              DISCRETE_BASE_ESTIMATORS, DISCRETE_SAMPLE_SIZES, ESTIMATOR_SUMMARIES, MODEL_NAMES,
                              SNR_ESTIMATORS, TOY_SAMPLE_SIZES, concrete_name)
from pyro_vae.cli.common import HelpFormatter
from pyro_vae.cli.options import parse_hidden_dims, parse_model_option
from pyro_vae.cli.snr import add_snr_toy_parser, snr_command
from pyro_vae.cli.study_setup import _check_common, _data_batch, _dataset_and_states
from pyro_vae.cli.tables import (COMPARISON_FILES, DISCRETE_FILES, SNR_FILES, _estimator_names, _output_dir, _positive_floats,
                                 _positive_ints, _print_table, _progress)
from pyro_vae.cli.toy import reparam_toy_command
from pyro_vae.config import check_positive
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import write_csv, write_json

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


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

    add_snr_toy_parser(subparsers, formatter)

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
