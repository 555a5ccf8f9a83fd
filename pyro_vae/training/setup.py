"""What a run checks and builds before its first step: the config as a whole, the data, the structure and its
contract, a structure file's saved source, and the weights of another run to start from."""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from pyro_vae.catalog import is_discrete_likelihood, takes_binary_pixels
from pyro_vae.config import TrainConfig
from pyro_vae.data import (Dataset, check_dataset, dequantize_dataset, is_binary, iterate_batches, labelled_batch_count,
                           load_dataset, num_batches, redraw, semi_supervised)
from pyro_vae.devices import resolve_device
from pyro_vae.errors import PyroVAEError, first_line
from pyro_vae.inference.applicability import check_elbo_applies
from pyro_vae.inference.sites import LatentSites, check_programs, latent_sites
from pyro_vae.likelihoods import likelihood_for_data
from pyro_vae.limits import check_resized_images_fit, check_training_fits, images_before_loading
from pyro_vae.models import (STRUCTURE_FILE, LatentStructure, build_model, check_model_options, is_file_spec, model_class,
                             read_structure_source)
from pyro_vae.training.board import check_tensorboard
from pyro_vae.training.checkpoints import _setting, _shape, describe_checkpoint, load_trained_model


def check_config(config: TrainConfig) -> None:
    """Every option of a run, before any data are loaded: :meth:`TrainConfig.validate` (the checks that need
    neither torch nor the structures), the device against this machine's GPUs, and the model options by the
    structure itself (a structure from a file checks its own when it is built)."""
    config.validate()
    resolve_device(config.device)
    if config.tensorboard:  # an optional package: checked only when asked for
        check_tensorboard()
    if not is_file_spec(config.model):
        check_model_options(config.model, config.model_kwargs())


def load_run_data(config: "TrainConfig", *, device: str | torch.device = "cpu", subset: Optional[int] = None) -> Dataset:
    """The data set a run was (or will be) trained on, as its config says; ``subset`` overrides the config's."""
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download,
                           binarize=config.binarize, subset=subset or config.subset, device=device, seed=config.seed,
                           image_size=config.image_size)
    if dataset.eight_bit and not is_discrete_likelihood(config.likelihood):
        dequantize_dataset(dataset, seed=config.seed)
    if config.num_labelled is not None:
        dataset = semi_supervised(dataset, config.num_labelled, seed=config.seed)
    return dataset


def check_data_kind(cls, name: str, dataset: Dataset) -> None:
    """One sentence, before anything is built, for a structure over sequences given images or vectors, or a structure
    over images (or flat vectors) given sequences, whose steps and lengths it would ignore."""
    kind = dataset.kind
    if cls.data_kind == "sequences" and kind != "sequences":
        raise PyroVAEError(f"the {name} structure models sequences (N, T, D) of variable length, and {dataset.name} "
                           f"holds {kind}; give it --dataset hmm-sequences, a .npz of (N, T, D) arrays or a "
                           "polyphonic-music pickle")
    if cls.data_kind != "sequences" and kind == "sequences":
        raise PyroVAEError(f"{dataset.name} holds sequences of variable length, and the {name} structure models "
                           "images or vectors and would ignore their steps and lengths; choose --model dmm or hmm")


class RunSetup:
    """The parts of :class:`~pyro_vae.training.Trainer` that prepare a run before its first step."""

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
        if likelihood is None or likelihood.binary_only:  # binary data were checked above
            return
        if not likelihood.discrete and self.dataset.binarize == "none" and all(
                is_binary(self.dataset.split(name).images) for name in ("train", "valid", "test")):
            raise PyroVAEError(f"the {self.config.dataset} {self.dataset.item}s are binary (every value 0 or 1), and the "
                               f"{likelihood.spec} likelihood is a density, which grows without bound on two values, so "
                               "its NLL would be meaningless (below zero); use --likelihood bernoulli for binary pixels "
                               "(or discretized-logistic, which takes them as the 8-bit values 0 and 255)")
        for name in ("train", "valid", "test"):
            if name == "train" and self.dataset.binarize != "none":
                continue
            why = likelihood.support_error(self.dataset.split(name).images)
            if why:
                raise PyroVAEError(f"{why} (the {name} split of {self.config.dataset})")

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

    def _load_data(self, dataset: Optional[Dataset]) -> Dataset:
        """The run's data (``dataset`` when given, checked as data from a user), refused before the structure is
        built when the likelihood cannot take its pixels; ``--image-size`` is checked against memory first. A
        likelihood that counts something from the data (the categories of ``categorical``) gets its full spec in
        the config here, so that the run records it and rebuilds the same structure."""
        config = self.config
        if dataset is not None:
            check_dataset(dataset)
        elif config.image_size is not None:  # before a single image is resized
            check_resized_images_fit(config.image_size, images_before_loading(config.dataset, config.subset),
                                     config.device)
        dataset = dataset or load_run_data(config, device=self.device)
        if takes_binary_pixels(config.likelihood) and not dataset.is_binary and dataset.kind != "images":
            raise PyroVAEError(f"the {config.dataset} {dataset.kind} hold values other than 0 and 1, and the likelihood "
                               "is Bernoulli; choose --likelihood gaussian for real values (or --binarize dynamic or "
                               "static for values in [0, 1])")
        if takes_binary_pixels(config.likelihood) and not dataset.is_binary:
            raise PyroVAEError(f"the {config.dataset} images are grey-scale but the likelihood is Bernoulli; "
                               "pass --binarize dynamic (re-sampled every batch) or --binarize static, or choose "
                               "--likelihood continuous-bernoulli, gaussian or discretized-logistic")
        config.likelihood = likelihood_for_data(config.likelihood, dataset.kind,
                                                [dataset.split(name).images for name in ("train", "valid", "test")])
        return dataset

    def _build_model(self) -> LatentStructure:
        """The structure, once its estimated memory fits, with the data checked against its likelihood and its
        need for labels; sets the default ``select_by`` from the data."""
        config, dataset = self.config, self.dataset
        check_data_kind(model_class(config.model, self.structure_source), config.model, dataset)
        check_training_fits(config, dataset.image_shape, sum(len(dataset.split(name)) for name in ("train", "valid", "test")),
                            self.structure_source, train_images=len(dataset.train))
        self.model = build_model(config.model, structure_source=self.structure_source,
                                 **config.model_kwargs(dataset.image_shape))
        self._check_built(config.model_kwargs(dataset.image_shape))
        self._check_support()
        self.model.to(self.device)
        if self.model.needs_labels and dataset.train.labels is None:
            raise PyroVAEError(f"the {config.model} model needs labelled images, and {config.dataset} has no training "
                               "labels; use --dataset binarized-mnist-labelled, mnist-test-release or mnist")
        if self.model.semi_supervised and dataset.labelled is None:
            raise PyroVAEError(f"the {config.model} model learns from a few labelled images among unlabelled ones; "
                               "say how many with --num-labelled N (e.g. 100)")
        if dataset.labelled is not None and not self.model.semi_supervised:
            raise PyroVAEError(f"--num-labelled is for semi-supervised structures such as ss-vae; {config.model} "
                               "does not use labels that way")
        if config.select_by is None:
            config.select_by = "accuracy" if dataset.labelled_valid is not None else "elbo"
        elif config.select_by == "accuracy" and dataset.labelled_valid is None:
            raise PyroVAEError(f"--select-by accuracy needs labelled validation images, and {config.dataset} has none "
                               "(its validation split carries no labels); use --select-by elbo")
        config.elbo = config.elbo_name()
        return self.model

    def _check_built(self, options: dict) -> None:
        """The structure built is the one asked for: its ``config()`` (what checkpoints rebuild it from) runs and
        keeps the sizes it was given (a constructor that ignores ``z_dim``, say, is refused, not recorded wrongly)."""
        try:
            built = self.model.config()
        except Exception as err:  # noqa: BLE001 - a structure file's own mistake, before any training
            if not is_file_spec(self.config.model):
                raise
            raise PyroVAEError(f"the structure {self.config.model}: its config() raised {type(err).__name__}: "
                               f"{first_line(err)}; it must return the constructor's arguments, which checkpoints "
                               "rebuild the structure from") from None
        for key in ("z_dim", "hidden_dims", "activation"):
            if key in built and key in options and _same(built[key]) != _same(options[key]):
                raise PyroVAEError(f"the structure {self.config.model} was given {key}={_same(options[key])!r} but "
                                   f"built {key}={_same(built[key])!r}; its constructor must use the {key} it is "
                                   "given (and config() return it), or the run would record sizes it does not have")

    def _check_structure(self, batches: list[tuple], note: bool = True) -> LatentSites:
        """The structure's contract on a whole batch of every kind (:func:`check_programs`), its latent
        sites, and whether the ELBO applies to them (a one-line note, once, when it falls back to the plain score
        function)."""
        binary = self.dataset.is_binary
        for batch in batches:
            check_programs(self.model.model, self.model.guide, batch, self.config.model, binary=binary)
        sites = latent_sites(self.model.model, self.model.guide, batches[0])
        why = check_elbo_applies(self.config.elbo, sites, self.config.baseline, num_particles=self.config.num_particles,
                                 guide=self.model.guide, batch=batches[0])
        if why:
            if note:
                self.log(why)
            # Pyro says the same on every validated step; once is enough
            warnings.filterwarnings("ignore", message="(?s).*If you want to enumerate sites", category=UserWarning)
        return sites


def _same(value):
    """A config value as it compares: lists and tuples alike."""
    return list(value) if isinstance(value, (list, tuple)) else value
