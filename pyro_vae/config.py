"""What defines a training run (:class:`TrainConfig`), importable without torch so that the command line can
build its parser, and show ``--help``, at once. Checks that need the library import it when they run."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional, Sequence

from pyro_vae.catalog import (ACTIVATION_NAMES, BASELINES, DATASETS, DEFAULT_LIKELIHOOD, ELBO_NAMES, ELBO_PARAMETERS,
                              ENUM_MODELS, MULTI_SAMPLE_ELBOS, WEIGHTED_ELBOS,
                              LIKELIHOOD_NAMES, MODEL_NAMES, NET_NAMES, OPTIMIZER_NAMES, SCHEDULES, TORCHVISION_NAMES,
                              is_dataset_path, likelihood_name, takes_binary_pixels)
from pyro_vae.errors import PyroVAEError

#: ELBOs that the built-in structures train JIT-compiled unless --no-jit. Not enum: JitTraceEnum_ELBO was
#: 4% slower than TraceEnum_ELBO on the default GMVAE (benchmarks/gmvae_enum_vs_pytorch.py), its compiled
#: backward doing more than the Python it saves; it pays only on small networks (--jit).
#: IWAE is: JIT-compiled 1.06x a hand-written IWAE loop, eager 1.23x (K = 5, idle machine, svi_vs_pytorch.py).
#: Meanfield is since its compiled loss is built once (inference.elbos.CompiledOnceMeanField_ELBO: Pyro's own
#: rebuilt it every step, 5-7x slower than eager).
JIT_BY_DEFAULT = ("trace", "meanfield", "iwae")

#: the learning-rate schedules that multiply the rate by a factor (--lr-gamma; inference/schedules.py)
GAMMA_SCHEDULES = ("step", "exponential", "plateau")
#: options that only some schedules or optimizers read: the sentence that refuses each where it would be ignored
IGNORED_OPTIONS = {
    "lr_gamma": "--lr-gamma is the factor of --lr-schedule step, exponential and plateau; the {schedule} schedule "
                "has none, so drop --lr-gamma or choose one of those schedules",
    "lr_step": "--lr-step is the number of epochs between the steps of --lr-schedule step; the {schedule} schedule "
               "does not read it, so drop --lr-step or pass --lr-schedule step",
    "lr_patience": "--lr-patience is the patience of --lr-schedule plateau; the {schedule} schedule does not read "
                   "it, so drop --lr-patience or pass --lr-schedule plateau (--patience stops training early)",
    "clip_norm": "--clip-norm is the gradient clipping of --optimizer clipped-adam; {optimizer} does not clip, so "
                 "drop --clip-norm or pass --optimizer clipped-adam",
}


#: the data sets read from --data-dir (and fetched by --download where torchvision can); the others need neither
READ_FROM_A_FOLDER = (*TORCHVISION_NAMES, "dsprites")
#: the data sets whose pixels are binary as they come: --binarize has nothing to do on them
BINARY_DATASETS = ("binarized-mnist", "binarized-mnist-labelled", "dsprites-procedural", "dsprites", "hmm-sequences")


#: constructor arguments that the config passes to every structure itself, with the option that sets each: a
#: --model-option of the same name would be overridden (or would override) without a word
OWN_OPTIONS = {"x_dim": None, "image_shape": None, "z_dim": "--z-dim", "hidden_dims": "--hidden-dims",
               "activation": "--activation", "likelihood": "--likelihood", "net": "--net"}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in its checkpoint and ``config.json``."""

    dataset: str = "binarized-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    binarize: str = "none"
    subset: Optional[int] = None
    image_size: Optional[int] = None  # --dataset PATH: resize every image to N x N
    likelihood: str = DEFAULT_LIKELIHOOD  # p(x | z) of the pixels, see pyro_vae/likelihoods.py
    net: str = "mlp"  # the structure's networks: mlp or conv
    model: str = "vae"
    z_dim: int = 50
    hidden_dims: list = field(default_factory=lambda: [200, 200])
    activation: str = "relu"
    elbo: Optional[str] = None  # None: the structure's ``default_elbo`` ("enum" for the discrete structures)
    baseline: str = "none"  # score-function baseline of --elbo tracegraph: none, average or neural
    jit: Optional[bool] = None  # None: decided by ``uses_jit`` (on for built-in structures with Trace_ELBO)
    validate_every_step: bool = False
    num_particles: int = 1
    # the objectives' own parameters (catalog.ELBO_PARAMETERS); None: the objective's default
    alpha: Optional[float] = None  # --elbo renyi
    outer_particles: Optional[int] = None  # --elbo miwae and piwae: M bounds of K = num_particles draws
    ciwae_beta: Optional[float] = None  # --elbo ciwae: beta ELBO + (1 - beta) IWAE
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"  # see inference/schedules.py
    lr_gamma: Optional[float] = None  # None: the schedule's default factor
    lr_step: int = 100  # epochs between steps of --lr-schedule step
    lr_patience: int = 10  # epochs without improvement before --lr-schedule plateau lowers the rate
    adam_eps: float = 1e-8
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])  # Adam's (beta1, beta2); Pyro's M2 uses 0.95, 0.999
    patience: Optional[int] = None  # early stopping: epochs without a better validation ELBO; None: off
    # decoder output bias = logit of the training pixels' means on a fresh run; off by default: it cost 5 to 7 nats
    # of validation ELBO after 10 epochs of the default VAE (docs/training.md, "The training recipe")
    init_output_bias: bool = False
    # a run directory whose best checkpoint's weights a fresh run starts from (fine-tuning, e.g. a VAE with IWAE)
    init_from: Optional[str] = None
    clip_norm: float = 10.0
    batch_size: int = 100
    epochs: int = 10
    seed: int = 0
    device: str = "cpu"
    model_options: dict = field(default_factory=dict)
    kl_warmup: int = 0
    num_labelled: Optional[int] = None  # semi-supervised structures: labelled training images
    # semi-supervised: a labelled batch after every K unlabelled ones, the labelled images cycled; None: each labelled
    # image once an epoch, its batches spread among the others (Pyro's M2 example)
    labelled_every: Optional[int] = None
    # what picks the best epoch (SELECT_BY); None: "accuracy" for semi-supervised runs, else "elbo" (set at the start)
    select_by: Optional[str] = None
    # TensorBoard event files in RUN_DIR/tensorboard, written every epoch (training.board)
    tensorboard: bool = False

    #: fields that may change when a run is resumed; every other field must match the checkpoint
    RESUMABLE_CHANGES = ("epochs", "device", "download", "data_dir", "jit", "validate_every_step", "patience",
                         "tensorboard")

    def validate(self) -> None:
        for name, value in self.model_options.items():  # these are set by the config itself (model_kwargs)
            if name in OWN_OPTIONS:
                given = OWN_OPTIONS[name]
                raise PyroVAEError(f"{name} is not a model option but " + (f"an option of its own: give {given} "
                                   f"instead of --model-option {name}=..." if given else "set from the data set"))
        for name in ("batch_size", "epochs", "num_particles", "z_dim"):
            if getattr(self, name) < 1:
                raise PyroVAEError(f"{name.replace('_', '-')} must be a positive whole number, got {getattr(self, name)}")
        check_seed(self.seed)
        for name, option in (("lr", "--lr (the learning rate)"), ("adam_eps", "--adam-eps"),
                             ("clip_norm", "--clip-norm")):
            check_positive_finite(getattr(self, name), option)
        if len(self.adam_betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.adam_betas):
            raise PyroVAEError(f"--adam-betas takes two numbers in [0, 1), beta1,beta2 (e.g. 0.95,0.999), got "
                               f"{','.join(map(str, self.adam_betas))}")
        if self.subset is not None and self.subset < 1:
            raise PyroVAEError(f"--subset must be a positive number of images, got {self.subset}")
        if is_dataset_path(self.dataset) and not Path(self.dataset).exists():
            raise PyroVAEError(f"unknown data set {self.dataset!r}: no such file or folder, and not one of "
                               f"{', '.join(DATASETS)}")
        if self.image_size is not None:
            check_positive(self.image_size, "--image-size")
            if not (is_dataset_path(self.dataset) or self.dataset == "dsprites-procedural"):
                raise PyroVAEError(f"--image-size resizes your own images (--dataset PATH) and sets the resolution of "
                                   f"dsprites-procedural; {self.dataset} keeps its size")
        if likelihood_name(self.likelihood) not in LIKELIHOOD_NAMES:
            raise PyroVAEError(f"unknown likelihood {self.likelihood!r}; choose one of {', '.join(LIKELIHOOD_NAMES)}")
        if self.net not in NET_NAMES:
            raise PyroVAEError(f"unknown network {self.net!r}; choose one of {', '.join(NET_NAMES)}")
        if self.init_output_bias and (not takes_binary_pixels(self.likelihood) or self.net != "mlp"):
            raise PyroVAEError("--init-output-bias sets the logits of an MLP's Bernoulli pixels to the data's log-odds; "
                               "it applies to --likelihood bernoulli with --net mlp only")
        if self.init_from is not None and self.init_output_bias:
            raise PyroVAEError("--init-from starts every weight from the earlier run, the decoder's output bias "
                               "included; drop --init-output-bias")
        if (self.data_dir is not None or self.download) and self.dataset not in READ_FROM_A_FOLDER:
            raise PyroVAEError(f"--data-dir and --download say where {', '.join(READ_FROM_A_FOLDER)} are read from; "
                               f"{self.dataset} needs neither: drop them")
        if self.binarize != "none" and self.dataset in BINARY_DATASETS:
            raise PyroVAEError(f"--binarize {self.binarize} draws binary pixels from grey ones, and the pixels of "
                               f"{self.dataset} are binary already: drop it")
        if not takes_binary_pixels(self.likelihood) and self.binarize != "none":
            raise PyroVAEError(f"--binarize makes binary pixels for the Bernoulli likelihood; the {self.likelihood} "
                               "likelihood models grey pixels as they are: drop --binarize")
        if self.activation not in ACTIVATION_NAMES:
            raise PyroVAEError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATION_NAMES)}")
        if self.kl_warmup < 0:
            raise PyroVAEError(f"--kl-warmup is a number of epochs and cannot be negative, got {self.kl_warmup}")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise PyroVAEError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZER_NAMES)}")
        if self.elbo is not None and self.elbo not in ELBO_NAMES:
            raise PyroVAEError(f"unknown ELBO {self.elbo!r}; choose one of {', '.join(ELBO_NAMES)}")
        if self.baseline not in BASELINES:
            raise PyroVAEError(f"unknown baseline {self.baseline!r}; choose one of {', '.join(BASELINES)}")
        if self.num_labelled is not None and self.num_labelled < 1:
            raise PyroVAEError(f"--num-labelled must be a positive number of images, got {self.num_labelled}")
        if self.labelled_every is not None:
            if self.num_labelled is None:
                raise PyroVAEError("--labelled-every sets how often semi-supervised runs (--num-labelled N) see a "
                                   "labelled batch; drop it")
            check_positive(self.labelled_every, "--labelled-every")
        if self.select_by is not None and self.select_by not in SELECT_BY:
            raise PyroVAEError(f"unknown --select-by {self.select_by!r}; choose one of {', '.join(SELECT_BY)}")
        if self.select_by == "accuracy" and self.num_labelled is None:
            raise PyroVAEError("--select-by accuracy picks the epoch that classifies labelled validation images best, "
                               "for semi-supervised runs (--num-labelled N); drop it or use --select-by elbo")
        check_schedule(self.lr_schedule, self.lr_gamma, self.lr_step, self.lr_patience)
        ignored = self.ignored_options()
        if ignored:  # an option that would change nothing is a mistake, not a wish
            raise PyroVAEError(IGNORED_OPTIONS[ignored[0]].format(schedule=self.lr_schedule, optimizer=self.optimizer))
        if self.patience is not None and self.patience < 1:
            raise PyroVAEError(f"--patience is a number of epochs and must be positive, got {self.patience}")
        if self.elbo in WEIGHTED_ELBOS and self.kl_warmup:
            raise PyroVAEError(f"--kl-warmup weights the KL term of the ELBO, which the {self.elbo} objective does not "
                               "have apart; drop --kl-warmup or train with another --elbo")
        check_elbo_parameters(self.elbo_name(), {name: getattr(self, name) for name in ELBO_PARAMETERS})
        if self.jit and self.elbo in MULTI_SAMPLE_ELBOS:
            raise PyroVAEError(f"--elbo {self.elbo} has no JIT-compiled version; drop --jit")

    def objective(self) -> str:
        """The bound training maximises, as the metrics name it: "elbo" or "iwae-K"."""
        return f"iwae-{self.num_particles}" if self.elbo_name() in ("iwae", "dreg") else "elbo"

    def elbo_name(self) -> str:
        """``elbo``, or when it is unset the structure's default (Trace_ELBO for structures from a file)."""
        if self.elbo is not None:
            return self.elbo
        return "enum" if self.model in ENUM_MODELS else "trace"

    def uses_jit(self) -> bool:
        """Whether training compiles the ELBO with Pyro's JIT (``JitTrace_ELBO``): ``jit`` when it is set.

        Left unset, JIT is on for the built-in structures with ``--elbo trace``, ``meanfield`` and ``iwae``:
        the same estimator without Pyro's Python work on every step (see ``benchmarks/svi_vs_pytorch.py``). It
        stays off for structures loaded from a file, whose Python control flow a trace would freeze, and for
        the score-function and enumerated ELBOs, whose JIT versions were slower than the plain ones on the
        default networks here (``benchmarks/gmvae_enum_vs_pytorch.py`` for enum).
        """
        if self.jit is not None:
            return self.jit
        return self.elbo_name() in JIT_BY_DEFAULT and self.model in MODEL_NAMES

    def model_kwargs(self, image_shape: Sequence[int] = (1, 28, 28)) -> dict:
        """The structure's constructor arguments for images of ``image_shape`` (C, H, W)."""
        return {"x_dim": math.prod(image_shape), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "image_shape": list(image_shape), "likelihood": self.likelihood,
                "net": self.net, **self.model_options}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        # a run saved before validate() refused them may hold values its schedule or optimizer never read: they
        # go back to the defaults, which changes nothing it computes, so that the run still resumes
        defaults = cls()
        for name in config.ignored_options():
            setattr(config, name, getattr(defaults, name))
        return config

    def ignored_options(self) -> list[str]:
        """The fields set away from their default that this config's schedule or optimizer never reads
        (:data:`IGNORED_OPTIONS`): ``lr_gamma`` of a schedule without a factor, ``lr_step`` of a schedule other
        than step, ``lr_patience`` of one other than plateau, ``clip_norm`` of an optimizer that does not clip."""
        defaults = {f.name: f.default for f in fields(self) if f.name in IGNORED_OPTIONS}
        used = {"lr_gamma": self.lr_schedule in GAMMA_SCHEDULES, "lr_step": self.lr_schedule == "step",
                "lr_patience": self.lr_schedule == "plateau", "clip_norm": self.optimizer == "clipped-adam"}
        return [name for name in IGNORED_OPTIONS if not used[name] and getattr(self, name) != defaults[name]]


#: what picks a run's best epoch (``--select-by``): "elbo", the validation value of the bound being trained, or
#: "accuracy", the classification accuracy on labelled validation images (semi-supervised structures' default)
SELECT_BY = ("elbo", "accuracy")


def selection_key(history: Sequence[dict], select_by: Optional[str] = "elbo") -> str:
    """The metric that picks the best epoch, stops early and drives the plateau schedule.

    With ``select_by="accuracy"``: ``"valid_accuracy"``, the classification accuracy on labelled validation images,
    where every epoch recorded it. Otherwise the validation value of the bound being trained: ``"valid_bound"``
    (the IWAE bound with the training K, which IWAE training raises while it may lower the ELBO) where every epoch
    recorded it, else ``"valid_elbo"`` (ELBO training, and IWAE runs begun before the bound was recorded, which keep
    choosing by the ELBO)."""
    if select_by == "accuracy" and history and all("valid_accuracy" in row for row in history):
        return "valid_accuracy"
    return "valid_bound" if history and all("valid_bound" in row for row in history) else "valid_elbo"


def best_row(history: Sequence[dict], select_by: Optional[str] = "elbo") -> Optional[dict]:
    """The metrics row of the epoch with the highest finite :func:`selection_key` value (the first of equals), or
    None before any."""
    key = selection_key(history, select_by)
    rows = [row for row in history if math.isfinite(row[key])]
    return max(rows, key=lambda row: row[key]) if rows else None


def check_elbo_parameters(elbo: str, values: dict) -> None:
    """The objectives' own parameters (``alpha``, ``outer_particles``, ``ciwae_beta``; None: not given): each only
    with an objective that reads it, and in its range."""
    for name, value in values.items():
        takers, _, option = ELBO_PARAMETERS[name]
        if value is None:
            continue
        if elbo not in takers:
            raise PyroVAEError(f"{option} is a parameter of --elbo {' and '.join(takers)}, and --elbo {elbo} does "
                               f"not read it; drop {option}")
    alpha, outer, beta = values.get("alpha"), values.get("outer_particles"), values.get("ciwae_beta")
    if alpha is not None:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise PyroVAEError(f"--alpha of the Renyi bound must be a number >= 0 (0 is the IWAE bound; below 0 the "
                               f"bound lies above log p(x)), got {alpha}")
        if alpha == 1:
            raise PyroVAEError("the Renyi bound at --alpha 1 is the ELBO itself, which Pyro's RenyiELBO does not "
                               "compute; use --elbo trace, or an alpha near 1 such as 0.99")
    if outer is not None and not (isinstance(outer, int) and outer >= 1):
        raise PyroVAEError(f"--outer-particles M (the number of IWAE bounds averaged) must be a positive whole "
                           f"number, got {outer}")
    if beta is not None and not (isinstance(beta, (int, float)) and 0 <= beta <= 1):
        raise PyroVAEError(f"--ciwae-beta weighs the ELBO against the IWAE bound and lies in [0, 1], got {beta}")


def selection_name(key: str, num_particles: int) -> str:
    """The metric of :func:`selection_key` in words."""
    return {"valid_bound": f"validation IWAE bound (K={num_particles})",
            "valid_accuracy": "validation classification accuracy"}.get(key, "validation ELBO")


def selection_value(key: str, value: float) -> str:
    """A value of :func:`selection_key` in words: nats with two decimals, an accuracy in per cent."""
    return f"{100 * value:.2f} %" if key == "valid_accuracy" else f"{value:.2f}"


#: seeds go to numpy too, which takes 0 <= seed < 2**32
MAX_SEED = 2 ** 32 - 1


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PyroVAEError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {seed}")


def check_positive(value, what: str, *, optional: bool = False) -> None:
    """Refuse anything but a whole number >= 1 with one sentence naming ``what``; with ``optional``, None
    (an option left unset) passes too."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PyroVAEError(f"{what} must be a positive whole number, got {value!r}")


def check_positive_finite(value, what: str) -> None:
    """Refuse anything but a number > 0 and < inf (a learning rate, an epsilon) with one sentence."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise PyroVAEError(f"{what} must be a positive, finite number, got {value}")


def check_schedule(name: str, gamma: Optional[float], step: int, patience: int) -> None:
    """One sentence for a schedule or setting that cannot work."""
    if name not in SCHEDULES:
        raise PyroVAEError(f"unknown learning-rate schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if gamma is not None and not 0 < gamma <= 1:
        raise PyroVAEError(f"--lr-gamma is the factor the rate is multiplied by and must be in (0, 1], got {gamma}")
    if step < 1:
        raise PyroVAEError(f"--lr-step is a number of epochs and must be positive, got {step}")
    if patience < 0:
        raise PyroVAEError(f"--lr-patience is a number of epochs and cannot be negative, got {patience}")
