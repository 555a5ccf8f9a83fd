"""The hooks that make N processes of a ``torch.distributed`` job train as one (see :mod:`pyro_vae.distributed`):
the same start, gradients summed before each step, shards of a short last batch, and one end for all."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import pyro
import torch

from pyro_vae.catalog import CHECKPOINT
from pyro_vae.distributed import collective_failure, is_collective_failure
from pyro_vae.errors import PyroVAEError, TrainingDiverged
from pyro_vae.inference.baselines import AVERAGE_BASELINE_PARAM
from pyro_vae.training.checkpoints import load_checkpoint


class ParallelHooks:
    """The parts of :class:`~pyro_vae.training.Trainer` that only a distributed job uses."""

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
