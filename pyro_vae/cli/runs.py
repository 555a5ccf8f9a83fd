"""``pyro-vae evaluate``, ``sample``, ``export``, ``pretrained`` and ``interpolate``, and the parsers of every
command that trains or reads a run (the training's and the sweeps' own beside their commands)."""
from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT
from pyro_vae.cli.common import HelpFormatter, existing_run_dir
from pyro_vae.cli.options import _add_trained_run_options
from pyro_vae.cli.sweeps import add_disentanglement_parser, add_sweep_parser
from pyro_vae.cli.train import add_train_parser
from pyro_vae.config import check_positive, check_seed
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


def add_subcommands(subparsers) -> None:
    formatter = HelpFormatter
    add_train_parser(subparsers)
    add_sweep_parser(subparsers)

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

    add_disentanglement_parser(subparsers, formatter)

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
