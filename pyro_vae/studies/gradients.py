"""Repeated gradient estimates of one estimator with the parameters held fixed, and their statistics (norm of the
mean, total variance, signal-to-noise ratio): what the estimator comparison, the SNR study and the discrete
study measure."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch

from pyro_vae.config import check_positive
from pyro_vae.errors import PyroVAEError
from pyro_vae.studies.estimators import BASELINE_LR_FACTOR, Estimator, parameter_groups


@dataclass
class GradientSamples:
    """``num_repeats`` independent gradient estimates, one row each, per parameter group."""

    estimator: str
    samples: dict[str, torch.Tensor]
    seconds_per_gradient: float


def sample_gradients(estimator: Estimator, batch: tuple, num_repeats: int, *, baseline_warmup: int = 100,
                     baseline_lr: float = BASELINE_LR_FACTOR * 1e-3,
                     progress: Optional[Callable[[Iterable], Iterable]] = None) -> GradientSamples:
    """Estimate the gradient of the ELBO on ``batch`` ``num_repeats`` times with the parameters held fixed.

    Baselines first see ``baseline_warmup`` estimates on the same batch: the decaying average settles, and
    the neural baseline is trained by Adam (``baseline_lr``) on the loss that ``TraceGraph_ELBO`` adds for it.
    """
    check_positive(num_repeats, "the number of repeated gradient estimates")
    groups = parameter_groups(estimator.base_model, estimator.base_guide, batch)
    params = [p for group in groups.values() for p in group.values()]
    if estimator.baseline_nets is not None:
        params += list(estimator.baseline_nets.parameters())

    def estimate() -> float:
        for p in params:
            p.grad = None
        start = time.perf_counter()
        estimator.elbo.loss_and_grads(estimator.model, estimator.guide, *batch)
        return time.perf_counter() - start

    if estimator.spec.baseline is not None:
        optimizer = (torch.optim.Adam(estimator.baseline_nets.parameters(), lr=baseline_lr)
                     if estimator.baseline_nets is not None else None)
        for _ in range(baseline_warmup):
            estimate()
            if optimizer is not None:
                optimizer.step()

    rows: dict[str, list[torch.Tensor]] = {group: [] for group in groups}
    seconds = 0.0
    for _ in (progress or iter)(range(num_repeats)):
        seconds += estimate()
        for group, named in groups.items():
            rows[group].append(_flat_gradient(named.values()))
    for p in params:
        p.grad = None
    return GradientSamples(estimator.name, {group: torch.stack(r) for group, r in rows.items()},
                           seconds / num_repeats)


def _flat_gradient(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """The gradients of ``params`` as one vector, with zeros for a parameter that received none."""
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    return torch.cat(grads) if grads else torch.zeros(0)


def gradient_statistics(samples: torch.Tensor, *, debias: bool = False) -> dict[str, float]:
    """Statistics of ``R`` gradient estimates of ``D`` parameters, given as an (R, D) tensor.

    * ``mean_grad_norm``: the norm of the average estimate;
    * ``total_variance``: the sum over parameters of each one's variance (the trace of the covariance);
    * ``snr``: |mean| / standard deviation, averaged over the parameters whose estimate varies. The average of R
      estimates of a parameter whose expected gradient is zero is still about 0.8 / sqrt(R) standard deviations
      from zero, so this SNR never falls below that floor; with ``debias`` each parameter's squared mean is less
      its sampling variance s^2 / R (at least 0) before the square root, which more than halves the floor.
    """
    if samples.dim() != 2 or samples.shape[0] < 2:
        raise PyroVAEError("gradient statistics need at least two estimates, as an (R, D) tensor")
    samples = samples.double()
    mean, std = samples.mean(0), samples.std(0)
    varies = std > 0
    signal = mean.abs()
    if debias:
        signal = (mean.pow(2) - std.pow(2) / samples.shape[0]).clamp(min=0).sqrt()
    snr = (signal[varies] / std[varies]).mean().item() if varies.any() else float("nan")
    return {"mean_grad_norm": mean.norm().item(), "total_variance": std.pow(2).sum().item(), "snr": snr}
