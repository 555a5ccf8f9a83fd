"""The trainer: one class that runs epochs of SVI steps over a run directory. Its parts live beside it, one job
each: :mod:`~pyro_vae.training.setup` (checks and building before the first step), :mod:`~pyro_vae.training.steps`
(the steps, JIT, divergence), :mod:`~pyro_vae.training.state` (checkpoints saved and restored) and
:mod:`~pyro_vae.training.parallel` (several processes)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

import pyro
import torch
from tqdm.auto import tqdm

from pyro_vae.catalog import CHECKPOINT
from pyro_vae.config import TrainConfig, selection_key, selection_value
from pyro_vae.data import Dataset, Split, clustering_splits, iterate_batches, semi_supervised_batches
from pyro_vae.devices import resolve_device
from pyro_vae.distributed import Distributed
from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import (EVAL_BATCH_SIZE, classification_accuracy, elbo_per_datapoint,
                                 matched_clustering_accuracy, negative_log_likelihood)
from pyro_vae.files import locked_run_dir
from pyro_vae.inference.schedules import learning_rate
from pyro_vae.training.board import Board
from pyro_vae.training.checkpoints import load_checkpoint, repair_run
from pyro_vae.training.parallel import ParallelHooks
from pyro_vae.training.setup import RunSetup, check_config
from pyro_vae.training.state import RunState
from pyro_vae.training.steps import Steps


def epoch_learning_rate(config: TrainConfig, epoch: int, history: list[dict]) -> float:
    """The learning rate of ``epoch`` (1-based) given the metrics of the epochs before it."""
    key = selection_key(history, config.select_by)
    return learning_rate(config.lr_schedule, config.lr, epoch, gamma=config.lr_gamma, step=config.lr_step,
                         patience=config.lr_patience, valid_elbos=[row[key] for row in history])


class Trainer(RunSetup, Steps, RunState, ParallelHooks):
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
            self.checkpoint = load_checkpoint(self.run_dir / CHECKPOINT)
            if distributed is None or distributed.is_main:
                for note in repair_run(self.run_dir, self.checkpoint):
                    log(f"repaired after an interrupted write: {note}")
            config = self._resumed_config(config)
        elif self.run_dir.exists() and any(self.run_dir.iterdir()) and not (self.run_dir / CHECKPOINT).exists():
            raise PyroVAEError(f"the run directory {self.run_dir} already exists and holds no {CHECKPOINT} to resume "
                               "from (deleted, or never written); choose another --name or --run-dir, or move the "
                               "folder away")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise PyroVAEError(f"the run directory {self.run_dir} already exists; pass --resume to continue it, "
                               "or choose another --name or --run-dir")
        check_config(config)
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
        self.dataset = self._load_data(dataset)
        self.structure_source = self._structure_source(config)
        self.model = self._build_model()
        self._example = self._example_batches()
        self.sites = self._check_structure(self._example, note=not resume)
        self.max_plate_nesting = self.sites.max_plate_nesting
        self._build_svi()
        self.history: list[dict] = []
        self.board = None  # the TensorBoard writer, made at the first epoch with --tensorboard
        self._first_loss: Optional[float] = None  # per image, for _divergence_bound
        self.epoch = 0
        self.step = 0
        self._start_or_restore()

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
            lr = epoch_learning_rate(config, epoch, self.history)
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
            cluster_labels = self.cluster_labels()
            if cluster_labels is not None:
                row.update(matched_clustering_accuracy(self.model, cluster_labels))
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
            if self.sites.weighted or config.kl_warmup:  # the loss trained is not the ELBO (valid ELBO is)
                name = "loss (weighted, not the -ELBO)"
            bound = f"  IWAE bound {row['valid_bound']:.2f}" if "valid_bound" in row else ""
            accuracy = f"  valid accuracy {100 * row['valid_accuracy']:.2f} %" if "valid_accuracy" in row else ""
            if "valid_clustering_accuracy" in row:
                accuracy += (f"  clustering accuracy {100 * row['valid_clustering_accuracy']:.2f} % (smallest cluster "
                             f"{100 * row['valid_smallest_cluster']:.1f} %)")
            if config.tensorboard and self.is_main:
                if self.board is None:
                    self.board = Board(self.run_dir)
                self.board.epoch(self.model, row, self.batches("valid"))
            self.log(f"epoch {epoch}/{config.epochs}  train {name} {row['train_loss']:.2f}  "
                     f"valid ELBO {row['valid_elbo']:.2f}{bound} nats/{self.dataset.item}{accuracy}{' (best)' if is_best else ''}  "
                     f"lr {lr:.3g}  ({elapsed:.1f} s)")
        if self.board is not None:
            self.board.close()
            self.board = None
        return self.history

    def cluster_labels(self) -> Optional[Split]:
        """For structures that cluster, the labelled images their clusters are matched on each epoch (never the
        held-out ones, :func:`~pyro_vae.data.clustering_splits`), on the model's device; None otherwise."""
        if not hasattr(self, "_cluster_labels"):
            parts = clustering_splits(self.dataset) if self.model.can_cluster else None
            self._cluster_labels = None if parts is None else parts[0].to(self.device)
        return self._cluster_labels
