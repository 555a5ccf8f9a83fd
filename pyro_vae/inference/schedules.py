"""Learning-rate schedules, one learning rate per epoch.

Each schedule is a function of the run's config, the epoch about to be trained (1-based) and the metrics of
the epochs before it, and of nothing else: a resumed run recomputes exactly the rates of an uninterrupted one
from the history its checkpoint holds, with no scheduler state to save.

* ``constant``: ``lr`` throughout.
* ``iwae``: the staged schedule of Burda et al. (2016, section 5): stage i = 0, ..., 7 lasts 3^i epochs at
  ``lr * 10^(-i/7)``; 3,280 epochs in all (later epochs stay at the last rate). With ``--lr 1e-3 --adam-eps
  1e-4 --batch-size 20`` it is their recipe.
* ``step``: ``lr * gamma^floor((epoch - 1) / step)``, the rate multiplied by ``gamma`` every ``step`` epochs.
* ``exponential``: ``lr * gamma^(epoch - 1)``.
* ``plateau``: torch's ``ReduceLROnPlateau`` on the validation ELBO (mode max): the rate is multiplied by
  ``gamma`` once the ELBO has not improved for ``lr_patience`` epochs; replayed over the history.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from pyro_vae.catalog import SCHEDULE_HELP, SCHEDULES  # noqa: F401 (re-exported)
from pyro_vae.config import check_schedule  # noqa: F401 (re-exported)
from pyro_vae.errors import PyroVAEError

#: ``gamma`` of each schedule when ``--lr-gamma`` is not given
DEFAULT_GAMMA = {"step": 0.5, "exponential": 0.99, "plateau": 0.5}
IWAE_STAGES = 8


def iwae_stage(epoch: int) -> int:
    """The stage i of the IWAE schedule that ``epoch`` (1-based) falls in: epochs 1 | 2-4 | 5-13 | ... ."""
    last_epoch_of_stage = 0
    for i in range(IWAE_STAGES):
        last_epoch_of_stage += 3 ** i
        if epoch <= last_epoch_of_stage:
            return i
    return IWAE_STAGES - 1


def learning_rate(name: str, lr: float, epoch: int, *, gamma: Optional[float] = None, step: int = 100,
                  patience: int = 10, valid_elbos: Sequence[float] = ()) -> float:
    """The learning rate of ``epoch`` (1-based) under schedule ``name``; ``valid_elbos`` are the validation
    ELBOs of the epochs before it (only ``plateau`` reads them)."""
    check_schedule(name, gamma, step, patience)
    if epoch < 1:
        raise PyroVAEError(f"epochs count from 1, got {epoch}")
    gamma = DEFAULT_GAMMA.get(name, 1.0) if gamma is None else gamma
    if name == "constant":
        return lr
    if name == "iwae":
        return lr * 10 ** (-iwae_stage(epoch) / 7)
    if name == "step":
        return lr * gamma ** ((epoch - 1) // step)
    if name == "exponential":
        return lr * gamma ** (epoch - 1)
    if gamma == 1.0:
        return lr  # plateau with factor 1: never lowered (torch refuses a factor of 1)
    # plateau: torch's rule, replayed over the validation ELBOs seen so far
    parameter = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=gamma, patience=patience)
    for value in valid_elbos[:epoch - 1]:
        scheduler.step(value if math.isfinite(value) else -math.inf)
    return optimizer.param_groups[0]["lr"]
