"""Training with SVI: the loop, the run directory, and checkpoints that resume a run exactly."""
from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import pyro
import torch
from pyro.infer import SVI
from tqdm.auto import tqdm

from pyro_vae.catalog import (BEST_CHECKPOINT, CHECKPOINT, CHECKPOINT_CHOICES, CONFIG, METRICS,  # noqa: F401
                              OPTIMIZER_NAMES, check_registry)
from pyro_vae.config import JIT_BY_DEFAULT, MAX_SEED, TrainConfig, check_seed  # noqa: F401 (re-exported)
from pyro_vae.config import best_row, selection_key, selection_name, selection_value
from pyro_vae.data import (Dataset, check_dataset, dequantize_dataset, is_binary, iterate_batches, labelled_batch_count,
                           load_dataset, num_batches, redraw, semi_supervised, semi_supervised_batches)
from pyro_vae.errors import CheckpointError, PyroVAEError, TrainingDiverged
from pyro_vae.evaluation import classification_accuracy, elbo_per_datapoint, negative_log_likelihood
from pyro_vae.files import (FileSystemError, atomic_write, load_checkpoint_file, locked_run_dir,  # noqa: F401
                            os_error_sentence, run_lock, save_checkpoint, write_csv, write_json,
                            write_text)
from pyro_vae.distributed import Distributed, collective_failure, is_collective_failure
from pyro_vae.inference import make_elbo, optim
from pyro_vae.inference.compiled_step import CompiledStep
from pyro_vae.likelihoods import DISCRETE_LIKELIHOODS
from pyro_vae.limits import check_resized_images_fit, check_training_fits, images_before_loading
from pyro_vae.inference.scaling import scale_latents
from pyro_vae.inference.sites import (AVERAGE_BASELINE_PARAM, check_elbo_applies, check_programs, latent_sites,
                                      neural_baselines, with_baselines)
from pyro_vae.models import STRUCTURE_FILE, LatentStructure, build_model, is_file_spec, read_structure_source
from pyro_vae.models.base import init_output_bias

CHECKPOINT_FORMAT = ("pyro-vae-checkpoint", 1)
OPTIMIZERS = {"adam": optim.Adam, "clipped-adam": optim.ClippedAdam}
#: a loss per image this many times its first value in a session (or the pixel count) counts as divergence
DIVERGENCE_GROWTH = 1e4
check_registry("optimizer", OPTIMIZERS, OPTIMIZER_NAMES)
EVAL_BATCH_SIZE = 1000
JIT_WARMUP_CALLS = 4
def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against the GPUs this machine has."""
    kind, _, index = str(name).partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise PyroVAEError(f"unknown device {name!r}; choose cpu, cuda or cuda:N")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise PyroVAEError(f"--device {name} was asked for, but no CUDA GPU is available here; use --device cpu")
        if index and int(index) >= count:
            raise PyroVAEError(f"--device {name} was asked for, but this machine has {count} GPU(s): cuda:0 to "
                               f"cuda:{count - 1}")
    return torch.device(name)


def load_run_data(config: "TrainConfig", *, device: str | torch.device = "cpu", subset: Optional[int] = None) -> Dataset:
    """The data set a run was (or will be) trained on, as its config says; ``subset`` overrides the config's."""
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download,
                           binarize=config.binarize, subset=subset or config.subset, device=device, seed=config.seed,
                           image_size=config.image_size)
    if dataset.eight_bit and not DISCRETE_LIKELIHOODS[config.likelihood]:
        dequantize_dataset(dataset, seed=config.seed)
    if config.num_labelled is not None:
        dataset = semi_supervised(dataset, config.num_labelled, seed=config.seed)
    return dataset


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint (checksum checked, ``weights_only=True``: tensors and plain data only) and check its format."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; is this a run directory written by 'pyro-vae train'?")
    checkpoint = load_checkpoint_file(path)  # checks the SHA-256 written with it
    if not isinstance(checkpoint, dict) or tuple(checkpoint.get("format", ())) != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint



def load_trained_model(run_dir: str | Path, device: str = "cpu",
                       which: str = "last") -> tuple[LatentStructure, TrainConfig, dict]:
    """The structure saved in ``run_dir``, its config, and the checkpoint it came from.

    ``which`` is "last" (the end of the last epoch trained, ``checkpoint.pt``) or "best" (the epoch with the
    highest validation ELBO, ``best.pt``; runs written before best checkpoints existed fall back to the last,
    and the checkpoint's ``"kind"`` says which was loaded). :func:`describe_checkpoint` puts it in words.
    """
    if which not in CHECKPOINT_CHOICES:
        raise PyroVAEError(f"unknown checkpoint {which!r}; choose best or last")
    path = Path(run_dir) / (BEST_CHECKPOINT if which == "best" else CHECKPOINT)
    if which == "best" and not path.is_file() and (Path(run_dir) / CHECKPOINT).is_file():
        path = Path(run_dir) / CHECKPOINT
    checkpoint = load_checkpoint(path)
    checkpoint.setdefault("kind", "best" if path.name == BEST_CHECKPOINT else "last")
    if checkpoint["kind"] == "best":  # how far the run went, for describe_checkpoint
        checkpoint["epochs_trained"] = _epochs_trained(Path(run_dir), checkpoint["epoch"])
    config = TrainConfig.from_dict(checkpoint["config"])
    if is_file_spec(config.model) and not checkpoint.get("structure_source"):
        # a run written before runs kept their structure's source: the file must still be where it was
        path = config.model.rpartition(":")[0]
        if not Path(path).is_file():
            raise CheckpointError(f"the run {run_dir} was trained with the structure in {path}, which is not found "
                                  "from here; this run predates runs that keep their structure, so start from "
                                  "the folder it was trained in")
    model = build_model(config.model, structure_source=checkpoint.get("structure_source"), **checkpoint["model_config"])
    _load_model_state(model, checkpoint, path)
    return model.to(resolve_device(device)), config, checkpoint


def best_checkpoint(config: TrainConfig | dict, model_config: dict, model_state: dict, row: dict, step: int,
                    structure_source: Optional[dict]) -> dict:
    """What ``best.pt`` holds: the model of the epoch of the metrics ``row``."""
    return {"format": list(CHECKPOINT_FORMAT), "kind": "best",
            "config": asdict(config) if isinstance(config, TrainConfig) else config,
            "model_config": model_config, "epoch": row["epoch"], "step": step, "valid_elbo": row["valid_elbo"],
            "valid_bound": row.get("valid_bound"), "valid_accuracy": row.get("valid_accuracy"),
            "model_state": model_state, "structure_source": structure_source}


def repair_run(run_dir: str | Path) -> list[str]:
    """Make the files of a run agree with its ``checkpoint.pt`` after a write that stopped half-way (a full disk, a
    kill between two files); returns one sentence per file repaired (none for a consistent run).

    The checkpoint is written first at the end of an epoch and holds the whole history, so it is the record:
    ``metrics.jsonl`` and ``config.json`` are rewritten from it when they lag; ``best.pt`` is rewritten from it when the
    history's best epoch is the checkpoint's own (the model in both) and ``best.pt`` is missing or holds another
    epoch. A ``best.pt`` of an epoch the checkpoint never finished (written before it by older versions) whose true
    best is lost is set aside as ``best.pt.unfinished-epoch-N`` rather than kept as if it were the best.
    """
    run_dir = Path(run_dir)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    history, epoch, repaired = checkpoint.get("history") or [], checkpoint["epoch"], []
    lines = "".join(json.dumps(row) + "\n" for row in history)
    try:
        metrics = (run_dir / METRICS).read_text()
    except OSError:
        metrics = None
    if metrics != lines:
        write_text(run_dir / METRICS, lines)
        write_json(checkpoint["config"], run_dir / CONFIG)
        repaired.append(f"{METRICS} rewritten from {CHECKPOINT} (epoch {epoch})")
    best = best_row(history, checkpoint["config"].get("select_by") or "elbo")
    best_path = run_dir / BEST_CHECKPOINT
    best_epoch = load_checkpoint(best_path)["epoch"] if best_path.is_file() else None
    if best is None or best_epoch == best["epoch"]:
        return repaired
    if best["epoch"] == epoch:
        save_checkpoint(best_checkpoint(checkpoint["config"], checkpoint["model_config"], checkpoint["model_state"],
                                        best, checkpoint["step"], checkpoint.get("structure_source")), best_path)
        repaired.append(f"{BEST_CHECKPOINT} rewritten from {CHECKPOINT} (epoch {epoch}, the best)")
    elif best_epoch is not None and best_epoch > epoch:
        aside = best_path.with_name(f"{BEST_CHECKPOINT}.unfinished-epoch-{best_epoch}")
        best_path.replace(aside)
        repaired.append(f"{BEST_CHECKPOINT} held epoch {best_epoch}, which {CHECKPOINT} (epoch {epoch}) never "
                        f"finished; moved to {aside.name}, and the best epoch ({best['epoch']}) is no longer kept")
    return repaired


def _epochs_trained(run_dir: Path, default: int) -> int:
    """The last epoch in the run's metrics.jsonl (``default`` if it cannot be read)."""
    try:
        lines = (run_dir / METRICS).read_text().splitlines()
        return int(json.loads(lines[-1])["epoch"]) if lines else default
    except (OSError, ValueError, KeyError, TypeError):
        return default


def describe_checkpoint(checkpoint: dict) -> str:
    """E.g. "the best checkpoint (epoch 57 of 60, validation ELBO -95.10)"."""
    history = checkpoint.get("history") or []
    trained = history[-1]["epoch"] if history else checkpoint["epoch"]
    valid = checkpoint.get("valid_elbo", history[-1]["valid_elbo"] if history else None)
    of = f" of {checkpoint.get('epochs_trained', trained)}"
    elbo = f", validation ELBO {valid:.2f}" if valid is not None else ""
    bound = checkpoint.get("valid_bound", history[-1].get("valid_bound") if history else None)
    if bound is not None:
        name = selection_name("valid_bound", checkpoint["config"]["num_particles"])
        elbo += f", {name} {bound:.2f}"
    accuracy = checkpoint.get("valid_accuracy", history[-1].get("valid_accuracy") if history else None)
    if accuracy is not None:
        elbo += f", validation accuracy {100 * accuracy:.2f} %"
    return f"the {checkpoint['kind']} checkpoint (epoch {checkpoint['epoch']}{of}{elbo})"


def _setting(value) -> str:
    """A structure setting in words for a mismatch message."""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return "(none)" if value is None else str(value)


def _shape(shape: Optional[tuple]) -> str:
    return "(absent)" if shape is None else "(" + ", ".join(str(n) for n in shape) + ")"


def _load_model_state(model: LatentStructure, checkpoint: dict, path: Path) -> None:
    try:
        model.load_state_dict(checkpoint["model_state"])
    except (RuntimeError, KeyError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise CheckpointError(f"the checkpoint {path} does not match the model ({first_line})") from None


class Trainer:
    """Trains a latent structure with SVI, writing ``metrics.jsonl`` and a checkpoint every epoch.

    A fresh run refuses an existing, non-empty ``run_dir``; ``resume=True`` continues the run saved there
    from its last checkpoint, with the same parameters, optimizer state and random state, so that the
    result equals an uninterrupted run with the same seed.
    """

    #: the epoch that this process last wrote to (or resumed from) ``checkpoint.pt``; 0 for none
    saved_epoch: int = 0

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 progress: Optional[bool] = None, log: Callable[[str], None] = tqdm.write,
                 dataset: Optional[Dataset] = None, distributed: Optional[Distributed] = None):
        self.run_dir = Path(run_dir)
        self.dist = distributed
        self.progress = progress
        self.log = log
        self.checkpoint = None
        if resume:
            if distributed is None or distributed.is_main:
                for note in repair_run(self.run_dir):
                    log(f"repaired after an interrupted write: {note}")
            self.checkpoint = load_checkpoint(self.run_dir / CHECKPOINT)
            config = self._resumed_config(config)
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise PyroVAEError(f"the run directory {self.run_dir} already exists; pass --resume to continue it, "
                               "or choose another --name or --run-dir")
        config.validate()
        if (not resume and config.init_from is not None and (distributed is None or distributed.is_main)
                and not (Path(config.init_from) / CHECKPOINT).is_file()):
            # (a resumed run has its weights in its own checkpoint and no longer needs the other run; distributed,
            # rank 0 alone reads it: the folder may exist on its machine only)
            raise PyroVAEError(f"--init-from takes the run directory of an earlier 'pyro-vae train'; "
                               f"{config.init_from} holds no {CHECKPOINT}")
        if distributed is not None and config.batch_size < distributed.world_size:
            raise PyroVAEError(f"--batch-size {config.batch_size} is the global batch, cut into one shard per process: "
                               f"give at least {distributed.world_size} images for the {distributed.world_size} "
                               "processes")
        self.config = config
        self.device = resolve_device(config.device)
        pyro.set_rng_seed(config.seed)
        pyro.clear_param_store()
        if dataset is not None:
            check_dataset(dataset)
        elif config.image_size is not None:  # before a single image is resized
            check_resized_images_fit(config.image_size, images_before_loading(config.dataset, config.subset),
                                     config.device)
        self.dataset = dataset or load_run_data(config, device=self.device)
        if config.likelihood == "bernoulli" and not self.dataset.is_binary:
            raise PyroVAEError(f"the {config.dataset} images are grey-scale but the likelihood is Bernoulli; "
                               "pass --binarize dynamic (re-sampled every batch) or --binarize static, or choose "
                               "--likelihood continuous-bernoulli, gaussian or discretized-logistic")
        self.structure_source = self._structure_source(config)
        check_training_fits(config, self.dataset.image_shape,
                            sum(len(self.dataset.split(name)) for name in ("train", "valid", "test")),
                            self.structure_source, train_images=len(self.dataset.train))
        self.model = build_model(config.model, structure_source=self.structure_source,
                                 **config.model_kwargs(self.dataset.image_shape))
        self._check_support()
        self.model.to(self.device)
        if self.model.needs_labels and self.dataset.train.labels is None:
            raise PyroVAEError(f"the {config.model} model needs labelled images, and {config.dataset} has no training "
                               "labels; use --dataset binarized-mnist-labelled, mnist-test-release or mnist")
        if self.model.semi_supervised and self.dataset.labelled is None:
            raise PyroVAEError(f"the {config.model} model learns from a few labelled images among unlabelled ones; "
                               "say how many with --num-labelled N (e.g. 100)")
        if self.dataset.labelled is not None and not self.model.semi_supervised:
            raise PyroVAEError(f"--num-labelled is for semi-supervised structures such as ss-vae; {config.model} "
                               "does not use labels that way")
        if config.select_by is None:
            config.select_by = "accuracy" if self.dataset.labelled_valid is not None else "elbo"
        elif config.select_by == "accuracy" and self.dataset.labelled_valid is None:
            raise PyroVAEError(f"--select-by accuracy needs labelled validation images, and {config.dataset} has none "
                               "(its validation split carries no labels); use --select-by elbo")
        config.elbo = config.elbo_name()
        example_batches = self._example_batches()
        for batch in example_batches:  # the structure's contract, on a few images of every kind of batch
            check_programs(self.model.model, self.model.guide, tuple(a[:8] for a in batch), config.model)
        self.sites = latent_sites(self.model.model, self.model.guide, example_batches[0])
        note = check_elbo_applies(config.elbo, self.sites, config.baseline)
        if note:
            if not resume:
                self.log(note)
            # Pyro says the same on every validated step; once is enough
            warnings.filterwarnings("ignore", message="(?s).*If you want to enumerate sites", category=UserWarning)
        self.max_plate_nesting = self.sites.max_plate_nesting
        self.baseline_networks = (neural_baselines(self.sites, self.dataset.train.images.shape[1]).to(self.device)
                                  if config.elbo == "tracegraph" and config.baseline == "neural" else None)
        optimizer_args = {"lr": config.lr, "eps": config.adam_eps, "betas": tuple(config.adam_betas)}
        if config.optimizer == "clipped-adam":
            optimizer_args["clip_norm"] = config.clip_norm
        self.optimizer = OPTIMIZERS[config.optimizer](optimizer_args)
        if self.dist is not None:
            self.optimizer.before_step = self._sum_gradients
            if getattr(self.model, "batch_coupled", False) and self.dist.is_main:
                self.log(f"note: {config.model} couples the images of a batch (e.g. a minibatch estimate); each of "
                         f"the {self.dist.world_size} processes computes it on its own shard, so this run is not "
                         "one process's run on the whole batch")
        self.jit = config.uses_jit()
        self.elbo = make_elbo(config.elbo, jit=self.jit, num_particles=config.num_particles,
                              max_plate_nesting=self.max_plate_nesting)
        self.compiled = not self.jit
        #: after compile: SVI's step on the compiled graphs without Pyro's per-step parameter lookups
        self.compiled_step: Optional[CompiledStep] = None
        self._example = example_batches
        self.history: list[dict] = []
        self._first_loss: Optional[float] = None  # per image, for _divergence_bound
        self.epoch = 0
        self.step = 0
        guide = self.model.guide
        if config.elbo == "tracegraph":
            guide = with_baselines(guide, config.baseline, self.baseline_networks)
        self.svi = SVI(self._warmed_up(self.model.model), self._warmed_up(guide), self.optimizer, loss=self.elbo)
        if self.checkpoint is None:
            with torch.no_grad():
                self.model.initialize(self.dataset.train.images, torch.Generator().manual_seed(config.seed))
                if config.init_output_bias:
                    init_output_bias(self.model, self.dataset.train.images)
            if config.init_from is not None and self.is_main:
                self._start_from(config.init_from)
            if self.dist is not None:
                self._start_processes_alike()
        else:
            self._restore(self.checkpoint)
            if config.epochs < self.epoch:
                raise CheckpointError(f"the run in {self.run_dir} is already at epoch {self.epoch}; "
                                      f"--epochs {config.epochs} would train nothing, ask for more epochs")

    def _start_from(self, run_dir: str) -> None:
        """``--init-from``: this fresh run's weights become those of ``run_dir``'s best checkpoint. Its weights
        (names and shapes) and its pixels (likelihood, network kind, image shape) must be this run's; settings
        without weights may differ (the ELBO, a beta or gamma, the optimizer, schedule and data). Distributed,
        rank 0 alone loads them and the start of the job hands them to the others."""
        source, _, checkpoint = load_trained_model(run_dir, which="best")
        theirs, ours = source.config(), self.model.config()
        mismatched = [f"{key} {_setting(theirs.get(key))} against {_setting(ours.get(key))}"
                      for key in ("likelihood", "net", "x_dim", "image_shape") if theirs.get(key) != ours.get(key)]
        their_weights = {name: tuple(value.shape) for name, value in source.state_dict().items()}
        our_weights = {name: tuple(value.shape) for name, value in self.model.state_dict().items()}
        for name in sorted(set(their_weights) | set(our_weights)):
            if their_weights.get(name) != our_weights.get(name):
                mismatched.append(f"weight {name} {_shape(their_weights.get(name))} against "
                                  f"{_shape(our_weights.get(name))}")
        if mismatched:
            more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
            raise PyroVAEError(f"--init-from {run_dir} holds another structure than this run builds: "
                               f"{mismatched[0]}{more}; give the structure options of that run "
                               f"(--model, --z-dim, --hidden-dims, ... as in its config.json)")
        self.model.load_state_dict(source.state_dict())
        self.log(f"starting from the weights of {describe_checkpoint(checkpoint)} of {run_dir}")

    def _check_support(self) -> None:
        """Refuse, before training, data outside the support of the structure's likelihood (pixels off the 8-bit
        grid for the discretized logistic, say); training batches that are redrawn are checked as drawn."""
        likelihood = getattr(self.model, "likelihood", None)
        if likelihood is None or likelihood.name == "bernoulli":  # binary data were checked above
            return
        if not likelihood.discrete and self.dataset.binarize == "none" and all(
                is_binary(self.dataset.split(name).images) for name in ("train", "valid", "test")):
            raise PyroVAEError(f"the {self.config.dataset} images are binary (every pixel 0 or 1), and the "
                               f"{likelihood.spec} likelihood is a density, which grows without bound on two values, so "
                               "its NLL would be meaningless (below zero); use --likelihood bernoulli for binary pixels "
                               "(or discretized-logistic, which takes them as the 8-bit values 0 and 255)")
        for name in ("train", "valid", "test"):
            if name == "train" and self.dataset.binarize != "none":
                continue
            why = likelihood.support_error(self.dataset.split(name).images)
            if why:
                raise PyroVAEError(f"{why} (the {name} split of {self.config.dataset})")

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run (the only one, or rank 0 of a distributed job)."""
        return self.dist is None or self.dist.is_main

    @property
    def shard(self) -> tuple[int, int]:
        return (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)

    def _sum_gradients(self, params: list, names: list) -> None:
        """Distributed: sum the gradients over the processes, all but those of TraceGraph_ELBO's decaying-average
        baselines, which Pyro updates by hand (no gradient) and shapes by each process's shard of the batch.
        A non-finite sum stops every process at this step, before the parameters change."""
        finite = self.dist.sum_gradients([p for p, name in zip(params, names)
                                          if not name.startswith(AVERAGE_BASELINE_PARAM)])
        if not finite:
            raise TrainingDiverged(self._divergence_message(math.nan, self.step + 1 - self.epoch * self.steps_per_epoch))

    def _start_processes_alike(self) -> None:
        """Distributed: rank 0's parameters on every process, gradients summed before every step, and a random
        state of each process's own for its latent noise."""
        with self._as_one_job():  # rank 0 may stop before training (a busy run directory, say)
            self.dist.broadcast_parameters(self.model)
            if self.baseline_networks is not None:
                self.dist.broadcast_parameters(self.baseline_networks)
        seed = self.config.seed * 1_000_003 + 7919 * (self.dist.rank + 1)
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)

    def _structure_source(self, config: TrainConfig) -> Optional[dict]:
        """For a structure from a file, its source: the copy saved in the checkpoint when resuming (so an edited
        or deleted file changes nothing), else the file as it is now. None for a built-in structure."""
        if not is_file_spec(config.model):
            return None
        saved = self.checkpoint.get("structure_source") if self.checkpoint is not None else None
        if saved is None:
            return read_structure_source(config.model)
        try:
            current = read_structure_source(config.model)["sha256"]
        except PyroVAEError:
            current = None
        if current != saved["sha256"]:
            state = "is gone" if current is None else "has changed"
            self.log(f"note: {saved['file']} {state} since this run started; resuming with the copy saved in the "
                     f"run ({self.run_dir / STRUCTURE_FILE}, SHA-256 {saved['sha256'][:12]})")
        return saved

    def _labelled_per_epoch(self) -> tuple[int, int]:
        """The labelled batches of an epoch and the labelled images they hold (none without labelled images)."""
        if self.dataset.labelled is None:
            return 0, 0
        return labelled_batch_count(len(self.dataset.train), len(self.dataset.labelled), self.config.batch_size,
                                    self.config.labelled_every)

    @property
    def steps_per_epoch(self) -> int:
        return num_batches(len(self.dataset.train), self.config.batch_size) + self._labelled_per_epoch()[0]

    @property
    def images_per_epoch(self) -> int:
        return len(self.dataset.train) + self._labelled_per_epoch()[1]

    def _example_batches(self) -> list[tuple]:
        """A training batch of each kind the programs will see: unlabelled and, if any, labelled.

        Grey-scale images of a dynamically binarized (or dequantized) data set are redrawn with a generator of their own,
        so that taking the examples draws nothing from the random state training will use.
        """
        size = self.config.batch_size
        parts = [(self.dataset.train, self.model.needs_labels)]
        if self.dataset.labelled is not None:
            parts.append((self.dataset.labelled, True))
        batches = []
        for split, with_labels in parts:
            x, *labels = next(iterate_batches(split, size, with_labels=with_labels))
            x = redraw(x, self.dataset.binarize, torch.Generator(x.device).manual_seed(0))
            batches.append((x, *labels))
        return batches

    def kl_weight(self) -> float:
        """The KL warm-up factor: rises linearly from 0 to 1 over ``kl_warmup`` epochs of steps."""
        if not self.config.kl_warmup:
            return 1.0
        return min(1.0, self.step / (self.config.kl_warmup * self.steps_per_epoch))

    def _warmed_up(self, program: Callable) -> Callable:
        """With KL warm-up, ``program`` taking the KL weight as a last, tensor argument.

        A tensor argument, not a number read inside, so that a JIT-compiled ELBO sees each step's weight
        instead of freezing the one it was traced with.
        """
        if not self.config.kl_warmup:
            return program

        def scaled(*args):
            *args, weight = args
            with scale_latents(weight):
                return program(*args)

        return scaled

    def _step_args(self, batch: tuple) -> tuple:
        if not self.config.kl_warmup:
            return batch
        return (*batch, torch.tensor(self.kl_weight(), device=self.device))

    def compile(self, batch: tuple) -> float:
        """Trace and optimize the JIT-compiled ELBO on ``batch``, and on a batch of every other kind the
        programs take (labelled, for semi-supervised structures), since Pyro compiles one graph per kind of
        arguments (nothing to do without JIT); returns the seconds.

        Tracing runs the model and guide, which draws random numbers; it runs with the random state saved
        and restored, and its gradients are dropped, so that it changes nothing: a resumed run, which traces
        again, draws the same numbers as an uninterrupted one. Pyro validation is on while the programs
        run here, so a structure's mistakes surface with Pyro's messages before any step is taken.
        """
        if self.compiled:
            return 0.0
        start = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        averages = self._baseline_averages()
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(True):
            # The first call traces; TorchScript then profiles and optimizes the graph and its backward on
            # the next runs (tens of milliseconds here), which would otherwise land on the first training steps.
            for example in [batch] + [b for b in self._example if len(b) != len(batch)]:
                for _ in range(JIT_WARMUP_CALLS):
                    self.elbo.loss_and_grads(self.svi.model, self.svi.guide, *self._step_args(example))
            self._restore_baseline_averages(averages)
        for parameter in self._parameters():
            parameter.grad = None
        self.compiled = True
        self.compiled_step = CompiledStep.of(self.elbo, self.optimizer)
        return time.perf_counter() - start

    def _parameters(self) -> list:
        networks = list(self.baseline_networks.parameters()) if self.baseline_networks is not None else []
        return list(self.model.parameters()) + networks

    @staticmethod
    def _baseline_averages() -> dict:
        """TraceGraph_ELBO's decaying-average baselines, which live in Pyro's parameter store."""
        store = pyro.get_param_store()
        return {name: store[name].detach().clone() for name in store.keys() if name.startswith(AVERAGE_BASELINE_PARAM)}

    @staticmethod
    def _restore_baseline_averages(averages: dict) -> None:
        store = pyro.get_param_store()
        for name in [name for name in store.keys() if name.startswith(AVERAGE_BASELINE_PARAM)]:
            del store[name]
        for name, value in averages.items():
            store[name] = value.detach().clone()

    def _resumed_config(self, requested: TrainConfig) -> TrainConfig:
        """The checkpoint's config, with the fields that may change taken from ``requested``.

        Any other field of ``requested`` that differs from the checkpoint is a mistake, not a wish.
        """
        saved = TrainConfig.from_dict(self.checkpoint["config"])
        for f in fields(TrainConfig):
            if f.name in TrainConfig.RESUMABLE_CHANGES:
                setattr(saved, f.name, getattr(requested, f.name))
            elif f.name in ("elbo", "select_by") and getattr(requested, f.name) is None:
                continue  # not asked for: the checkpoint's
            elif getattr(requested, f.name) != getattr(saved, f.name):
                raise CheckpointError(f"the checkpoint in {self.run_dir} was trained with "
                                      f"{f.name}={getattr(saved, f.name)!r}, but {f.name}={getattr(requested, f.name)!r} "
                                      "was asked for; drop the option or start a new run")
        return saved

    def _restore(self, checkpoint: dict) -> None:
        _load_model_state(self.model, checkpoint, self.run_dir / CHECKPOINT)
        self.optimizer.set_state(self._checked_optimizer_state(checkpoint.get("optim_state")))
        saved_processes = int(checkpoint.get("processes", 1))
        processes = 1 if self.dist is None else self.dist.world_size
        if saved_processes != processes:
            raise CheckpointError(f"the run in {self.run_dir} was trained by {saved_processes} process(es) and is resumed "
                                  f"by {processes}: its batches and random states are those of {saved_processes}, so "
                                  f"resume it with the same number (--nproc-per-node {saved_processes}, or under "
                                  f"torchrun --nproc-per-node {saved_processes}; neither for one), or start a new run")
        torch.set_rng_state(checkpoint["rng_state"] if self.dist is None
                            else checkpoint["process_rng_states"][self.dist.rank])
        if self.device.type == "cuda":
            per_process = checkpoint.get("process_cuda_rng_states") if self.dist is not None else None
            state = per_process[self.dist.rank] if per_process else checkpoint.get("cuda_rng_state")
            if state is not None:
                torch.cuda.set_rng_state(state, self.device)
        if self.baseline_networks is not None:
            self.baseline_networks.load_state_dict(checkpoint["baseline_networks"])
        self._restore_baseline_averages(checkpoint.get("baseline_averages", {}))
        self.epoch = int(checkpoint["epoch"])
        self.saved_epoch = self.epoch
        self.step = int(checkpoint["step"])
        self.history = list(checkpoint["history"])

    def _checked_optimizer_state(self, state) -> dict:
        """The checkpoint's optimizer state, after checking it fits the parameters (shape of every moment)."""
        path = self.run_dir / CHECKPOINT
        if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
            raise CheckpointError(f"the checkpoint {path} has no readable optimizer state")
        store = pyro.get_param_store()
        for name, moments in state.items():
            if name not in store:
                continue  # a parameter made on the first step (e.g. a baseline); nothing to compare yet
            shape = tuple(store[name].shape)
            for key, value in moments.items():
                if torch.is_tensor(value) and value.dim() and tuple(value.shape) != shape:
                    raise CheckpointError(f"the optimizer state in {path} does not match the model: {key} of "
                                          f"{name} has shape {tuple(value.shape)}, the parameter {shape}")
        return state

    def best_epoch(self) -> Optional[dict]:
        """The metrics row of the epoch with the highest validation ELBO so far (the first of equals); with
        ``--elbo iwae``, the highest validation IWAE bound; semi-supervised, by default, the highest validation
        accuracy (``--select-by``, :func:`pyro_vae.config.selection_key`)."""
        return best_row(self.history, self.config.select_by)

    def selection(self) -> tuple[str, str]:
        """The metrics key that picks the best epoch, and its name in words."""
        key = selection_key(self.history, self.config.select_by)
        return key, selection_name(key, self.config.num_particles)

    def stopped_early(self) -> bool:
        """Whether ``patience`` epochs have passed since the best validation ELBO (or IWAE bound: see
        :meth:`best_epoch`) (early stopping)."""
        best = self.best_epoch()
        return (self.config.patience is not None and best is not None
                and self.epoch - best["epoch"] >= self.config.patience)

    def _save_best(self) -> None:
        """``best.pt``: the model of this epoch, the best so far. Written after ``checkpoint.pt``, which holds the
        same model: a crash between the two leaves a best.pt older than the history's best, which
        :func:`repair_run` rewrites from the checkpoint."""
        save_checkpoint(best_checkpoint(self.config, self.model.config(), self.model.state_dict(), self.history[-1],
                                        self.step, self.structure_source), self.run_dir / BEST_CHECKPOINT)

    def load_best(self) -> Optional[dict]:
        """Put the best epoch's parameters into ``self.model`` (for evaluation after training); returns its
        metrics row, or None when the run has no best checkpoint."""
        path = self.run_dir / BEST_CHECKPOINT
        if not path.is_file():
            return None
        checkpoint = load_checkpoint(path)
        _load_model_state(self.model, checkpoint, path)
        return next(row for row in self.history if row["epoch"] == checkpoint["epoch"])

    def _save(self, process_rng_states: Optional[list] = None, process_cuda_rng_states: Optional[list] = None) -> None:
        checkpoint = {
            "format": list(CHECKPOINT_FORMAT),
            "config": asdict(self.config),
            "model_config": self.model.config(),
            "epoch": self.epoch,
            "step": self.step,
            "model_state": self.model.state_dict(),
            "optim_state": self.optimizer.get_state(),
            "rng_state": torch.get_rng_state(),
            "history": self.history,
            "baseline_averages": self._baseline_averages(),
            "structure_source": self.structure_source,
        }
        if process_rng_states is not None:  # distributed: every process's random state, in rank order
            checkpoint["processes"] = len(process_rng_states)
            checkpoint["process_rng_states"] = process_rng_states
        if process_cuda_rng_states is not None:
            checkpoint["process_cuda_rng_states"] = process_cuda_rng_states
        if self.baseline_networks is not None:
            checkpoint["baseline_networks"] = self.baseline_networks.state_dict()
        if self.device.type == "cuda":
            checkpoint["cuda_rng_state"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(checkpoint, self.run_dir / CHECKPOINT)
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        write_text(self.run_dir / METRICS, lines)
        write_json(asdict(self.config), self.run_dir / CONFIG)
        if self.structure_source is not None and not (self.run_dir / STRUCTURE_FILE).is_file():
            # for people to read; loading uses the checksummed copy inside the checkpoint
            write_text(self.run_dir / STRUCTURE_FILE, self.structure_source["text"])

    def batches(self, split: str, *, shuffle: bool = False, generator: Optional[torch.Generator] = None):
        """The batches of ``split``: for "train", this process's shards of the global batches."""
        binarize = self.dataset.binarize if split == "train" else "none"
        size = self.config.batch_size if split == "train" else EVAL_BATCH_SIZE
        shard = self.shard if split == "train" else (0, 1)
        if split == "train" and self.dataset.labelled is not None:
            return semi_supervised_batches(self.dataset.train, self.dataset.labelled, size, shard=shard,
                                           generator=generator or torch.Generator().manual_seed(0), binarize=binarize,
                                           labelled_every=self.config.labelled_every)
        return iterate_batches(self.dataset.split(split), size, shuffle=shuffle, generator=generator,
                               binarize=binarize, with_labels=self.model.needs_labels, shard=shard)

    def validation_elbo(self, split: str = "valid") -> float:
        """The ELBO per image of ``split``; distributed, each process takes every N-th batch and the sums are
        combined."""
        # TraceEnum_ELBO where sites are marked for enumeration, so their sums are exact, not sampled
        elbo = "meanfield" if self.config.elbo == "meanfield" else "enum" if self.sites.enumerated else "trace"
        return self._per_image(split, lambda batches: elbo_per_datapoint(
            self.model.model, self.model.guide, batches, elbo=elbo, plate_nesting=self.max_plate_nesting))

    def validation_bound(self) -> float:
        """The IWAE bound per image of the validation images with the training K (``num_particles``): what
        ``--elbo iwae`` maximises, so what picks its best epoch. Distributed, as :meth:`validation_elbo`."""
        return self._per_image("valid", lambda batches: -negative_log_likelihood(
            self.model.model, self.model.guide, batches, num_samples=self.config.num_particles))

    def _per_image(self, split: str, mean_of: Callable[[list], float]) -> float:
        """``mean_of(batches)``, a mean per image, over the batches of ``split``; distributed, each process takes
        every N-th batch and the sums are combined."""
        batches = list(self.batches(split))
        if self.dist is not None:
            batches = batches[self.dist.rank::self.dist.world_size]
        mean = mean_of(batches) if batches else 0.0
        if self.dist is None:
            return mean
        count = sum(batch[0].shape[0] for batch in batches)
        total, count = self.dist.sum(mean * count, count)
        return total / count

    def fit(self) -> list[dict]:
        """Train up to ``config.epochs``, checkpointing each epoch; returns the per-epoch metrics.

        The run directory is locked meanwhile (:func:`pyro_vae.files.run_lock`): a second process training
        into it gets one sentence instead of silently overwriting this run's checkpoints. A fresh run that
        fails before its first checkpoint leaves no empty run directory behind.
        """
        if not self.is_main:  # distributed: rank 0 holds the lock and writes
            return self._fit_together()
        with locked_run_dir(self.run_dir):
            if self.checkpoint is None and self.epoch == 0 and any(self.run_dir.iterdir()):
                raise PyroVAEError(f"the run directory {self.run_dir} was filled by another process meanwhile; "
                                   "pass --resume to continue it, or choose another --name or --run-dir")
            try:
                return self._fit_together()
            except KeyboardInterrupt as interrupt:  # Ctrl-C: the command line prints what was kept
                interrupt.sentence = self.interrupted_sentence()
                raise

    def interrupted_sentence(self) -> str:
        """What an interruption during training kept, and how to go on."""
        saved = self.saved_epoch
        if not saved:
            return (f"interrupted during epoch 1, before the first checkpoint; nothing was kept (the run directory "
                    f"{self.run_dir} is left as it was), so train again from the start")
        return (f"interrupted during epoch {saved + 1}; epoch {saved}'s checkpoint is kept in "
                f"{self.run_dir / CHECKPOINT}; continue with: pyro-vae train --run-dir {self.run_dir} --resume")

    def _fit_together(self) -> list[dict]:
        """``_fit``; distributed, under :meth:`_as_one_job`."""
        if self.dist is None:
            return self._fit()
        with self._as_one_job():
            return self._fit()

    @contextlib.contextmanager
    def _as_one_job(self) -> Iterator[None]:
        """Distributed work that ends for every process if it ends for one: on any error this process lets go of
        the process group (a broken gloo group left to the interpreter's exit aborts it), and a collective
        that failed (another process died or stalled past the timeout) becomes one sentence, naming the epoch
        that checkpoint.pt really holds (:meth:`_kept_epoch`; ``self.epoch`` is already the next one while that
        epoch is validated and saved)."""
        try:
            yield
        except BaseException as err:
            self.dist.abandon()
            if isinstance(err, RuntimeError) and not isinstance(err, PyroVAEError) and is_collective_failure(err):
                raise collective_failure(err, self.dist, self._kept_epoch(), self.run_dir / CHECKPOINT) from None
            raise

    def _kept_epoch(self) -> Optional[int]:
        """The epoch ``checkpoint.pt`` holds: the last one this process saved or resumed from on rank 0, which
        writes it; on the others, what the file on disk says (None where it cannot be read from here)."""
        if self.is_main:
            return self.saved_epoch
        path = self.run_dir / CHECKPOINT
        if not path.is_file():
            return 0 if self.run_dir.is_dir() and not any(self.run_dir.iterdir()) else None
        try:
            return int(load_checkpoint(path)["epoch"])
        except Exception:  # half written, damaged, or gone meanwhile: say where it is without its epoch
            return None

    def _fit(self) -> list[dict]:
        config = self.config
        n_train = self.images_per_epoch
        steps_per_epoch = self.steps_per_epoch
        elapsed = self.history[-1]["seconds"] if self.history else 0.0
        if self.epoch == config.epochs:
            self.log(f"already trained to {self.epoch} epochs; nothing to train")
        objective = config.objective()
        while self.epoch < config.epochs:
            if self.stopped_early():
                best = self.best_epoch()
                key, name = self.selection()
                self.log(f"stopped early after epoch {self.epoch}: the {name} has not improved for "
                         f"{config.patience} epochs (best {selection_value(key, best[key])} at epoch {best['epoch']})")
                break
            epoch = self.epoch + 1
            lr = config.learning_rate(epoch, self.history)
            self.optimizer.set_lr(lr)
            # The shuffle depends on (seed, epoch) only, so a resumed run sees the same batches.
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
            start = time.perf_counter()
            bar = tqdm(self.batches("train", shuffle=True, generator=generator), total=steps_per_epoch,
                       desc=f"epoch {epoch}/{config.epochs}", disable=None if self.progress is None else not self.progress,
                       leave=False, unit="batch")

            def show_loss(step: int, total: float) -> None:
                if step % 20 == 0:
                    bar.set_postfix(loss=f"{total / min(step * config.batch_size, n_train):.2f}")

            try:
                total = self.run_steps(bar, on_step=show_loss)
            finally:
                bar.close()
            if self.dist is not None:
                total, = self.dist.sum(total)
            elapsed += time.perf_counter() - start
            self.epoch = epoch
            row = {"epoch": epoch, "step": epoch * steps_per_epoch, "objective": objective,
                   "train_loss": total / n_train, "valid_elbo": self.validation_elbo(), "lr": lr, "seconds": elapsed}
            if objective != "elbo":
                row["valid_bound"] = self.validation_bound()
            if self.dataset.labelled_valid is not None:
                row["valid_accuracy"] = classification_accuracy(self.model, self.dataset.labelled_valid)
            best = self.best_epoch()
            self.history.append(row)
            key, _ = self.selection()
            is_best = math.isfinite(row[key]) and (best is None or row[key] > best[key])
            states = self.dist.gather(torch.get_rng_state()) if self.dist is not None else None
            cuda_states = (self.dist.gather(torch.cuda.get_rng_state(self.device).cpu())
                           if self.dist is not None and self.device.type == "cuda" else None)
            if self.is_main:  # the checkpoint first: a best.pt left behind by a crash is repaired from it
                self._save(states, cuda_states)
                self.saved_epoch = epoch
            if is_best and self.is_main:
                self._save_best()
            name = "-ELBO" if objective == "elbo" else f"-IWAE bound (K={config.num_particles})"
            bound = f"  IWAE bound {row['valid_bound']:.2f}" if "valid_bound" in row else ""
            accuracy = f"  valid accuracy {100 * row['valid_accuracy']:.2f} %" if "valid_accuracy" in row else ""
            self.log(f"epoch {epoch}/{config.epochs}  train {name} {row['train_loss']:.2f}  "
                     f"valid ELBO {row['valid_elbo']:.2f}{bound} nats/image{accuracy}{' (best)' if is_best else ''}  "
                     f"lr {lr:.3g}  ({elapsed:.1f} s)")
        return self.history

    def run_steps(self, batches: Iterable[tuple], *,
                  on_step: Optional[Callable[[int, float], object]] = None) -> float:
        """One SVI step per batch (the hot path of ``fit``); returns the summed loss.

        The first step of each call runs with Pyro validation on; the others run with it off unless
        ``validate_every_step`` is set, because the data were checked once up front and Pyro's per-step
        argument checks cost about a tenth of a step on the default VAE. A loss that is NaN or infinite
        stops training with ``TrainingDiverged`` either way. With ``JitTrace_ELBO`` the steps after the first
        run Pyro's compiled graph through :class:`CompiledStep` (the same arithmetic as ``SVI.step``, without
        its per-step parameter lookups).
        """
        total = 0.0
        for step, batch in enumerate(batches, start=1):
            if batch[0].shape[0] == 0:  # distributed: this process's shard of a short last batch is empty
                self._empty_step()
                continue
            if step == 1:
                self.compile(batch)
            validate = step == 1 or self.config.validate_every_step
            args = self._step_args(batch)
            loss = None if validate or self.compiled_step is None else self.compiled_step(*args)
            if loss is None:
                loss = self._svi_step(args, validate)
            if not math.isfinite(loss) or abs(loss) / batch[0].shape[0] > self._divergence_bound(loss / batch[0].shape[0]):
                raise TrainingDiverged(self._divergence_message(loss, step))
            self.step += 1
            total += loss
            if on_step is not None:
                on_step(step, total)
        return total

    def _svi_step(self, args: tuple, validate: bool) -> float:
        """``SVI.step`` with Pyro validation on or off; NaN where validation refused the NaN that diverged."""
        with pyro.validation_enabled(validate):
            try:
                return self.svi.step(*args)
            except ValueError as err:
                # Pyro's validation refuses NaN distribution arguments before the loss can show them.
                if isinstance(err, PyroVAEError) or not self._diverged(err):
                    raise
                if self.dist is not None:  # stopped before its gradients: let the others know
                    self._share_divergence()
                return math.nan

    @staticmethod
    def _stored_parameters() -> set:
        """Every parameter in Pyro's store, as the optimizer takes them (unconstrained)."""
        store = pyro.get_param_store()
        return {store[name].unconstrained() for name in store.keys()}

    def _share_divergence(self) -> None:
        """Distributed: take part in this step's gradient sum with NaN, so that every process stops here with
        the divergence message (raised by :meth:`_sum_gradients`, before any parameter changes)."""
        params = self._stored_parameters()
        for p in params:
            p.grad = torch.full_like(p, math.nan)
        self.optimizer(params)

    def _empty_step(self) -> None:
        """A step without images, for a process whose shard of a short last batch is empty: it takes part in
        the gradient sum with zeros and steps with the others."""
        params = self._stored_parameters()
        for p in params:
            p.grad = None
        self.optimizer(params)
        self.step += 1

    def _diverged(self, err: ValueError) -> bool:
        """Whether a step's ValueError is divergence: non-finite parameters, or NaN/Inf that validation found."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return True
        _, found, values = str(err).partition("found invalid values")
        return bool(found) and any(bad in values.split("Trace Shapes")[0] for bad in ("nan", "inf"))

    def _divergence_bound(self, loss_per_image: float) -> float:
        """How large a loss per image may grow before it counts as divergence, like NaN: :data:`DIVERGENCE_GROWTH`
        times the first loss of this session (or the number of pixels, if larger). A learning rate far too large
        sends the loss up by many orders of magnitude while it stays finite (--lr 1e6: 1e31 nats)."""
        if self._first_loss is None and math.isfinite(loss_per_image):
            self._first_loss = abs(loss_per_image)
        return DIVERGENCE_GROWTH * max(self._first_loss or 0.0, self.dataset.train.images[0].numel(), 1.0)

    def _divergence_message(self, loss: float, step: int) -> str:
        grew = "" if not math.isfinite(loss) else (f" nats, more than {DIVERGENCE_GROWTH:.0e} times its first value "
                                                  f"({self._first_loss:.4g} nats per image)")
        where = f"the loss became {loss:.4g}{grew} at step {self.step + 1} (epoch {self.epoch + 1}, batch {step})"
        kept = ("no checkpoint had been written yet" if self.epoch == 0 else
                f"the last good checkpoint (epoch {self.epoch}) is kept in {self.run_dir / CHECKPOINT}")
        return f"{where}; {kept}; {self._divergence_causes()}"

    def _divergence_causes(self) -> str:
        """What may have made the loss non-finite, from this run's settings."""
        config = self.config
        causes = []
        if self.structure_source is not None:
            causes.append(f"the structure in {self.structure_source['file']} producing NaN or Inf (check its model "
                          "and guide)")
        beta = config.model_options.get("beta")
        if beta is not None and beta > 1:
            causes.append(f"a large KL weight (beta {beta:g})")
        if config.optimizer == "clipped-adam" and config.clip_norm > 100:
            causes.append(f"a loose --clip-norm {config.clip_norm:g}")
        causes.append(f"a learning rate too large for this model (--lr {config.lr:g}: try a smaller one)")
        return "possible causes: " + "; ".join(causes)
