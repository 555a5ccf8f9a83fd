"""Posterior-collapse diagnostics of a structure's code (its ``code_site``): the KL of each latent dimension, the
active units, and the mutual information between x and z.

* **KL per dimension**: KL(q(z_i | x) || p(z_i)) averaged over the data, in closed form where q and the prior at
  the code site are both diagonal Gaussians (the VAE's N(mu(x), sigma(x)) against N(0, I), or a learned
  diagonal Gaussian prior); a prior that couples the dimensions (a mixture, a flow) has no per-dimension KL, and
  the result says so. A dimension whose q equals its prior for every x adds exactly 0.
* **Active units** (Burda et al. 2016): dimension i is active when Cov_x(E_q[z_i | x]) > 0.01, the means taken
  by the structure's ``encode`` (so flows count too).
* **Mutual information** I(x; z) = E_x KL(q(z | x) || q(z)) of the aggregate posterior q(z) = mean_x q(z | x)
  (Hoffman & Johnson 2016), estimated as the lagging-encoder paper's code does (He et al. 2019): one draw
  z_n ~ q(z | x_n) per data point and log q(z_n) = logmeanexp_m log q(z_n | x_m) over the same N points. The
  estimate cannot exceed log N; it needs q's density at any z, which flows without a closed-form inverse lack
  (then it is omitted, with the reason).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.errors import PyroVAEError

#: Burda et al.'s threshold on Cov_x(E_q[z_i | x])
ACTIVE_THRESHOLD = 0.01


def check_collapse_applies(model) -> None:
    """One sentence, before any work, for a structure without a code to diagnose: its guide samples no latent site
    of its own (the HMM, whose states the model sums out)."""
    site = model.code_site
    if site is None:
        raise PyroVAEError(f"{type(model).__name__} has no code site in its guide (its latents are summed out in the "
                           "model), so there is no posterior to collapse; --collapse is for structures with a code")


def _diagonal_normal(fn) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(loc, scale) of a diagonal Gaussian over the last dimension (Independent(Normal, 1)), masked or not (a
    sequence structure's steps), else None."""
    if isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    if isinstance(fn, dist.Independent) and fn.reinterpreted_batch_ndims == 1 and isinstance(fn.base_dist, dist.Normal):
        return fn.base_dist.loc, fn.base_dist.scale
    return None


def _site_fns(model, batch: tuple, site: str) -> tuple:
    guide_trace = poutine.trace(model.guide).get_trace(*batch)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(*batch)
    return guide_trace.nodes[site], model_trace.nodes[site]["fn"]


@torch.no_grad()
def collapse_diagnostics(model, batches: list[tuple], *, max_points: int = 2000) -> dict:
    """KL per dimension (where defined), active units, and I(x; z) on up to ``max_points`` data points (0: no
    I(x; z)), for the
    structure's code site. ``batches`` as the evaluation's: tuples whose first element is x."""
    check_collapse_applies(model)
    site = model.code_site
    kl_sum, means, q_parts, draws, count = None, [], [], [], 0
    kl_reason = mi_reason = None
    for batch in batches:
        guide_site, prior = _site_fns(model, batch, site)
        q = guide_site["fn"]
        means.append(model.encode(*batch))
        q_pair, p_pair = _diagonal_normal(q), _diagonal_normal(prior)
        if q_pair is None or p_pair is None:
            kl_reason = (f"the prior of {site!r} is not a diagonal Gaussian, so its KL does not split by dimension"
                         if q_pair is not None else f"q({site} | x) is not a diagonal Gaussian")
        else:
            kl = torch.distributions.kl_divergence(dist.Normal(*q_pair), dist.Normal(*p_pair))
            kl = kl.reshape(-1, kl.shape[-1]).sum(0)
            kl_sum = kl if kl_sum is None else kl_sum + kl
        if count < max_points:
            take = min(batch[0].shape[0], max_points - count)
            draws.append(guide_site["value"][:take])
            q_parts.append((batch, take))
        count += batch[0].shape[0]
    mean_codes = torch.cat(means)
    variance = mean_codes.var(0, unbiased=True) if mean_codes.shape[0] > 1 else torch.zeros(mean_codes.shape[-1])
    active = variance > ACTIVE_THRESHOLD
    result = {"site": site, "dims": int(mean_codes.shape[-1]), "images": count,
              "active_units": int(active.sum()), "active_threshold": ACTIVE_THRESHOLD,
              "mean_variance": [round(float(v), 6) for v in variance]}
    if kl_sum is not None and kl_reason is None:
        per_dim = kl_sum / count
        result["kl_per_dim"] = [float(v) for v in per_dim]
        result["kl"] = float(per_dim.sum())
    else:
        result["kl_per_dim_omitted"] = kl_reason
    if not draws:  # max_points 0: the KL and the active units only
        result["mutual_information_omitted"] = "not asked for (max_points = 0)"
        return result
    z = torch.cat(draws)
    try:
        result["mutual_information"] = _mutual_information(model, q_parts, z)
        result["mutual_information_points"] = int(z.shape[0])
        result["mutual_information_cap"] = math.log(z.shape[0])
    except (NotImplementedError, KeyError, RuntimeError, ValueError) as err:
        mi_reason = f"q({site} | x) has no density at codes it did not draw ({type(err).__name__})"
        result["mutual_information_omitted"] = mi_reason
    return result


def _mutual_information(model, q_parts: list, z: torch.Tensor) -> float:
    """E_n[log q(z_n | x_n) - log mean_m q(z_n | x_m)] over the N draws z (one per point, in order)."""
    n = z.shape[0]
    columns, own, start = [], [], 0
    for batch, take in q_parts:
        trimmed = tuple(part[:take] if isinstance(part, torch.Tensor) else part for part in batch)
        q = poutine.trace(model.guide).get_trace(*trimmed).nodes[model.code_site]["fn"]  # batch shape (take,)
        columns.append(q.log_prob(z.unsqueeze(1)))  # (N, take): log q(z_n | x_m)
        own.append(q.log_prob(z[start:start + take]))
        start += take
    log_q = torch.cat(columns, 1)
    aggregate = torch.logsumexp(log_q, 1) - math.log(n)
    return float((torch.cat(own) - aggregate).mean())

