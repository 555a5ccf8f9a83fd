"""``pyro-vae train``, ``evaluate`` and ``sample``."""
from __future__ import annotations

import argparse
import ast
import time
from dataclasses import fields, replace
from pathlib import Path

from pyro_vae.catalog import (ACTIVATION_NAMES, BASELINES, BEST_CHECKPOINT, BINARIZE_MODES, CHECKPOINT,
                              CHECKPOINT_CHOICES, DATASETS, DCI_TREES, ELBO_HELP, ELBO_NAMES, ENUM_MODELS,
                              FACTOR_DATASETS, LIKELIHOOD_HELP, LIKELIHOOD_NAMES, METRICS, MODEL_NAMES, NET_HELP,
                              NET_NAMES, OPTIMIZER_NAMES, SCHEDULE_HELP, SCHEDULES, SWEPT_DEFAULTS, SWEPT_MODELS,
                              TORCHVISION_NAMES, is_dataset_path)
from pyro_vae.cli.common import HelpFormatter, existing_run_dir
from pyro_vae.config import SELECT_BY, TrainConfig, check_positive, check_seed, selection_value
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import check_can_create_dir, check_can_write_file, locked_run_dir, run_lock

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.
DEFAULTS = TrainConfig()
#: the data sets shipped with the package (--dataset's help names the torchvision and dSprites ones apart)
SHIPPED_DATASETS = tuple(name for name in DATASETS if name not in TORCHVISION_NAMES + FACTOR_DATASETS)


def parse_hidden_dims(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 200,200, got {text!r}")
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be positive, got {text!r}")
    return sizes


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Options mirror TrainConfig; their default is None so that a resumed run can tell what was given."""
    d = DEFAULTS
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME|PATH",
                      help=f"data set: {', '.join(SHIPPED_DATASETS)} (shipped with the package), "
                           f"{', '.join(TORCHVISION_NAMES)} (torchvision, from --data-dir), dsprites-procedural "
                           "(dSprites rendered here with its factors, no download; --image-size N for N x N), dsprites "
                           "(DeepMind's dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz from --data-dir), or your own "
                           "images: a .npz "
                           "(arrays train, optional valid / test and *_labels), a .npy array, or a folder of PNG / "
                           "JPEG (sub-folders as labels); uint8 0..255 or floats in [0, 1], as (N, H, W), "
                           "(N, H, W, C) or (N, C, H, W); without valid / test, 10 %% each are split off with --seed "
                           f"(default: {d.dataset})")
    data.add_argument("--image-size", type=int, metavar="N",
                      help="resize your own images (--dataset PATH) to N x N, needed when a folder mixes sizes; or "
                           "render dsprites-procedural at N x N instead of 64 x 64")
    data.add_argument("--data-dir", help="where torchvision keeps its data sets (for --dataset "
                                         f"{', '.join(TORCHVISION_NAMES)})")
    data.add_argument("--download", action="store_true", default=None,
                      help="let torchvision download the data set into --data-dir (needs internet)")
    data.add_argument("--binarize", choices=BINARIZE_MODES,
                      help="how grey-scale pixels become binary for the Bernoulli likelihood: 'dynamic' re-samples "
                           "every batch, 'static' samples once (default: none, for data that is already binary)")
    data.add_argument("--subset", type=int, help="keep N evenly spaced images of each split, for quick runs")
    data.add_argument("--num-labelled", type=int, metavar="N",
                      help="for semi-supervised structures (ss-vae): N labelled training images, N/10 of each digit, "
                           "among the unlabelled ones. On binarized-mnist they come from the 7,000 training images of "
                           "binarized-mnist-labelled, the 50,000 training images are the unlabelled set, and the "
                           "test split is its 2,000 held-out labelled images; its 1,000 validation images, labelled, "
                           "choose the best epoch (--select-by)")
    data.add_argument("--labelled-every", type=int, metavar="K",
                      help="semi-supervised runs: a labelled batch after every K unlabelled batches, the labelled "
                           "images cycled (with 100 labels and K = 1 every step sees them); default: each labelled "
                           "image once an epoch, its batches spread among the others, as Pyro's M2 example")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help=f"latent structure: one of {', '.join(sorted(MODEL_NAMES))}, or your own as "
                                       f"path/to/file.py:ClassName (default: {d.model})")
    model.add_argument("--beta", type=float, help="KL weight of --model beta-vae (default: 1); total-correlation "
                                                   "weight of --model beta-tcvae (default: 6)")
    model.add_argument("--model-option", action="append", metavar="KEY=VALUE", type=parse_model_option,
                       help="a constructor argument of the model, e.g. num_components=20 for mixture-prior-vae or "
                            "z1_dim=100 for hierarchical-vae; repeat for several")
    model.add_argument("--z-dim", type=int, help=f"number of latent dimensions (default: {d.z_dim})")
    model.add_argument("--hidden-dims", type=parse_hidden_dims,
                       help=f"encoder hidden widths, comma-separated; the decoder mirrors them "
                            f"(default: {','.join(map(str, d.hidden_dims))})")
    model.add_argument("--activation", choices=sorted(ACTIVATION_NAMES), help=f"hidden activation (default: {d.activation})")
    model.add_argument("--likelihood", choices=LIKELIHOOD_NAMES,
                       help=f"p(x | z) of the pixels: {LIKELIHOOD_HELP} (default: {d.likelihood})")
    model.add_argument("--net", choices=NET_NAMES, help=f"{NET_HELP} (default: {d.net})")
    training = parser.add_argument_group("training")
    training.add_argument("--elbo", choices=sorted(ELBO_NAMES),
                          help=f"{ELBO_HELP}. Default: the structure's own, enum for "
                               f"{', '.join(sorted(ENUM_MODELS))} "
                               "and trace for the others")
    training.add_argument("--baseline", choices=BASELINES,
                          help="with --elbo tracegraph: what is subtracted from the score function of discrete sites: "
                               "a decaying average of their downstream cost ('average'), plus a network of x "
                               "trained on it ('neural', Mnih & Gregor 2014) (default: none)")
    training.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                          help="compile the ELBO with Pyro's JIT (JitTrace_ELBO, JitTraceEnum_ELBO, ...): the same "
                               "estimator with less Python per step. Default: on for the built-in structures with --elbo trace, "
                               "meanfield and iwae; off for your own structures (a trace freezes Python control flow) and "
                               "for the other ELBOs (slower compiled on the default networks here; enum gains on "
                               "small networks)")
    training.add_argument("--validate-every-step", action="store_true", default=None,
                          help="run Pyro's checks (distribution arguments, supports, model/guide agreement, binary "
                               "pixels) on every step; by default they run on the first step of each session only, "
                               "after the data were checked once, because they cost about a tenth of a step")
    training.add_argument("--kl-warmup", type=int, metavar="EPOCHS",
                          help="KL warm-up: the KL term's weight rises linearly from 0 to 1 over this many epochs "
                               "(default: 0, off)")
    training.add_argument("--num-particles", type=int, metavar="K",
                          help=f"samples of z per image in each ELBO estimate, drawn in one vectorized pass; with "
                               f"--elbo iwae the K of the importance-weighted bound (default: {d.num_particles})")
    training.add_argument("--optimizer", choices=sorted(OPTIMIZER_NAMES), help=f"(default: {d.optimizer})")
    training.add_argument("--lr", type=float, help=f"learning rate (the starting one, with a schedule) (default: {d.lr})")
    training.add_argument("--lr-schedule", choices=SCHEDULES,
                          help=f"learning rate per epoch: {SCHEDULE_HELP} (default: {d.lr_schedule})")
    training.add_argument("--lr-gamma", type=float, metavar="FACTOR",
                          help="the factor of --lr-schedule step, exponential or plateau (default: 0.5, 0.99, 0.5)")
    training.add_argument("--lr-step", type=int, metavar="EPOCHS",
                          help=f"epochs between the steps of --lr-schedule step (default: {d.lr_step})")
    training.add_argument("--lr-patience", type=int, metavar="EPOCHS",
                          help=f"epochs without a better validation ELBO (IWAE bound with --elbo iwae) before "
                               f"--lr-schedule plateau lowers the rate "
                               f"(default: {d.lr_patience})")
    training.add_argument("--adam-betas", type=_adam_betas, metavar="B1,B2",
                          help="Adam's two decay rates, of the gradient's mean and of its square; Pyro's M2 example "
                               "uses 0.95,0.999 (default: %s)" % ",".join(map(str, d.adam_betas)))
    training.add_argument("--adam-eps", type=float, help=f"Adam's epsilon; the IWAE paper used 1e-4 (default: {d.adam_eps:g})")
    training.add_argument("--patience", type=int, metavar="EPOCHS",
                          help="early stopping: stop once the validation ELBO (IWAE bound with --elbo iwae) has not "
                               "improved for this many epochs "
                               "(default: off; the best epoch's model is kept in best.pt either way)")
    training.add_argument("--select-by", choices=SELECT_BY,
                          help="what picks the best epoch, kept in best.pt and used by evaluate: 'elbo', the validation "
                               "value of the bound trained (the IWAE bound with --elbo iwae), or 'accuracy', the "
                               "classification accuracy on labelled validation images, never the test images "
                               "(default: accuracy for semi-supervised runs, --num-labelled N; elbo otherwise)")
    training.add_argument("--init-output-bias", action=argparse.BooleanOptionalAction, default=None,
                          help="start the decoder's output bias at the log-odds of the training pixels' means, so the "
                               "first decoded images are the mean image (default: off; it cost the default VAE 5 to "
                               "7 nats of validation ELBO after 10 epochs, see docs/training.md)")
    training.add_argument("--init-from", metavar="RUN_DIR",
                          help="start from the weights of another run's best checkpoint (its last where it has no "
                               "best.pt) instead of a fresh initialisation, e.g. to fine-tune a VAE with --elbo iwae; "
                               "its weights (names, shapes) and pixels must match this run's, while the ELBO, a beta "
                               "or gamma may differ; the optimizer starts afresh (default: off)")
    training.add_argument("--clip-norm", type=float, help=f"gradient clipping for clipped-adam (default: {d.clip_norm})")
    training.add_argument("--batch-size", type=int, help=f"images per SVI step (default: {d.batch_size})")
    training.add_argument("--epochs", type=int, help=f"total epochs; with --resume, train up to this many "
                                                     f"(default: {d.epochs})")
    training.add_argument("--seed", type=int, help=f"random seed (default: {d.seed})")
    training.add_argument("--device", help=f"cpu or cuda (default: {d.device})")


def parse_model_option(text: str) -> tuple:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):  # as JSON and the help write them
        return key, value.lower() == "true"
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _given_options(args: argparse.Namespace) -> dict:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    dataset = given.get("dataset")
    if dataset is not None and is_dataset_path(dataset) and Path(dataset).exists():
        given["dataset"] = str(Path(dataset).resolve())  # so that evaluate and sample find it from anywhere
    if given.get("init_from") is not None and Path(given["init_from"]).exists():
        given["init_from"] = str(Path(given["init_from"]).resolve())  # the record says where the weights came from
    options = dict(args.model_option or [])
    if args.beta is not None:
        options["beta"] = args.beta
    if options:
        given["model_options"] = options
    return given


def _run_dir(args: argparse.Namespace) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    if args.resume and not args.name:  # a name made up now would name no run
        raise PyroVAEError("--resume continues an earlier run: name it with --run-dir DIR (or --name NAME for "
                           "runs/NAME)")
    name = args.name or time.strftime("vae-%Y%m%d-%H%M%S")
    return Path("runs") / name


def train_command(args: argparse.Namespace) -> int:
    from pyro_vae.training import check_config, load_checkpoint

    check_positive(args.eval_samples, "--eval-samples", optional=True)
    _check_launch_option(args.nproc_per_node)
    given = _given_options(args)
    run_dir = _run_dir(args)
    if args.resume:  # options left out keep the checkpoint's values
        config = replace(TrainConfig.from_dict(load_checkpoint(run_dir / CHECKPOINT)["config"]), **given)
    else:
        config = TrainConfig(**given)  # the Trainer refuses a run directory that exists and is not empty
    check_config(config)  # every option, before the data are loaded
    if args.nproc_per_node is not None and args.nproc_per_node > 1:
        return _launch(args, config, run_dir)
    from pyro_vae.distributed import from_environment

    distributed = from_environment(config.device)  # under torchrun: this process's place in the job
    if distributed is not None and not distributed.is_main:
        return _train_alongside(args, config, run_dir, distributed)
    try:
        with locked_run_dir(run_dir):
            return _train(args, config, run_dir, distributed)
    finally:
        if distributed is not None:
            distributed.close()


def _train_alongside(args: argparse.Namespace, config: TrainConfig, run_dir: Path, distributed) -> int:
    """A process of a distributed job other than rank 0: trains its shards, writes nothing, prints nothing."""
    from pyro_vae.training import Trainer

    try:
        Trainer(config, run_dir, resume=args.resume, progress=False, log=lambda line: None,
                distributed=distributed).fit()
    finally:
        distributed.close()
    return 0


def _check_launch_option(processes) -> None:
    """``--nproc-per-node``: a positive number, at most this machine's cores, and not inside a job already."""
    import os

    if processes is None:
        return
    check_positive(processes, "--nproc-per-node")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise PyroVAEError("--nproc-per-node starts the processes itself, and this process is already one of a job "
                           "started by torchrun; drop --nproc-per-node, or start pyro-vae without torchrun")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if processes > 1 and processes > max(cores, 2):
        raise PyroVAEError(f"--nproc-per-node {processes} asks for more processes than the {cores} CPU cores this "
                           f"process may use; give at most {max(cores, 2)}")


def _launch(args: argparse.Namespace, config: TrainConfig, run_dir: Path) -> int:
    """``train --nproc-per-node N``: check here everything a process of the job would check before training, as
    rank 0 of N (the Trainer, built with :class:`~pyro_vae.distributed.Rehearsal`: the data, the structure, a
    checkpoint to resume and its number of processes, the batch against the processes), then start the N
    processes with torch's elastic launcher (:func:`pyro_vae.distributed.launch`); returns the status of the
    process that failed first, or 0."""
    import gc
    import signal
    import sys

    import pyro
    import torch

    from pyro_vae.distributed import Rehearsal, kept_checkpoint, launch, timeout_seconds
    from pyro_vae.training import Trainer

    processes = args.nproc_per_node
    if str(config.device).startswith("cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if 0 < gpus < processes:
            raise PyroVAEError(f"--nproc-per-node {processes} with --device {config.device} gives each process a GPU "
                               f"of its own, and this machine has {gpus}; give at most {gpus}")
    timeout_seconds()  # PYRO_VAE_DIST_TIMEOUT, checked once here
    check_can_create_dir(run_dir, "the run directory")
    if run_dir.is_dir():
        with run_lock(run_dir):  # another process training there: said here, not by the job
            pass
    backend = "nccl" if str(config.device).startswith("cuda") else "gloo"
    rehearsal = Trainer(config, run_dir, resume=args.resume, progress=False, log=lambda line: None,
                        distributed=Rehearsal(0, processes, 0, backend))
    del rehearsal  # its data and parameters: the processes load their own
    pyro.clear_param_store()
    gc.collect()
    worker_args = _without_option(args.argv, "--nproc-per-node") + ["--run-dir", str(run_dir)]
    status, killed = launch(worker_args, processes)
    if killed is not None:  # the process that failed first said nothing
        rank, signum = killed
        who = "this command" if rank is None else f"process {rank} of {processes}"
        epoch = _epoch_on_disk(run_dir)
        resume = (f"; continue with: pyro-vae train --run-dir {run_dir} --resume --nproc-per-node {processes}"
                  if epoch else "")
        print(f"pyro-vae train: error: {who} was ended by {signal.Signals(signum).name}; "
              f"{kept_checkpoint(epoch, run_dir / CHECKPOINT)}{resume}", file=sys.stderr)
    return status


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--opt N`` or ``--opt=N``, or an abbreviation argparse took)."""
    kept, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            kept.extend(argv[i:])
            break
        name, equals, _ = token.partition("=")
        if len(name) > 2 and name.startswith("--") and option.startswith(name):
            skip = not equals
            continue
        kept.append(token)
    return kept


def _epoch_on_disk(run_dir: Path):
    """The epoch of ``run_dir``'s checkpoint.pt: 0 where there is none, None where it cannot be read."""
    from pyro_vae.training import load_checkpoint

    if not (run_dir / CHECKPOINT).is_file():
        return 0
    try:
        return int(load_checkpoint(run_dir / CHECKPOINT)["epoch"])
    except Exception:  # damaged or half written: say where it is, without its epoch
        return None


def _train(args: argparse.Namespace, config: TrainConfig, run_dir: Path, distributed=None) -> int:
    from pyro_vae.training import Trainer

    trainer = Trainer(config, run_dir, resume=args.resume, progress=False if args.no_progress else None,
                      distributed=distributed)
    elbo = type(trainer.elbo).__name__
    labelled = trainer.dataset.labelled
    images = f"{len(trainer.dataset.train)} images" + (f" + {len(labelled)} labelled" if labelled is not None else "")
    processes = f", {distributed.world_size} processes ({distributed.backend})" if distributed is not None else ""
    print(f"training {trainer.config.model} on {trainer.config.dataset} ({images}) with {elbo}{processes} "
          f"into {run_dir}")
    history = trainer.fit()
    if distributed is not None:
        distributed.close()  # the others are done; rank 0 evaluates and draws alone
        trainer.dist = None
    try:
        return _after_training(args, trainer, history, run_dir)
    except KeyboardInterrupt as interrupt:
        interrupt.sentence = (f"interrupted after training, while evaluating and drawing; all {trainer.epoch} epochs "
                              f"are kept in {run_dir}; evaluate them with: pyro-vae evaluate {run_dir}")
        raise


def _after_training(args: argparse.Namespace, trainer, history: list, run_dir: Path) -> int:
    """The end of ``train``: the test figures of the best epoch, and the run's pictures."""
    from pyro_vae.evaluation import describe_evaluation, evaluate
    from pyro_vae.files import write_json
    from pyro_vae.plots.training import write_run_pictures

    model = trainer.model
    best = trainer.load_best()
    if best is not None and best["epoch"] != trainer.epoch:
        key, name = trainer.selection()
        print(f"evaluating the best epoch, {best['epoch']} of {trainer.epoch} ({name} "
              f"{selection_value(key, best[key])}; the last epoch's model stays in {CHECKPOINT})")
    model.eval()
    result = evaluate(model, trainer.dataset, "test", args.eval_samples, show_progress=not args.no_progress,
                      extra={"checkpoint": "best" if best is not None else "last",
                             "epoch": best["epoch"] if best is not None else trainer.epoch})
    print(describe_evaluation(result, count=False))
    write_json(result, run_dir / "evaluation.json")
    pictures = write_run_pictures(model, trainer.dataset, history, run_dir, seed=trainer.config.seed)
    print(f"run:      {run_dir}  (checkpoint {CHECKPOINT}, resume with --run-dir {run_dir} --resume)")
    print(f"metrics:  {run_dir / METRICS}, {run_dir / 'evaluation.json'}")
    print("pictures: " + ", ".join(str(p) for p in pictures))
    return 0


def _repair(run_dir: Path) -> None:
    """A run left inconsistent by an interrupted write is repaired before it is read, where it can be written
    (:func:`pyro_vae.training.repair_run`); a read-only one is read as it is."""
    import os

    from pyro_vae.training import repair_run

    if (run_dir / CHECKPOINT).is_file() and os.access(run_dir, os.W_OK):
        for note in repair_run(run_dir):
            print(f"repaired after an interrupted write: {note}")


def evaluate_command(args: argparse.Namespace) -> int:
    import pyro

    from pyro_vae.evaluation import describe_evaluation, evaluate
    from pyro_vae.training import describe_checkpoint, load_run_data, load_trained_model, resolve_device, write_json

    check_positive(args.subset, "--subset", optional=True)
    check_positive(args.num_samples, "--num-samples", optional=True)
    check_seed(args.seed)
    resolve_device(args.device)
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
        _repair(run_dir)
        model, config, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
        dataset = load_run_data(config, device=args.device, subset=args.subset)
        pyro.set_rng_seed(args.seed)
        print(f"evaluating {describe_checkpoint(checkpoint)} of {args.run_dir}")
        result = evaluate(model, dataset, args.split, args.num_samples,
                          extra={"checkpoint": checkpoint["kind"], "epoch": checkpoint["epoch"]})
        print(describe_evaluation(result))  # printed first, so that a failed write loses no figure
        write_json(result, out)
        print(f"written to {out}")
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
    run_dir = existing_run_dir(args.run_dir)
    out = Path(args.out) if args.out else run_dir / "generated.png"
    if out.is_dir():  # a folder: the picture goes inside it
        out = out / "generated.png"
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise PyroVAEError(f"--out {args.out} must name a picture file ending in {', '.join(PICTURE_SUFFIXES)}")
    check_can_write_file(out, "--out")
    with run_lock(run_dir):
        _repair(run_dir)
        model, _, checkpoint = load_trained_model(run_dir, args.device, which=args.checkpoint)
        print(f"sampling from {describe_checkpoint(checkpoint)} of {args.run_dir}")
        pyro.set_rng_seed(args.seed)
        if model.needs_labels and args.label is None:
            raise PyroVAEError("this model is conditional: choose the digit with --label 0-9")
        if args.label is not None and not (model.needs_labels or model.semi_supervised):
            raise PyroVAEError("--label is for models that take a label, such as cvae and ss-vae; this one does not")
        num_classes = getattr(model, "num_classes", None)
        if args.label is not None and num_classes is not None and not 0 <= args.label < num_classes:
            raise PyroVAEError(f"--label must be a class from 0 to {num_classes - 1}, got {args.label}")
        from pyro_vae.limits import check_samples_fit

        hidden = sum(getattr(model, "hidden_dims", None) or [0])
        values = getattr(model, "num_components", None) or getattr(model, "num_classes", None) or 1
        check_samples_fit(max(args.num, args.nrow * values), model.x_dim, hidden, args.nrow, args.device)
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


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 0,1,2, got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 0,1,2, got {text!r}")
    for seed in seeds:
        try:
            check_seed(seed)
        except PyroVAEError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return seeds


def _adam_betas(text: str) -> list[float]:
    try:
        betas = [float(part) for part in text.split(",")]
    except ValueError:
        betas = []
    if len(betas) != 2 or not all(0 <= beta < 1 for beta in betas):
        raise argparse.ArgumentTypeError(f"Adam's betas are two numbers in [0, 1) separated by a comma, e.g. "
                                         f"0.95,0.999; got {text!r}")
    return betas


def _betas(text: str) -> list[float]:
    try:
        betas = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0.5,1,4, got {text!r}")
    if not betas or not all(0 <= beta < float("inf") for beta in betas):
        raise argparse.ArgumentTypeError(f"the swept weights (betas; gammas of factor-vae) must be finite numbers >= 0, "
                                         f"got {text!r}")
    return betas


def _listed(values) -> str:
    return ",".join(f"{value:g}" for value in values)


def beta_sweep_command(args: argparse.Namespace) -> int:
    from pyro_vae.sweeps import beta_sweep

    if args.beta is not None:
        raise PyroVAEError("beta-sweep trains one model per value of --betas; drop --beta (use --betas "
                           f"{args.beta:g} for that value alone)")
    given = _given_options(args)
    model = given.pop("model", "beta-vae")
    if model not in SWEPT_MODELS:
        raise PyroVAEError(f"beta-sweep trains --model {', '.join(SWEPT_MODELS)}, not {model}")
    weight = SWEPT_MODELS[model]
    if args.score_points is not None:  # before the sweep trains: the scores come after every model is trained
        from pyro_vae.disentanglement.measure import check_score_points

        check_score_points(args.score_points)
    from pyro_vae.training import check_config

    check_config(TrainConfig(**{**given, "model": model}))
    out_dir = Path(args.out_dir or time.strftime("runs/beta-sweep-%Y%m%d-%H%M%S"))
    check_can_create_dir(out_dir, "--out-dir")
    rows = beta_sweep(args.betas or list(SWEPT_DEFAULTS[weight]), TrainConfig(**given), out_dir, seeds=args.seeds or (), model=model,
                      score_points=args.score_points, dci_trees=args.dci_trees,
                      progress=False if args.no_progress else None)
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

    from pyro_vae.disentanglement.measure import (NUM_SAMPLES, check_has_factors, check_score_points, measure,
                                                  sampler_sizes)
    from pyro_vae.files import write_json
    from pyro_vae.plots.disentanglement import plot_mutual_information
    from pyro_vae.plots.training import plot_latent_traversals
    from pyro_vae.training import describe_checkpoint, load_run_data, load_trained_model, resolve_device

    check_positive(args.num_samples, "--num-samples", optional=True)  # None: NUM_SAMPLES, or all a run has if fewer
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
        dataset = load_run_data(config, device=args.device)
        check_has_factors(dataset, f"the run {args.run_dir}")
        available = len(dataset.train)
        num_samples = args.num_samples
        if num_samples is None:  # the default: disentanglement_lib's 10,000, or every image of a smaller run
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
                         sizes=sampler_sizes(args.score_points), dci_trees=args.dci_trees)
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


def _add_dci_trees_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dci-trees", choices=DCI_TREES, default="gbt",
                        help="on data with known factors: where DCI takes its importances from: gbt (the default), "
                             "disentanglement_lib's gradient-boosted trees (about 2 minutes for 10,000 codes on a "
                             "2-core CPU), or histogram, the same boosting on binned codes (about 11 s; close to, "
                             "not equal to, disentanglement_lib's numbers)")


def _add_trained_run_options(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """--checkpoint, --device and --seed of the commands that use a trained run."""
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default="best",
                        help=f"which model of the run: the epoch with the highest validation ELBO, or IWAE bound for "
                             f"--elbo iwae ({BEST_CHECKPOINT}) "
                             f"or the last epoch trained ({CHECKPOINT}); runs without {BEST_CHECKPOINT} use the last")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)


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
    sweep.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_train_options(sweep)
    sweep.set_defaults(handler=beta_sweep_command)

    evaluate = subparsers.add_parser(
        "evaluate", formatter_class=formatter, help="test ELBO and importance-sampled NLL of a trained run",
        description="Estimate log p(x) by importance sampling with K samples from the guide per image "
                    "(the IWAE bound; K = 5000 is what the literature reports) and the ELBO, in nats per image.")
    evaluate.add_argument("run_dir", help="a run directory written by 'pyro-vae train'")
    evaluate.add_argument("--num-samples", "-K", type=int, default=5000, help="importance samples per image")
    evaluate.add_argument("--split", choices=("train", "valid", "test"), default="test", help="which split")
    evaluate.add_argument("--subset", type=int, help="evaluate N evenly spaced images of the split, for a quick check "
                                                     "(default: all; written to a file of its own)")
    evaluate.add_argument("--out", metavar="FILE",
                          help="where to write the result as JSON, e.g. for a run in a read-only folder (default: "
                               "RUN_DIR/evaluation-SPLIT-KK[-subsetN][-last].json)")
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
    _add_trained_run_options(measure, "random seed for the images drawn and the classifiers")
    measure.set_defaults(handler=disentanglement_command)

    sample = subparsers.add_parser(
        "sample", formatter_class=formatter, help="draw images from a trained model's prior",
        description="Sample z from the prior, decode, and save the mean images as a PNG grid. A structure with a "
                    "discrete latent in its prior (bernoulli-mixture, gmvae, ss-vae) gets one row per value of it "
                    "(component or class) with --nrow draws each, unless --label picks one class.")
    sample.add_argument("run_dir", help="a run directory written by 'pyro-vae train'")
    sample.add_argument("--num", type=int, default=64, help="how many images")
    sample.add_argument("--nrow", type=int, default=8, help="images per row")
    sample.add_argument("--out", help="picture to write (.png, .pdf or .svg), or a folder to write generated.png into "
                                      "(default: RUN_DIR/generated.png)")
    sample.add_argument("--label", type=int, help="for a model that takes a label (cvae, ss-vae): the digit to draw")
    _add_trained_run_options(sample, "random seed")
    sample.set_defaults(handler=sample_command)
