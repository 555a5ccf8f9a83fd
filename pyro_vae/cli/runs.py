"""``pyro-vae evaluate``, ``sample``, ``beta-sweep`` and ``disentanglement``, and the parsers of every command
that trains or reads a run."""
from __future__ import annotations

import argparse
import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path

from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT, FACTOR_DATASETS, SWEPT_DEFAULTS, SWEPT_MODELS
from pyro_vae.cli.common import HelpFormatter, existing_run_dir
from pyro_vae.cli.options import (_add_dci_trees_option, _add_train_options, _add_trained_run_options, _betas,
                                  _given_options, _listed, _seeds)
from pyro_vae.cli.train import train_command
from pyro_vae.config import TrainConfig, check_positive, check_seed
from pyro_vae.errors import PyroVAEError, first_line
from pyro_vae.files import check_can_create_dir, check_can_write_file, make_dir, run_lock

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.


def _repair(run_dir: Path, which: str = "best") -> None:
    """A run left inconsistent by an interrupted write is repaired before it is read, where it can be written
    (:func:`pyro_vae.training.repair_run`); a read-only one is read as it is, and so is the ``best.pt`` of a run
    whose ``checkpoint.pt`` is damaged, when ``which`` asks for the best."""
    from pyro_vae.errors import CheckpointError
    from pyro_vae.files import FileSystemError
    from pyro_vae.training import load_checkpoint, repair_run

    if (run_dir / CHECKPOINT).is_file() and os.access(run_dir, os.W_OK):
        try:
            checkpoint = load_checkpoint(run_dir / CHECKPOINT)
        except CheckpointError as err:  # damaged: nothing to repair from, but best.pt may be whole
            if which != "best" or not (run_dir / BEST_CHECKPOINT).is_file():
                raise
            print(f"note: {first_line(err)}; its {BEST_CHECKPOINT} is read as it is")
            return
        try:
            for note in repair_run(run_dir, checkpoint):
                print(f"repaired after an interrupted write: {note}")
        except FileSystemError as err:  # a full disk, say: the run is read as it is, and --out can still be written
            print(f"note: the run could not be repaired ({err}); it is read as it is")


def evaluate_command(args: argparse.Namespace) -> int:
    from pyro_vae.pretrained import is_exported
    from pyro_vae.training import describe_checkpoint, load_trained_model, resolve_device

    check_positive(args.subset, "--subset", optional=True)
    check_positive(args.num_samples, "--num-samples", optional=True)
    check_seed(args.seed)
    resolve_device(args.device)
    if is_exported(args.run_dir):
        return _evaluate_exported(args)
    run_dir = existing_run_dir(args.run_dir)
    if args.out:
        out = Path(args.out)
        check_can_write_file(out, "--out")
    else:
        part = f"-subset{args.subset}" if args.subset else ""
        last = "-last" if args.checkpoint == "last" and (run_dir / BEST_CHECKPOINT).is_file() else ""
        out = run_dir / f"evaluation-{args.split}-K{args.num_samples}{part}{last}.json"
        try:
            check_can_write_file(out, "the result")
        except PyroVAEError as err:
            raise PyroVAEError(f"{err}; pass --out FILE to write the result elsewhere") from None
    with run_lock(run_dir):
        _repair(run_dir, args.checkpoint)
        model, config, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
        model.eval()  # as train's own final evaluation
        _measure(model, config, args, out, f"{describe_checkpoint(checkpoint)} of {args.run_dir}",
                 {"checkpoint": checkpoint["kind"], "epoch": checkpoint["epoch"]})
    return 0


def _measure(model, config, args: argparse.Namespace, out: Path, what: str, extra: dict) -> None:
    """evaluate's measures of a loaded model on its run's data: printed, then written to ``out`` as JSON."""
    import pyro

    from pyro_vae.evaluation import describe_evaluation, evaluate
    from pyro_vae.training import load_run_data, write_json

    if args.collapse:
        from pyro_vae.evaluation.collapse import check_collapse_applies

        check_collapse_applies(model)
    dataset = load_run_data(config, device=args.device, subset=args.subset)
    pyro.set_rng_seed(args.seed)
    print(f"evaluating {what}")
    result = evaluate(model, dataset, args.split, args.num_samples, extra=extra)
    print(describe_evaluation(result))  # printed first, so that a failed write loses no figure
    if args.collapse:
        result["collapse"] = _collapse(model, dataset, args.split, out)
    write_json(result, out)
    print(f"written to {out}")


def _evaluate_exported(args: argparse.Namespace) -> int:
    """evaluate pretrained:NAME or an exported folder: the same measures, written to --out or the current folder."""
    from pyro_vae.pretrained import load, model_name, resolve

    folder = resolve(args.run_dir)
    part = f"-subset{args.subset}" if args.subset else ""
    name = model_name(args.run_dir)
    out = Path(args.out) if args.out else Path(f"evaluation-{name}-{args.split}-K{args.num_samples}{part}.json")
    check_can_write_file(out, "--out")
    model, config, info = load(str(folder), args.device)  # the folder found above: hf: fetches once
    _measure(model, config, args, out, f"the exported {info['kind']} checkpoint (epoch {info['epoch']}) in {folder}",
             {"checkpoint": info["kind"], "epoch": info["epoch"], "exported": str(folder)})
    return 0


def export_command(args: argparse.Namespace) -> int:
    from pyro_vae.pretrained import CARD, check_export_folder, export_run, hub_repo, push_to_hub, require_hub

    run_dir = existing_run_dir(args.run_dir)
    out = Path(args.out_dir)
    check_export_folder(out)  # before the run is locked or repaired
    if args.push_to_hub:  # and the repository's name and the package, before anything is written
        hub_repo(args.push_to_hub, "--push-to-hub")
        require_hub()
    with run_lock(run_dir):
        _repair(run_dir, args.checkpoint)
        export_run(run_dir, out, which=args.checkpoint, command=args.command_line)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"exported {run_dir} to {out} ({size:.1f} MB; its card: {out / CARD}); load it with "
          f"pyro-vae evaluate {out}, pyro-vae sample {out} or pyro_vae.pretrained.load({str(out)!r})")
    if args.push_to_hub:
        address = push_to_hub(out, args.push_to_hub, private=args.private)
        print(f"uploaded to {address}; anyone with access loads it as hf:{args.push_to_hub}")
    return 0


def pretrained_command(args: argparse.Namespace) -> int:
    from pyro_vae.pretrained import PREFIX, available

    models = available()
    if not models:
        print("no pretrained models in this package")
        return 0
    print("| name | MB | structure | data | epoch | valid ELBO | test NLL |")
    print("|---|---:|---|---|---:|---:|---:|")
    for m in models:
        valid = f"{m['valid_elbo']:.2f}" if m["valid_elbo"] is not None else ""
        nll = f"{m['test_nll']:.2f}" if m["test_nll"] is not None else ""
        print(f"| {PREFIX}{m['name']} | {m['megabytes']:.1f} | {m['model']} | {m['dataset']} | {m['epoch']} | "
              f"{valid} | {nll} |")
    return 0


def _collapse(model, dataset, split: str, out: Path) -> dict:
    """Print the collapse diagnostics, draw them beside ``out``; returns them for the JSON."""
    from pyro_vae.evaluation import evaluation_batches
    from pyro_vae.evaluation.collapse import collapse_diagnostics
    from pyro_vae.plots.collapse import plot_collapse

    result = collapse_diagnostics(model, evaluation_batches(model, dataset, split))
    kl = f"; KL {result['kl']:.2f} nats" if "kl" in result else f" (no KL per dimension: {result['kl_per_dim_omitted']})"
    mi = (f"; I(x; z) {result['mutual_information']:.2f} nats on {result['mutual_information_points']} images "
          f"(at most log N = {result['mutual_information_cap']:.2f})" if "mutual_information" in result
          else f"; no I(x; z): {result['mutual_information_omitted']}")
    print(f"{result['active_units']} of {result['dims']} units of {result['site']!r} active{kl}{mi}")
    picture = out.with_name(out.stem + "-collapse.png")
    plot_collapse(result, picture)
    print(f"collapse diagnostics drawn in {picture}")
    return result


def interpolate_command(args: argparse.Namespace) -> int:
    import pyro
    import torch

    from pyro_vae.evaluation import evaluation_batches
    from pyro_vae.evaluation.interpolation import interpolate
    from pyro_vae.plots.training import picture_shape, plot_images
    from pyro_vae.training import describe_checkpoint, load_run_data, load_trained_model, resolve_device

    check_positive(args.pairs, "--pairs")
    check_positive(args.steps, "--steps")
    if args.steps < 2:
        raise PyroVAEError(f"--steps counts the path's images, its two ends among them: at least 2, got {args.steps}")
    if args.pairs * args.steps > 10_000:
        raise PyroVAEError(f"--pairs {args.pairs} x --steps {args.steps} is {args.pairs * args.steps:,} images, too many "
                           "for one picture; at most 10,000")
    check_seed(args.seed)
    resolve_device(args.device)
    run_dir = existing_run_dir(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "interpolation.png"
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise PyroVAEError(f"--out {args.out} must name a picture file ending in {', '.join(PICTURE_SUFFIXES)}")
    check_can_write_file(out, "--out")
    with run_lock(run_dir):
        _repair(run_dir, args.checkpoint)
        model, config, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
        model.eval()
        if model.data_kind == "sequences":
            raise PyroVAEError("interpolation draws paths between the codes of two images; a structure over sequences "
                               "has a code at every step, with no one path between two sequences")
        if model.needs_labels:
            raise PyroVAEError("this structure is conditional on a label, which a path between two images would have "
                               "to cross too; interpolate a structure without labels")
        probe = pyro.poutine.trace(model.guide).get_trace(torch.zeros(1, model.x_dim, device=model.device))
        if probe.nodes[model.code_site]["fn"].has_enumerate_support:
            raise PyroVAEError(f"the code {model.code_site!r} of this structure is discrete: there is no path between "
                               "two of its values")
        dataset = load_run_data(config, device=args.device)
        images = torch.cat([batch[0] for batch in evaluation_batches(model, dataset, args.split)])
        if 2 * args.pairs > images.shape[0]:
            raise PyroVAEError(f"--pairs {args.pairs} needs {2 * args.pairs} images; the {args.split} split has "
                               f"{images.shape[0]}")
        pyro.set_rng_seed(args.seed)
        chosen = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(args.seed))[:2 * args.pairs]
        x_a, x_b = images[chosen[:args.pairs].to(images.device)], images[chosen[args.pairs:].to(images.device)]
        path = interpolate(model, x_a, x_b, args.steps, spherical=args.spherical)
        rows = torch.cat([torch.cat([a.unsqueeze(0), p, b.unsqueeze(0)]) for a, p, b in
                          zip(x_a, path.reshape(args.pairs, args.steps, -1), x_b)])
        kind = "spherical" if args.spherical else "linear"
        plot_images(rows, out, nrow=args.steps + 2, image_shape=picture_shape(model),
                    title=f"{kind} paths between the codes of {args.split} images (first and last: the images)")
        print(f"wrote {args.pairs} {kind} paths of {args.steps} decoded codes from {describe_checkpoint(checkpoint)} "
              f"to {out}")
    return 0


#: the picture formats ``sample --out`` writes (by the file's suffix)
PICTURE_SUFFIXES = (".png", ".pdf", ".svg")


def sample_command(args: argparse.Namespace) -> int:
    import pyro
    import torch

    from pyro_vae.plots.training import picture_shape, plot_images
    from pyro_vae.training import describe_checkpoint, load_trained_model, resolve_device

    check_positive(args.num, "--num", optional=True)
    check_positive(args.nrow, "--nrow", optional=True)
    check_seed(args.seed)
    resolve_device(args.device)
    from pyro_vae.pretrained import is_exported, resolve

    if is_exported(args.run_dir):
        run_dir = resolve(args.run_dir)
        out = Path(args.out) if args.out else Path(f"generated-{run_dir.name}.png")
    else:
        run_dir = existing_run_dir(args.run_dir)
        out = Path(args.out) if args.out else run_dir / "generated.png"
    named_folder = bool(args.out) and args.out.endswith(("/", os.sep))  # a folder, made if new
    if out.is_dir() or named_folder:  # the picture goes in it
        out = out / "generated.png"
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise PyroVAEError(f"--out {args.out} must name a picture file ending in {', '.join(PICTURE_SUFFIXES)}, or a "
                           "folder (an existing one, or a new one written with a trailing /)")
    if named_folder and out.parent.exists() and not out.parent.is_dir():
        raise PyroVAEError(f"--out {args.out} names a folder, and {out.parent} is a file")
    if named_folder and not out.parent.exists():
        check_can_create_dir(out.parent, "--out")
        make_dir(out.parent, "--out")
    check_can_write_file(out, "--out")
    from pyro_vae.pretrained import is_exported, load

    exported = is_exported(args.run_dir)
    with contextlib.nullcontext() if exported else run_lock(run_dir):
        if exported:
            model, _, info = load(args.run_dir, args.device)
            print(f"sampling from the exported {info['kind']} checkpoint (epoch {info['epoch']}) in {info['folder']}")
        else:
            _repair(run_dir, args.checkpoint)
            model, _, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
            print(f"sampling from {describe_checkpoint(checkpoint)} of {args.run_dir}")
        model.eval()  # as train's own pictures
        pyro.set_rng_seed(args.seed)
        if model.conditional and args.label is None:
            raise PyroVAEError("this model is conditional: choose the digit with --label 0-9")
        if args.label is not None and not (model.conditional or model.semi_supervised):
            raise PyroVAEError("--label is for models that take a label, such as cvae and ss-vae; this one does not")
        num_classes = getattr(model, "num_classes", None)
        if args.label is not None and num_classes is not None and not 0 <= args.label < num_classes:
            raise PyroVAEError(f"--label must be a class from 0 to {num_classes - 1}, got {args.label}")
        from pyro_vae.limits import check_samples_fit

        hidden = sum(getattr(model, "hidden_dims", None) or [0])
        values = getattr(model, "num_components", None) or getattr(model, "num_classes", None) or 1
        if values > 1 and args.label is None and args.num is not None:
            raise PyroVAEError(f"--num {args.num}: this structure draws a row of --nrow images for each of the {values} "
                               "values of the discrete latent in its prior; give --nrow instead"
                               + (", or --label K for --num images of one class" if model.semi_supervised else ""))
        args.num = 64 if args.num is None else args.num
        drawn = args.nrow * values if values > 1 and args.label is None else args.num  # a row per value, or --num
        check_samples_fit(drawn, model.x_dim, hidden, min(args.nrow, drawn) if values == 1 else args.nrow,
                          args.device)
        per_value = None if args.label is not None else model.generate_per_value(args.nrow)
        if per_value is not None:
            site, images = per_value
            plot_images(images, out, nrow=args.nrow, title=f"row k: {site} = k, {args.nrow} draws each",
                        image_shape=picture_shape(model))
            print(f"wrote {args.nrow} samples for each of the {len(images) // args.nrow} values of {site!r} to {out}")
            return 0
        conditioning = () if args.label is None else (torch.full((args.num,), args.label, dtype=torch.long),)
        title = f"{args.num} samples from the prior" + (f" of digit {args.label}" if conditioning else "")
        plot_images(model.generate(args.num, *conditioning), out, nrow=args.nrow, title=title,
                    image_shape=picture_shape(model))
    print(f"wrote {args.num} samples to {out}")
    return 0


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


def add_subcommands(subparsers) -> None:
    formatter = HelpFormatter
    train = subparsers.add_parser(
        "train", help="train a VAE with SVI, then evaluate it and draw its pictures",
        description="Train a latent structure with pyro.infer.SVI. Each epoch writes metrics.jsonl and a checkpoint "
                    "to the run directory; at the end the test ELBO and importance-sampled NLL are written to "
                    "evaluation.json and the pictures (curves, samples, reconstructions, and for --z-dim 2 the "
                    "latent space) to PNG files.")
    _add_train_options(train)
    where = train.add_argument_group("run directory")
    where.add_argument("--name", help="run name: the run goes to runs/NAME under the current directory "
                                      "(default: vae-DATE-TIME)")
    where.add_argument("--run-dir", help="the run directory itself (overrides --name)")
    where.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last checkpoint (options may be left out)")
    where.add_argument("--eval-samples", type=int, default=100,
                       help="importance samples K per test image for the final NLL; 'pyro-vae evaluate' uses 5000 "
                            "(default: 100)")
    where.add_argument("--no-progress", action="store_true", help="no progress bars")
    processes = train.add_argument_group("several processes")
    processes.add_argument("--nproc-per-node", type=int, metavar="N",
                           help="data-parallel training on N processes of this machine (gloo on CPUs; one GPU each "
                                "with --device cuda): every option, the run directory and the data are checked "
                                "here first, so that a mistake is one sentence, then torch's elastic launcher starts "
                                "N processes running 'python -m pyro_vae train' with the other options, as "
                                "'torchrun --standalone --nproc-per-node N -m pyro_vae train' would; when one fails, "
                                "the command ends with its exit status. Each runs OMP_NUM_THREADS torch threads, "
                                "the cores divided among the processes unless it is set. Resume with the same N. For "
                                "several machines call torchrun yourself (see docs/distributed.md) (default: 1, this process)")
    train.set_defaults(handler=train_command)

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

    evaluate = subparsers.add_parser(
        "evaluate", formatter_class=formatter, help="test ELBO and importance-sampled NLL of a trained run",
        description="Estimate log p(x) by importance sampling with K samples from the guide per image "
                    "(the IWAE bound; K = 5000 is what the literature reports) and the ELBO, in nats per image.")
    evaluate.add_argument("run_dir", help="a run directory written by 'pyro-vae train', a folder written by "
                          "'pyro-vae export', pretrained:NAME (pyro-vae pretrained lists them) or "
                          "hf:OWNER/NAME[@REVISION] (the Hugging Face Hub)")
    evaluate.add_argument("--num-samples", "-K", type=int, default=5000, help="importance samples per image")
    evaluate.add_argument("--split", choices=("train", "valid", "test"), default="test", help="which split")
    evaluate.add_argument("--subset", type=int, help="evaluate N evenly spaced images of the split, for a quick check "
                                                     "(default: all; written to a file of its own)")
    evaluate.add_argument("--out", metavar="FILE",
                          help="where to write the result as JSON, e.g. for a run in a read-only folder (default: "
                               "RUN_DIR/evaluation-SPLIT-KK[-subsetN][-last].json)")
    evaluate.add_argument("--collapse", action="store_true",
                          help="also the posterior-collapse diagnostics of the code: the KL of each latent dimension "
                               "(where q and the prior are diagonal Gaussians), the active units (Burda et al. 2016: "
                               "Cov_x(E_q[z_i]) > 0.01) and the mutual information I(x; z) of the aggregate posterior "
                               "(Hoffman & Johnson 2016) on up to 2,000 images; into the JSON under 'collapse', and "
                               "a bar chart collapse.png beside it")
    _add_trained_run_options(evaluate, "random seed for the samples")
    evaluate.set_defaults(handler=evaluate_command)

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

    sample = subparsers.add_parser(
        "sample", formatter_class=formatter, help="draw images from a trained model's prior",
        description="Sample z from the prior, decode, and save the mean images as a PNG grid. A structure with a "
                    "discrete latent in its prior (bernoulli-mixture, gmvae, ss-vae) gets one row per value of it "
                    "(component or class) with --nrow draws each, unless --label picks one class.")
    sample.add_argument("run_dir", help="a run directory written by 'pyro-vae train', a folder written by "
                        "'pyro-vae export', pretrained:NAME (pyro-vae pretrained lists them) or "
                        "hf:OWNER/NAME[@REVISION] (the Hugging Face Hub)")
    sample.add_argument("--num", type=int, help="how many images (default: 64; a structure with a discrete latent in "
                                                "its prior draws --nrow per value instead)")
    sample.add_argument("--nrow", type=int, default=8, help="images per row")
    sample.add_argument("--out", help="picture to write (.png, .pdf or .svg), or a folder to write generated.png into "
                                      "(default: RUN_DIR/generated.png)")
    sample.add_argument("--label", type=int, help="for a model that takes a label (cvae, ss-vae): the digit to draw")
    _add_trained_run_options(sample, "random seed")
    sample.set_defaults(handler=sample_command)

    export = subparsers.add_parser(
        "export", formatter_class=formatter, help="write a run's model as a folder of plain files to share",
        description="Write a run's best (or last) checkpoint as an exported model: weights.safetensors (no pickle), "
                    "config.json, the run's metrics and evaluations, a model card README.md and SHA256SUMS, checked "
                    "on every load. 'pyro-vae evaluate DIR', 'pyro-vae sample DIR' and pyro_vae.pretrained.load(DIR) "
                    "take the folder like a run; put it on any file host to share it, or on the Hugging Face Hub with "
                    "--push-to-hub OWNER/NAME, which anyone with access then reads as hf:OWNER/NAME wherever a run "
                    "directory goes.")
    export.add_argument("run_dir", help="a run directory written by 'pyro-vae train'")
    export.add_argument("out_dir", help="the folder to write (new, or empty)")
    export.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which model of the run")
    export.add_argument("--command-line", metavar="TEXT", help="the command that trained the run, for the card")
    export.add_argument("--push-to-hub", metavar="OWNER/NAME",
                        help="then upload the folder to this Hugging Face Hub repository (made if new; needs the "
                             "huggingface_hub package and a token: hf auth login, or HF_TOKEN)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: make a new repository private")
    export.set_defaults(handler=export_command)

    shipped = subparsers.add_parser(
        "pretrained", formatter_class=formatter, help="list the trained models shipped with the package",
        description="List the models in the package (pyro_vae/pretrained_models/) with their size, structure, data, "
                    "epoch, validation ELBO and test NLL; use one as pretrained:NAME wherever a run directory goes "
                    "(pyro-vae evaluate pretrained:NAME -K 5000, pyro-vae sample pretrained:NAME).")
    shipped.set_defaults(handler=pretrained_command)

    between = subparsers.add_parser(
        "interpolate", formatter_class=formatter, help="decoded paths between the codes of pairs of images",
        description="Encode pairs of images of a split (drawn at random with --seed), walk from one code to the other "
                    "in --steps steps, linearly or along a great circle (--spherical, Shoemake's slerp), decode each "
                    "step and draw one row per pair: the first image, the path, the second image.")
    between.add_argument("run_dir", help="a run directory written by 'pyro-vae train'")
    between.add_argument("--pairs", type=int, default=8, help="pairs of images, one row each")
    between.add_argument("--steps", type=int, default=10, help="decoded codes per path, its two ends included")
    between.add_argument("--spherical", action="store_true", help="slerp instead of a straight line")
    between.add_argument("--split", choices=("train", "valid", "test"), default="test", help="where the images come from")
    between.add_argument("--out", help="picture to write (.png, .pdf or .svg; default: RUN_DIR/interpolation.png)")
    _add_trained_run_options(between, "random seed: which images")
    between.set_defaults(handler=interpolate_command)
