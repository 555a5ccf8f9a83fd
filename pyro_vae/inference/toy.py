"""The textbook case for the reparameterization trick, run through Pyro's own ELBO machinery.

    q_theta(x) = N(theta, 1),   minimise  E_q[x^2],   whose gradient is 2 theta.

Two unbiased estimators of that gradient from x = theta + eps, eps ~ N(0, 1):

    score function     x^2 (x - theta)      variance (theta^4 + 14 theta^2 + 15) / N
    reparameterization 2 (theta + eps)      variance 4 / N

for the average of N samples. Here they are not written by hand: ``Trace_ELBO`` differentiates through the
reparameterized sample, and ``TraceGraph_ELBO`` gives the score function once the site is made
non-reparameterized (the ``score`` estimator of :mod:`pyro_vae.inference.estimators`).

The model makes the ELBO exactly -E_q[x^2]: x is flat, the cost enters as a factor, and a second factor
adds back log q(x) with gradients stopped. So log p(x) - log q(x) = -x^2 at every sample, and neither
estimator sees an entropy term: with it, the score function would carry (x - theta) log q(x), zero in
expectation but not per sample. Per sample the two estimates are exactly the formulas above.

R repeated N-sample estimates are one vectorized pass: theta is a vector of R copies inside a plate, each
copy gets its own gradient, and Pyro's ``vectorize_particles`` draws the N samples of every copy at once.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.estimators import Estimator, check_positive

TOY_ESTIMATORS = ("score", "reparam")
SAMPLE_SIZES = (10, 100, 1000, 10_000, 100_000)
#: samples x repeats per vectorized pass (float64): the process stays under 2 GB
MAX_ELEMENTS = 2 ** 21


def model(theta: torch.Tensor) -> None:
    """log p(x) = -x^2 + log q_theta(x) with gradients stopped; ``theta`` holds the guide's current values."""
    with pyro.plate("repeats", theta.shape[0]):
        x = pyro.sample("x", dist.ImproperUniform(constraints.real, (), ()))
        pyro.factor("cost", -x ** 2)
        pyro.factor("guide_density", dist.Normal(theta, 1.0).log_prob(x).detach())


def guide(theta: torch.Tensor) -> None:
    """q_theta(x) = N(theta, 1), one independent copy of theta per repeat."""
    theta = pyro.param("theta", theta)
    with pyro.plate("repeats", theta.shape[0]):
        pyro.sample("x", dist.Normal(theta, 1.0))


def _check(estimator: str, num_samples: int, num_repeats: int) -> None:
    if estimator not in TOY_ESTIMATORS:
        raise PyroVAEError(f"unknown toy estimator {estimator!r}; choose {' or '.join(TOY_ESTIMATORS)}")
    check_positive(num_samples, "the number of samples N")
    check_positive(num_repeats, "the number of repeats R")


def gradient_estimates(theta: float, estimator: str, num_samples: int, num_repeats: int) -> torch.Tensor:
    """``num_repeats`` independent estimates of d/dtheta E_q[x^2], each the average over ``num_samples``
    samples, from Pyro's ELBO: a float64 tensor of shape (num_repeats,)."""
    _check(estimator, num_samples, num_repeats)
    chunk = max(1, MAX_ELEMENTS // num_samples)
    estimates = []
    for start in range(0, num_repeats, chunk):
        values = torch.full((min(chunk, num_repeats - start),), float(theta), dtype=torch.float64)
        with pyro.get_param_store().scope():
            pyro.param("theta", values.clone())
            bound = Estimator(estimator, model, guide, (values,), num_particles=num_samples,
                              vectorize_particles=True, max_plate_nesting=1)
            bound.elbo.loss_and_grads(bound.model, bound.guide, values)
            estimates.append(pyro.param("theta").grad.detach().clone())
    return torch.cat(estimates)


def analytic_variance(estimator: str, theta: float, num_samples: int = 1) -> float:
    """Variance of the ``num_samples``-sample average of each estimator."""
    _check(estimator, num_samples, 1)
    per_sample = theta ** 4 + 14 * theta ** 2 + 15 if estimator == "score" else 4.0
    return per_sample / num_samples


def toy_table(theta: float = 2.0, num_repeats: int = 1000, sample_sizes: Sequence[int] = SAMPLE_SIZES, *,
              progress: Optional[Callable[[Iterable], Iterable]] = None) -> list[dict]:
    """One row per N: mean and variance over ``num_repeats`` estimates of each estimator, the analytic
    variances, and the ratio score / reparameterization (measured and analytic).

    ``progress`` may wrap the loop over (N, estimator) pairs, e.g. ``tqdm``.
    """
    rows = {n: {"num_samples": n, "true_gradient": 2 * theta} for n in sample_sizes}
    jobs = [(n, name) for n in sample_sizes for name in TOY_ESTIMATORS]
    for n, name in (progress or iter)(jobs):
        estimates = gradient_estimates(theta, name, n, num_repeats)
        rows[n].update({f"{name}_mean": estimates.mean().item(), f"{name}_variance": estimates.var().item(),
                        f"{name}_variance_analytic": analytic_variance(name, theta, n)})
    for row in rows.values():
        row["variance_ratio"] = row["score_variance"] / row["reparam_variance"]
        row["variance_ratio_analytic"] = row["score_variance_analytic"] / row["reparam_variance_analytic"]
    return list(rows.values())
