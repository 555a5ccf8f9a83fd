"""Importance weights of a model/guide pair, the one place both the IWAE objective (:mod:`~pyro_vae.inference.iwae`)
and the importance-sampled log-likelihood (:mod:`pyro_vae.evaluation`) take them from: log p(x, z) - log q(z | x)
per particle and data point, with enumerated sites summed inside each weight."""
from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import pyro
import torch
from pyro import poutine
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.util import site_is_subsample
from torch.distributions import Bernoulli, Distribution, Independent
from torch.distributions.utils import _sum_rightmost, broadcast_all
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.errors import PyroVAEError
from pyro_vae.scaling import is_penalty, measuring
from pyro_vae.inference.sites import DATA_PLATE, disagreement, latent_sites, site_mismatch


def site_log_prob(fn: Distribution, value: torch.Tensor) -> torch.Tensor:
    """``fn.log_prob(value)``, bit for bit, with one full-size tensor fewer for a Bernoulli given by logits
    with its pixels as event dimensions (the decoders here): torch's ``Bernoulli.log_prob`` negates the
    elementwise binary cross-entropy, which ``Independent`` then sums; here the sum comes first and the
    negation after it. Negation commutes exactly with the rounding of the sum, so the values and the
    gradients are the same, and a step saves a pass over, and an allocation of, the (particles, batch,
    pixels) tensor, forward and backward: 5 to 6 % of an IWAE training step at K = 50, 1 % at K = 5
    (benchmarks/svi_vs_pytorch.py). Validation, when on, checks the value as ``Bernoulli.log_prob`` does.
    """
    base = getattr(fn, "base_dist", None)
    if (isinstance(base, Bernoulli) and type(base).log_prob is Bernoulli.log_prob and "logits" in vars(base)
            and isinstance(fn, Independent) and type(fn).log_prob is Independent.log_prob):
        if base._validate_args:
            base._validate_sample(value)
        logits, value = broadcast_all(base.logits, value)
        cross_entropy = binary_cross_entropy_with_logits(logits, value, reduction="none")
        return -_sum_rightmost(cross_entropy, fn.reinterpreted_batch_ndims)
    return fn.log_prob(value)


def max_plate_nesting(model: Callable, guide: Callable, args: tuple) -> int:
    return latent_sites(model, guide, args).max_plate_nesting


def per_datapoint_log_prob(site: dict, name: str, particle_dim: int, scaled: bool = False) -> torch.Tensor:
    """A site's log-density summed over every dimension but the enumeration, particle and data-plate ones:
    shape (..., particles, batch), enumeration dimensions on the left."""
    frames = {frame.name: frame.dim for frame in site["cond_indep_stack"]}
    if DATA_PLATE not in frames:
        raise PyroVAEError(f"site {name!r} is outside the {DATA_PLATE!r} plate; importance sampling per "
                           f"data point needs every sample site inside pyro.plate({DATA_PLATE!r}, batch_size)")
    # Unscaled unless asked: a beta or annealing factor changes the objective, not the generative model's p(x).
    log_prob = site_log_prob(site["fn"], site["value"])
    if scaled and not (isinstance(site["scale"], (int, float)) and site["scale"] == 1.0):
        log_prob = site["scale"] * log_prob
    log_prob = log_prob.reshape((1,) * max(0, -particle_dim - log_prob.dim()) + log_prob.shape)
    first_plate = log_prob.dim() + particle_dim + 1  # dims from here on are plates (and the data plate)
    data = log_prob.dim() + frames[DATA_PLATE]
    others = [d for d in range(first_plate, log_prob.dim()) if d != data]
    if others:
        log_prob = log_prob.sum(others, keepdim=True)
    return log_prob.reshape(log_prob.shape[:first_plate] + log_prob.shape[data:data + 1])


def summed_out_log_likelihood(model: Callable, batch: tuple, max_plate_nesting: int) -> torch.Tensor:
    """log p(x) of each data point, (batch,), for a model whose latent sites are all enumerated (a guide without
    latent sites, such as the hidden Markov model's): the model's factors contracted by variable elimination
    (Pyro's ``contract_to_tensor``, what ``TraceEnum_ELBO`` sums with), down to the data plate. Unlike summing
    every term over a joint table of the enumerated values, this follows ``pyro.markov``, whose sites reuse
    enumeration dimensions: it costs O(T K^2) for a chain of T states with K values."""
    enumerated = poutine.enum(model, first_available_dim=-1 - max_plate_nesting)
    trace = poutine.trace(enumerated).get_trace(*batch)
    trace.compute_log_prob()
    trace.pack_tensors()
    factors, sum_dims, data = OrderedDict(), set(), None
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        factors.setdefault(ordinal, []).append(site["packed"]["log_prob"])
        if site["infer"].get("_enumerate_dim") is not None:
            sum_dims |= set(site["packed"]["log_prob"]._pyro_dims)
        data = data or next((trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"]
                             if f.name == DATA_PLATE), None)
    sum_dims -= set(trace.plate_to_symbol.values())  # the plates' dimensions are products, not sums
    if data is None:
        raise PyroVAEError(f"the model has no {DATA_PLATE!r} plate; per data point likelihoods need every sample site "
                           f"inside pyro.plate({DATA_PLATE!r}, batch_size)")
    return contract_to_tensor(factors, sum_dims, target_ordinal=frozenset({data})).reshape(batch[0].shape[0])


def log_weights(model: Callable, guide: Callable, batch: tuple, num_particles: int, particle_dim: int, *,
                scaled: bool = False, penalties: Optional[list] = None) -> torch.Tensor:
    """log p(x, z) - log q(z | x) for ``num_particles`` draws per data point, (enumerated values, particles,
    batch): summed over the enumerated values, the weights of :func:`log_likelihood_iwae`. Differentiable
    (the IWAE training objective, ``inference.iwae``, is built on it); with ``scaled`` each site's log-density
    is multiplied by its Pyro scale (a beta-VAE's beta), as the training objectives do. Training penalties
    (:func:`~pyro_vae.scaling.penalty`) are no part of p(x, z): left out, or, given a ``penalties``
    list, appended to it as (particles, batch) terms, for an objective that adds them outside the weights."""
    terms, _, _ = _weight_terms(model, guide, batch, num_particles, particle_dim, scaled, penalties, False)
    signed = [sign * term for sign, term in terms]
    return _per_particle(sum(signed[1:], signed[0]), num_particles, batch)


@dataclass
class WeightParts:
    """The two halves of the log importance weights, each (enumerated values, particles, batch), and the guide's
    trace they were drawn in (its latent values are the z of every weight)."""

    log_p: torch.Tensor
    log_q: torch.Tensor
    guide_trace: object
    model_trace: object


def detached(fn: Distribution) -> Distribution:
    """A shallow copy of ``fn`` whose parameter tensors are cut from the graph: its log-density is still a function
    of the value, with the distribution's parameters held fixed (the stop-gradient of "sticking the landing")."""
    fn = copy.copy(fn)
    for key, value in list(vars(fn).items()):
        if isinstance(value, torch.Tensor):
            setattr(fn, key, value.detach())
        elif isinstance(value, Distribution):
            setattr(fn, key, detached(value))
    return fn


def weight_parts(model: Callable, guide: Callable, batch: tuple, num_particles: int, particle_dim: int, *,
                 scaled: bool = False, penalties: Optional[list] = None, detach_guide: bool = False,
                 detach_draws: bool = False) -> WeightParts:
    """log p(x, z) and log q(z | x) of :func:`log_weights` apart; with ``detach_guide`` the guide's densities
    are evaluated with their parameters held fixed (:func:`detached`), so that a gradient reaches the guide only
    through the reparameterized draws z (sticking the landing, DReG); with ``detach_draws`` the draws z are cut
    from the graph before the model sees them (wake-sleep: no gradient flows through z)."""
    terms, guide_trace, model_trace = _weight_terms(model, guide, batch, num_particles, particle_dim, scaled,
                                                    penalties, detach_guide, detach_draws)
    log_p = sum(term for sign, term in terms if sign > 0)
    log_q = sum((term for sign, term in terms if sign < 0), torch.zeros(()))
    shape = torch.broadcast_shapes(log_p.shape, log_q.shape)
    return WeightParts(_per_particle(log_p.expand(shape), num_particles, batch),
                       _per_particle(log_q.expand(shape), num_particles, batch), guide_trace, model_trace)


def _per_particle(total: torch.Tensor, num_particles: int, batch: tuple) -> torch.Tensor:
    total = total.expand(total.shape[:-2] + (num_particles, batch[0].shape[0]))
    return total.reshape((-1,) + total.shape[-2:])


def _weight_terms(model: Callable, guide: Callable, batch: tuple, num_particles: int, particle_dim: int,
                  scaled: bool, penalties: Optional[list], detach_guide: bool,
                  detach_draws: bool = False) -> tuple[list, object, object]:
    """(+1, log p term) and (-1, log q term) per site, in the order of the model's then the guide's sites."""
    guide = EnumMessenger(first_available_dim=particle_dim - 1)(guide)
    model = EnumMessenger()(model)  # model-only enumerated sites take the dimensions left of the guide's
    with pyro.plate("importance_samples", num_particles, dim=particle_dim), \
            (measuring() if penalties is None else contextlib.nullcontext()):
        guide_trace = poutine.trace(guide).get_trace(*batch)
        if detach_draws:
            for site in guide_trace.nodes.values():
                if site["type"] == "sample" and not site["is_observed"] and isinstance(site["value"], torch.Tensor):
                    site["value"] = site["value"].detach()
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    mismatch = site_mismatch(model_trace, guide_trace)
    if mismatch is not None:  # every call checked: programs can change between two passes over the data
        raise PyroVAEError(disagreement(batch[0].shape[0], mismatch))
    terms = []
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if is_penalty(site):  # a training term (beta-TCVAE's total correlation) is no part of p(x, z)
                if penalties is not None:
                    penalty = per_datapoint_log_prob(site, name, particle_dim, scaled)
                    penalties.append(penalty.expand(penalty.shape[:-2] + (num_particles, batch[0].shape[0])))
                continue
            enumerated = site["infer"].get("_enumerate_dim") is not None
            if enumerated:
                outer = [f.name for f in site["cond_indep_stack"] if f.name not in (DATA_PLATE, "importance_samples")]
                if outer:
                    raise PyroVAEError(f"the enumerated site {name!r} is also inside plate {outer[0]!r}; importance "
                                       f"sampling sums enumerated sites exactly only directly inside the "
                                       f"{DATA_PLATE!r} plate")
            if sign < 0 and enumerated:
                # q(c | x) of an enumerated guide site cancels: sum_c q(c) p(x, z, c) / (q(c) q(z | c))
                continue
            if sign < 0 and detach_guide:
                site = {**site, "fn": detached(site["fn"])}
            terms.append((sign, per_datapoint_log_prob(site, name, particle_dim, scaled)))
    return terms, guide_trace, model_trace
