"""Training with SVI: the loop, the run directory, and checkpoints that resume a run exactly.

* :mod:`~pyro_vae.training.trainer`: :class:`Trainer`, epochs of SVI steps over a run directory;
* :mod:`~pyro_vae.training.setup`: what is checked and built before the first step (:func:`check_config`,
  :func:`load_run_data`);
* :mod:`~pyro_vae.training.steps`: the steps themselves, JIT compilation, KL warm-up, divergence;
* :mod:`~pyro_vae.training.state`: ``checkpoint.pt``, ``best.pt`` and ``metrics.jsonl`` saved and restored;
* :mod:`~pyro_vae.training.parallel`: the hooks of a ``torch.distributed`` job;
* :mod:`~pyro_vae.training.checkpoints`: the checkpoint format, loading a trained run, repairing a half-written one.
"""
from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT, CONFIG, METRICS
from pyro_vae.config import JIT_BY_DEFAULT, MAX_SEED, TrainConfig, check_seed
from pyro_vae.devices import resolve_device
from pyro_vae.files import write_csv, write_json
from pyro_vae.training.checkpoints import (CHECKPOINT_FORMAT, best_checkpoint, describe_checkpoint, load_checkpoint,
                                           load_trained_model, repair_run)
from pyro_vae.evaluation import EVAL_BATCH_SIZE
from pyro_vae.training.setup import check_config, load_run_data
from pyro_vae.training.steps import DIVERGENCE_GROWTH, OPTIMIZERS
from pyro_vae.training.trainer import Trainer, epoch_learning_rate

__all__ = ["BEST_CHECKPOINT", "CHECKPOINT", "CHECKPOINT_FORMAT", "CONFIG", "DIVERGENCE_GROWTH", "EVAL_BATCH_SIZE",
           "JIT_BY_DEFAULT", "MAX_SEED", "METRICS", "OPTIMIZERS", "TrainConfig", "Trainer", "best_checkpoint",
           "check_config", "check_seed", "describe_checkpoint", "epoch_learning_rate", "load_checkpoint",
           "load_run_data", "load_trained_model", "repair_run", "resolve_device", "write_csv", "write_json"]
