"""Gradient estimators for discrete latent sites, measured against the exact gradient.

When the guide marks every latent site for enumeration (``infer={"enumerate": "parallel"}``, as the Bernoulli
mixture does), ``TraceEnum_ELBO`` sums the ELBO over all their values, and its gradient is the exact gradient
of the ELBO: the reference. Every other estimator is run ``R`` times with ``N`` samples each (``num_particles
= N``, drawn in one vectorized pass) and its estimates g_1..g_R are compared with the exact gradient g:

    bias      ||mean_r g_r - g||
    variance  sum over parameters of the variance of g_r  (the trace of the covariance)
    MSE       mean_r ||g_r - g||^2   (= bias^2 + variance * (R - 1) / R)

per parameter group (the guide's, the model's). An unbiased estimator's variance and MSE fall as 1/N and its
measured bias is noise, of about sqrt(variance / R) (``bias_floor``); a biased one's MSE levels off at bias^2.
Gradients are those of the loss -ELBO, as Pyro's ELBOs put them on the parameters.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import pyro
import torch

from pyro_vae.catalog import DISCRETE_SAMPLE_SIZES
from pyro_vae.errors import PyroVAEError
from pyro_vae.studies.estimators import (BASELINE_LR_FACTOR, CONCRETE_TEMPERATURES, Estimator, applicability,
                                           check_positive, concrete_name, estimator_spec, latent_sites)
from pyro_vae.studies.gradients import sample_gradients

DISCRETE_ESTIMATORS = ("enum", "score", "score-avg-baseline", "score-nn-baseline",
                       *(concrete_name(t) for t in CONCRETE_TEMPERATURES))
SAMPLE_SIZES = DISCRETE_SAMPLE_SIZES

#: ``progress(description, total)`` returns a wrapper for a loop (e.g. a tqdm bar), or None for no bar
Progress = Callable[[str, int], Callable]


def check_exact_gradient_exists(guide: Callable, batch: tuple) -> None:
    for name, site in latent_sites(guide, batch).items():
        if site["infer"].get("enumerate") != "parallel":
            raise PyroVAEError(f"the exact gradient needs every latent site of the guide summed out by enumeration, "
                               f"but site {name!r} is sampled; use a structure whose latent sites are all discrete "
                               "and marked infer={'enumerate': 'parallel'}, such as bernoulli-mixture")


def exact_gradient(model: Callable, guide: Callable, batch: tuple) -> dict[str, torch.Tensor]:
    """The gradient of -ELBO on ``batch``, per parameter group, with every latent site summed out by
    ``TraceEnum_ELBO``; one flat vector per group, in the order of :func:`~estimators.parameter_groups`."""
    check_exact_gradient_exists(guide, batch)
    with pyro.get_param_store().scope():
        result = sample_gradients(Estimator("enum", model, guide, batch), batch, 1)
    return {group: samples[0] for group, samples in result.samples.items()}


def error_statistics(samples: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Bias, total variance, MSE and the bias an unbiased estimator would show (see the module docstring) of
    ``R`` estimates, an (R, D) tensor, against the exact gradient, a vector of D."""
    if samples.dim() != 2 or samples.shape[0] < 2 or samples.shape[1:] != exact.shape:
        raise PyroVAEError("error statistics need at least two estimates as an (R, D) tensor and an exact "
                           "gradient of D values")
    samples, exact = samples.double(), exact.double()
    total_variance = samples.var(0).sum().item()
    return {"bias": (samples.mean(0) - exact).norm().item(), "total_variance": total_variance,
            "mse": (samples - exact).pow(2).sum(1).mean().item(),
            "bias_floor": (total_variance / samples.shape[0]) ** 0.5}


def estimator_errors(model: Callable, guide: Callable, batch: tuple,
                     estimators: Sequence[str] = DISCRETE_ESTIMATORS, sample_sizes: Sequence[int] = SAMPLE_SIZES,
                     num_repeats: int = 100, *, baseline_warmup: int = 100,
                     baseline_lr: float = BASELINE_LR_FACTOR * 1e-3,
                     progress: Optional[Progress] = None) -> list[dict]:
    """One row per estimator and N: :func:`error_statistics` of ``num_repeats`` N-sample gradient estimates on
    ``batch`` for each parameter group (``guide_bias``, ``model_mse``, ...), and seconds per estimate.

    ``enum`` has one row, at N = 1: it is exact, and N samples would be N copies of the same sum. An estimator
    that does not apply to the pair's sites has one row with the reason under ``not_applicable``. Baselines
    get ``baseline_warmup`` estimates first, as in :func:`~pyro_vae.studies.gradients.sample_gradients`.
    """
    for name in estimators:
        estimator_spec(name)
    for value, what in [(num_repeats, "the number of repeated gradient estimates"),
                        *((n, "each number of samples N") for n in sample_sizes)]:
        check_positive(value, what)
    if num_repeats < 2 or not sample_sizes:
        raise PyroVAEError("a variance needs at least 2 repeated estimates, and at least one number of samples N")
    exact = exact_gradient(model, guide, batch)
    rows = []
    for name in estimators:
        reason = applicability(name, model, guide, batch)
        if reason is not None:
            rows.append({"estimator": name, "not_applicable": reason})
            continue
        for n in (1,) if name == "enum" else sample_sizes:
            with pyro.get_param_store().scope():
                estimator = Estimator(name, model, guide, batch, num_particles=n, vectorize_particles=n > 1)
                result = sample_gradients(estimator, batch, num_repeats, baseline_warmup=baseline_warmup,
                                          baseline_lr=baseline_lr,
                                          progress=progress(f"{name}, N={n}", num_repeats) if progress else None)
            row = {"estimator": name, "num_samples": n}
            for group, samples in result.samples.items():
                if samples.shape[1]:
                    row.update({f"{group}_{key}": value
                                for key, value in error_statistics(samples, exact[group]).items()})
            row["seconds_per_gradient"] = result.seconds_per_gradient
            rows.append(row)
    return rows
