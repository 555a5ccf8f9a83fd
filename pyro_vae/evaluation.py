"""Measures of a trained model/guide pair, generic over any latent structure.

Nothing here knows which model it runs: the ELBO comes from Pyro's ELBO classes, and the importance-
sampled log-likelihood from tracing the guide and replaying the model under a particle plate.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Iterable, Optional

import torch
import pyro
from pyro import poutine
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.util import site_is_subsample

from pyro_vae.data import Split, iterate_batches
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference import make_elbo
from pyro_vae.inference.scaling import unscaled
from pyro_vae.inference.sites import latent_sites

DATA_PLATE = "data"


@torch.no_grad()
def elbo_per_datapoint(model: Callable, guide: Callable, batches: Iterable[tuple], *, num_particles: int = 1,
                       elbo: Optional[str] = None, plate_nesting: Optional[int] = None) -> float:
    """The average ELBO (nats per data point) over ``batches`` of ``(x, *conditioning)``.

    ``elbo`` None: ``TraceEnum_ELBO`` where sites are marked for enumeration (their sums are then exact,
    not sampled), else ``Trace_ELBO``. Scales (a beta, a warm-up factor) are undone: this is the ELBO of
    the generative model itself.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return math.nan
    if elbo is None or (elbo == "enum" and plate_nesting is None):
        sites = latent_sites(model, guide, first)
        elbo = elbo or ("enum" if sites.enumerated else "trace")
        plate_nesting = sites.max_plate_nesting if plate_nesting is None else plate_nesting
    objective = make_elbo(elbo, num_particles=num_particles, max_plate_nesting=plate_nesting)
    total, count = 0.0, 0
    for batch in itertools.chain([first], batches):
        with unscaled():
            total -= objective.loss(model, guide, *batch)
        count += batch[0].shape[0]
    return total / count


def max_plate_nesting(model: Callable, guide: Callable, args: tuple) -> int:
    return latent_sites(model, guide, args).max_plate_nesting


def _per_datapoint_log_prob(site: dict, name: str, particle_dim: int) -> torch.Tensor:
    """A site's log-density summed over every dimension but the enumeration, particle and data-plate ones:
    shape (..., particles, batch), enumeration dimensions on the left."""
    frames = {frame.name: frame.dim for frame in site["cond_indep_stack"]}
    if DATA_PLATE not in frames:
        raise PyroVAEError(f"site {name!r} is outside the {DATA_PLATE!r} plate; importance sampling per "
                           f"data point needs every sample site inside pyro.plate({DATA_PLATE!r}, batch_size)")
    # Unscaled: a beta or annealing factor changes the objective, not the generative model's p(x).
    log_prob = site["fn"].log_prob(site["value"])
    log_prob = log_prob.reshape((1,) * max(0, -particle_dim - log_prob.dim()) + log_prob.shape)
    first_plate = log_prob.dim() + particle_dim + 1  # dims from here on are plates (and the data plate)
    data = log_prob.dim() + frames[DATA_PLATE]
    others = [d for d in range(first_plate, log_prob.dim()) if d != data]
    if others:
        log_prob = log_prob.sum(others, keepdim=True)
    return log_prob.reshape(log_prob.shape[:first_plate] + log_prob.shape[data:data + 1])


def _log_weights(model: Callable, guide: Callable, batch: tuple, num_particles: int, particle_dim: int) -> torch.Tensor:
    """log p(x, z) - log q(z | x) for ``num_particles`` draws per data point, (enumerated values, particles,
    batch): summed over the enumerated values, the weights of :func:`log_likelihood_iwae`."""
    guide = EnumMessenger(first_available_dim=particle_dim - 1)(guide)
    model = EnumMessenger()(model)  # model-only enumerated sites take the dimensions left of the guide's
    with pyro.plate("importance_samples", num_particles, dim=particle_dim):
        guide_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    terms = []
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
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
            terms.append(sign * _per_datapoint_log_prob(site, name, particle_dim))
    total = sum(terms[1:], terms[0])
    total = total.expand(total.shape[:-2] + (num_particles, batch[0].shape[0]))
    return total.reshape((-1,) + total.shape[-2:])


@torch.no_grad()
def log_likelihood_iwae(model: Callable, guide: Callable, batch: tuple, *, num_samples: int = 5000,
                        max_rows: int = 5_000) -> torch.Tensor:
    """Importance-sampled estimate of log p(x) for each data point of one batch ``(x, *conditioning)``.

        log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x)

    Discrete sites that the guide marks for enumeration (``infer={"enumerate": "parallel"}``) are summed
    exactly inside each weight: with c enumerated and z sampled given c,

        p(x) = sum_c E_{z ~ q(z | x, c)} [ p(x, z, c) / q(z | x, c) ],

    so q(c | x) cancels and a structure with only enumerated latents (a mixture) gets log p(x) exactly.
    Sites that only the model marks for enumeration are summed inside p(x, z) likewise.

    The K samples are drawn in vectorized chunks of at most ``max_rows`` (particles x batch x enumerated
    values) rows, so memory stays bounded whatever K is (5,000 rows ran twice as fast as 50,000 on a 2-core
    CPU: the chunk's activations stay in cache). It is the IWAE bound of Burda et al. (2016): a lower bound
    on log p(x) in expectation that rises to it as K grows. Returns a tensor of shape (batch_size,).
    """
    if num_samples < 1:
        raise PyroVAEError(f"the number of importance samples must be positive, got {num_samples}")
    batch_size = batch[0].shape[0]
    sites = latent_sites(model, guide, batch)
    particle_dim = -sites.max_plate_nesting - 1
    if sites.distributions and not (sites.reparameterized or sites.score_function):
        # every latent is summed out: one "sample" is the exact log p(x)
        return _log_weights(model, guide, batch, 1, particle_dim).logsumexp(0)[0]
    chunk = max(1, min(num_samples, max_rows // (batch_size * sites.enumerated_values)))
    log_sum = torch.full((batch_size,), -math.inf, dtype=torch.float64, device=batch[0].device)
    done = 0
    while done < num_samples:
        size = min(chunk, num_samples - done)
        log_sum = torch.logaddexp(log_sum, _log_weights(model, guide, batch, size, particle_dim).double().logsumexp(0).logsumexp(0))
        done += size
    return (log_sum - math.log(num_samples)).to(batch[0].dtype)


def negative_log_likelihood(model: Callable, guide: Callable, batches: Iterable[tuple], *, num_samples: int = 5000,
                            progress: Optional[Callable] = None) -> float:
    """Average -log p(x) in nats per data point, importance-sampled with ``num_samples`` per data point."""
    total, count = 0.0, 0
    for batch in (progress(batches) if progress else batches):
        total -= log_likelihood_iwae(model, guide, batch, num_samples=num_samples).sum().item()
        count += batch[0].shape[0]
    return total / count


def evaluate_model(model, batches: list[tuple], *, num_samples: int = 5000, elbo_particles: int = 1,
                   progress: Optional[Callable] = None) -> dict:
    """Test ELBO and importance-sampled NLL of a latent structure, in nats per image."""
    count = sum(batch[0].shape[0] for batch in batches)
    return {
        "images": count,
        "elbo": elbo_per_datapoint(model.model, model.guide, batches, num_particles=elbo_particles),
        "nll": negative_log_likelihood(model.model, model.guide, batches, num_samples=num_samples,
                                       progress=progress),
        "num_samples": num_samples,
    }


@torch.no_grad()
def classification_accuracy(model, split: Split, batch_size: int = 1000) -> float:
    """The fraction of a labelled split that a structure's ``classify`` gets right."""
    if split.labels is None:
        raise PyroVAEError("classification accuracy needs labelled images, and this split has no labels")
    correct = sum(int((model.classify(x) == y).sum())
                  for x, y in iterate_batches(split, batch_size, with_labels=True))
    return correct / len(split)


@torch.no_grad()
def rate_distortion(model: Callable, guide: Callable, batches: Iterable[tuple]) -> dict:
    """Rate E_q[log q(z | x) - log p(z)] (the KL, nats) and distortion -E_q[log p(x | z)] (nats), per data point.

    Latent sites count towards the rate and observed sites towards the distortion, so rate + distortion
    is -ELBO for any model/guide pair. One sample of z per data point; scales are ignored.
    """
    rate, distortion, count = 0.0, 0.0, 0
    for batch in batches:
        guide_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
        for trace, sign in ((model_trace, -1.0), (guide_trace, 1.0)):
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                log_prob = site["fn"].log_prob(site["value"]).sum().item()
                if site["is_observed"]:
                    distortion -= log_prob
                else:
                    rate += sign * log_prob
        count += batch[0].shape[0]
    return {"rate": rate / count, "distortion": distortion / count}
