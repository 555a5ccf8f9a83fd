"""The options of the commands that train (``train``, ``beta-sweep``) and of those that read a trained run, and
the parsers of their values; built from the catalog alone, so that ``--help`` needs no torch."""
from __future__ import annotations

import argparse
import ast
from dataclasses import fields
from pathlib import Path

from pyro_vae.catalog import (ACTIVATION_NAMES, BASELINES, BEST_CHECKPOINT, BINARIZE_MODES, CHECKPOINT,
                              CHECKPOINT_CHOICES, DATASETS, DCI_TREES, ELBO_HELP, ELBO_NAMES, ENUM_MODELS,
                              FACTOR_DATASETS, LIKELIHOOD_HELP, LIKELIHOOD_NAMES, MODEL_NAMES, NET_HELP, NET_NAMES,
                              OPTIMIZER_NAMES, SCHEDULE_HELP, SCHEDULES, SEQUENCE_DATASETS, TORCHVISION_NAMES,
                              is_dataset_path)
from pyro_vae.config import SELECT_BY, TrainConfig, check_seed
from pyro_vae.errors import PyroVAEError

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.
DEFAULTS = TrainConfig()
#: the data sets shipped with the package (--dataset's help names the torchvision and dSprites ones apart)
SHIPPED_DATASETS = tuple(name for name in DATASETS if name not in TORCHVISION_NAMES + FACTOR_DATASETS + SEQUENCE_DATASETS)


def parse_hidden_dims(text: str) -> list[int]:
    try:
        parts = text.split(",")
        if len(parts) > 1 and not all(part.strip() for part in parts):
            raise ValueError(text)  # "32,,32": a width left out, not a width of nothing
        sizes = [int(part) for part in parts if part.strip()]
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
                           "(DeepMind's dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz from --data-dir), "
                           "hmm-sequences (binary sequences drawn here from a known HMM, lengths as labels), or your "
                           "own data: a .npz (arrays train, optional valid / test and *_labels, or *_lengths for "
                           "sequences; an optional layout entry: images, vectors or sequences), a .npy array, or a "
                           "folder of PNG / JPEG (sub-folders as labels); images as uint8 0..255 or floats in [0, 1], "
                           "(N, H, W), (N, H, W, C) or (N, C, H, W); vectors or tables (N, D); sequences (N, T, D); or "
                           "a polyphonic-music .pickle or .pkl (JSB chorales, Piano-midi.de, MuseData, Nottingham; "
                           "read with pickle, classes refused: open only files you trust); "
                           "without valid / test, 10 %% each are split off with --seed "
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
                               "pixels) on every step; by default they run on steps 1, 2, 4, 8, ... and the last of each epoch only, "
                               "after the data were checked once, because they cost about a tenth of a step")
    training.add_argument("--tensorboard", action="store_true", default=None,
                          help="also write TensorBoard logs to RUN_DIR/tensorboard every epoch: the metrics, the KL of "
                               "each latent dimension and the active units on validation images, prior samples and "
                               "reconstructions (needs the tensorboard package; view with tensorboard --logdir runs)")
    training.add_argument("--kl-warmup", type=int, metavar="EPOCHS",
                          help="KL warm-up: the KL term's weight rises linearly from 0 to 1 over this many epochs "
                               "(default: 0, off)")
    training.add_argument("--num-particles", type=int, metavar="K",
                          help=f"samples of z per image in each ELBO estimate, drawn in one vectorized pass; with "
                               f"--elbo iwae the K of the importance-weighted bound (default: {d.num_particles})")
    training.add_argument("--alpha", type=float,
                          help="with --elbo renyi: the alpha of the Renyi bound, >= 0 and not 1 (0: the IWAE bound; "
                               "towards 1: the ELBO) (default: 0.5)")
    training.add_argument("--outer-particles", type=int, metavar="M",
                          help="with --elbo miwae or piwae: the number M of IWAE bounds of K = --num-particles draws "
                               "each, M K draws per image (default: 8)")
    training.add_argument("--ciwae-beta", type=float, metavar="BETA",
                          help="with --elbo ciwae: the weight of the ELBO in BETA ELBO + (1 - BETA) IWAE bound, in "
                               "[0, 1] (default: 0.5)")
    training.add_argument("--optimizer", choices=sorted(OPTIMIZER_NAMES),
                          help="adam; fused-adam: the same rule in torch's fused kernel, equal up to the last bits "
                               "and faster (about 13 %% less time per step of the default VAE on the CPU), but a "
                               "run recorded with adam reproduces its curve to the last digit only with adam; "
                               "clipped-adam: Pyro's, "
                               f"with --clip-norm (default: {d.optimizer})")
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

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.


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


def _add_dci_trees_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dci-trees", choices=DCI_TREES,  # None: gbt, and with beta-sweep --resume the sweep's own
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
