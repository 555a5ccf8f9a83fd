"""The textbook case for the reparameterization trick, run through Pyro's own ELBO machinery.

    q_theta(x) = N(theta, 1),   minimise  E_q[x^2],   whose gradient is 2 theta.

Two unbiased estimators of that gradient from x = theta + eps, eps ~ N(0, 1):

    score function     x^2 (x - theta)      variance (theta^4 + 14 theta^2 + 15) / N
    reparameterization 2 (theta + eps)      variance 4 / N

for the average of N samples. Here they are not written by hand: ``Trace_ELBO`` differentiates through the
reparameterized sample, and ``TraceGraph_ELBO`` gives the score function once the site is made
non-reparameterized (the ``score`` estimator of :mod:`pyro_vae.studies.estimators`).

The model makes the ELBO exactly -E_q[x^2]: x is flat, the cost enters as a factor, and a second factor
adds back log q(x) with gradients stopped. So log p(x) - log q(x) = -x^2 at every sample, and neither
estimator sees an entropy term: with it, the score function would carry (x - theta) log q(x), zero in
expectation but not per sample. Per sample the two estimates are exactly the formulas above.

R repeated N-sample estimates are one vectorized pass: theta is a vector of R copies inside a plate, each
copy gets its own gradient, and Pyro's ``vectorize_particles`` draws the N samples of every copy at once.
"""
from __future__ import annotations

import ctypes
import math
import os
from typing import Callable, Iterable, Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from pyro_vae.catalog import TOY_SAMPLE_SIZES
from pyro_vae.errors import PyroVAEError
from pyro_vae.studies.estimators import Estimator, check_positive

TOY_ESTIMATORS = ("score", "reparam")
SAMPLE_SIZES = TOY_SAMPLE_SIZES
#: samples x repeats per vectorized pass (float64): the process stays under 2 GB
MAX_ELEMENTS = 2 ** 21
#: the resident memory (MB) above which freed heap memory is handed back after a pass (see release_freed_memory)
TRIM_ABOVE_MB = 1536


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


#: the largest |theta| of the toy: float64 spacing there (1.2e-10) still resolves x ~ N(theta, 1) finely
MAX_THETA = 1e6


def check_toy_table(theta: float, num_repeats: int, sample_sizes: Sequence[int]) -> None:
    """One sentence for settings that cannot give a table: a theta that is not a finite number, fewer than two
    repeats (a variance needs two estimates), no sample size or one that is not a positive whole number."""
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta):
        raise PyroVAEError(f"--theta, the location of q, must be a finite number, got {theta}")
    if abs(theta) > MAX_THETA:
        raise PyroVAEError(f"--theta must lie within +-{MAX_THETA:g}, got {theta:g}: further out, float64 numbers are "
                           f"{math.ulp(float(theta)):.3g} apart, too coarse for the unit-variance noise of x ~ N(theta, "
                           "1), and the estimates' variances come out wrong or zero")
    check_positive(num_repeats, "--repeats")
    if num_repeats < 2:
        raise PyroVAEError(f"--repeats must be at least 2: a variance needs two estimates, got {num_repeats}")
    if not sample_sizes:
        raise PyroVAEError("give at least one sample size N (--sample-sizes)")
    for n in sample_sizes:
        check_positive(n, "every sample size N")


#: samples of x per second, both estimators together, measured on one core of the 2-core CPU sandbox under
#: load (R = 2000, N = 100,000: 4e8 samples in 52 s); for the up-front estimate of how long a table takes
SAMPLES_PER_SECOND = 7e6


def estimated_seconds(num_repeats: int, sample_sizes: Sequence[int]) -> float:
    """About how long :func:`toy_table` takes here: R x sum(N) samples for each of the two estimators."""
    return len(TOY_ESTIMATORS) * num_repeats * sum(sample_sizes) / SAMPLES_PER_SECOND


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
        release_freed_memory()
    return torch.cat(estimates)


def release_freed_memory() -> None:
    """Give heap memory freed by the passes so far back to the operating system once the process holds more
    than TRIM_ABOVE_MB.

    Every pass allocates and frees tensors of MAX_ELEMENTS float64 numbers (16 MB each, dozens of them in
    Pyro's traces and the backward pass); glibc keeps such freed blocks in the heap, fragmented, and the
    process grew by about 0.35 MB per repeat at N = 100,000 (24 GB and the kernel's OOM killer for
    ``--repeats 100000 --sample-sizes 100000``), with no tensor alive. ``malloc_trim(0)`` returns them. It
    is not called after every pass because the next pass then faults its pages back in (twice the time);
    above the threshold it is, so the resident memory stays under about TRIM_ABOVE_MB plus one pass,
    whatever R and N are. Elsewhere than glibc on Linux, nothing to do.
    """
    if _LIBC is not None and resident_mb() > TRIM_ABOVE_MB:
        _LIBC.malloc_trim(0)


def resident_mb() -> float:
    """This process's resident memory in MB (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (OSError, ValueError, IndexError):
        return 0.0


def _glibc():
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _glibc()


def analytic_variance(estimator: str, theta: float, num_samples: int = 1) -> float:
    """Variance of the ``num_samples``-sample average of each estimator."""
    _check(estimator, num_samples, 1)
    per_sample = theta ** 4 + 14 * theta ** 2 + 15 if estimator == "score" else 4.0
    return per_sample / num_samples


def toy_table(theta: float = 2.0, num_repeats: int = 1000, sample_sizes: Sequence[int] = SAMPLE_SIZES, *,
              progress: Optional[Callable[[Iterable], Iterable]] = None) -> list[dict]:
    """One row per N: mean and variance over ``num_repeats`` estimates of each estimator, the analytic
    variances, and the ratio score / reparameterization (measured and analytic).

    ``progress`` may wrap the loop over (N, estimator) pairs, e.g. ``tqdm``. Memory stays bounded whatever
    R and N are (passes of at most MAX_ELEMENTS samples; see :func:`release_freed_memory`).
    """
    check_toy_table(theta, num_repeats, sample_sizes)
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
