"""What a run keeps between sessions: saving ``checkpoint.pt`` (then ``metrics.jsonl``, ``config.json``) and
``best.pt`` at the end of each epoch, restoring all of it so that a resumed run equals an uninterrupted one, and
which epoch is the best."""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Optional

import pyro
import torch

from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT, CONFIG, METRICS
from pyro_vae.config import TrainConfig, best_row, selection_key, selection_name
from pyro_vae.errors import CheckpointError
from pyro_vae.files import save_checkpoint, write_json, write_text
from pyro_vae.inference.baselines import AVERAGE_BASELINE_PARAM
from pyro_vae.models import STRUCTURE_FILE
from pyro_vae.models.base import init_output_bias
from pyro_vae.training.checkpoints import CHECKPOINT_FORMAT, _load_model_state, best_checkpoint, load_checkpoint


class RunState:
    """The parts of :class:`~pyro_vae.training.Trainer` that save and restore a run."""

    def _start_or_restore(self) -> None:
        """A fresh run's first parameters (the structure's own start, the output bias, another run's weights,
        rank 0's on every process), or a resumed run's state from its checkpoint."""
        config = self.config
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

    def interrupted_sentence(self) -> str:
        """What an interruption during training kept, and how to go on."""
        saved = self.saved_epoch
        if not saved:
            return (f"interrupted during epoch 1, before the first checkpoint; nothing was kept (the run directory "
                    f"{self.run_dir} is left as it was), so train again from the start")
        return (f"interrupted during epoch {saved + 1}; epoch {saved}'s checkpoint is kept in "
                f"{self.run_dir / CHECKPOINT}; continue with: pyro-vae train --run-dir {self.run_dir} --resume"
                + (f" --nproc-per-node {self.dist.world_size}" if self.dist is not None else ""))
