"""Which objective applies to which latent sites: an ELBO refused in one sentence where it cannot handle a
structure's sites (a discrete site for a pathwise objective, a flow guide for the sticking-the-landing ones, a
penalty beside importance weights), and the warning where it would fall back to the plain score function."""
from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution, Independent, TransformedDistribution

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.sites import LatentSites, describe_sites


#: the objectives that need every latent site of the guide reparameterized or summed out (IWAE-like weights)
PATHWISE_WEIGHTED = ("iwae", "miwae", "piwae", "ciwae", "renyi", "tmc")
#: the objectives that differentiate through the draws with q's parameters held fixed
STICKING = ("stl", "dreg")
#: the objectives with no place for a training penalty (beta-TCVAE's, FactorVAE's) beside their weights
NO_PENALTIES = ("dreg", "miwae", "piwae", "ciwae", "rws", "vimco", "renyi", "tmc")
#: the objectives that weigh K >= 2 draws against each other
TWO_OR_MORE = ("rws", "vimco")


def _distribution_tensors(fn) -> list:
    found = []
    for value in vars(fn).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, Distribution):
            found += _distribution_tensors(value)
    return found


@contextlib.contextmanager
def _quietly(args: tuple):
    """A probe run of a program: hidden from enclosing handlers, the random state (CPU, and the batch's GPU)
    restored afterwards."""
    devices = [args[0].device] if isinstance(args[0], torch.Tensor) and args[0].is_cuda else []
    with poutine.block(), torch.random.fork_rng(devices=devices):
        yield


def dependent_guide_site(guide: Callable, args: tuple) -> Optional[tuple[str, str]]:
    """(site, earlier site) where the parameters of a guide site's distribution depend on an earlier latent draw
    (a hierarchical guide q(z2 | x, z1)), found by autograd on one traced run; None when every site's q depends on
    x alone. The random state is restored."""
    with _quietly(args), torch.enable_grad():
        trace = poutine.trace(guide).get_trace(*args)
        earlier = []
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            tensors = [t for t in _distribution_tensors(site["fn"]) if t.requires_grad]
            if tensors and earlier:
                total = sum(t.sum() for t in tensors)
                grads = torch.autograd.grad(total, [value for _, value in earlier], allow_unused=True,
                                            retain_graph=True)
                for (source, _), grad in zip(earlier, grads):
                    if grad is not None:
                        return name, source
            if isinstance(site["value"], torch.Tensor) and site["value"].requires_grad:
                earlier.append((name, site["value"]))
    return None


def flow_guide_site(guide: Callable, args: tuple) -> Optional[str]:
    """The first guide site whose q is a transformed distribution (a normalizing flow), else None. The random
    state is restored."""
    with _quietly(args), torch.no_grad():
        trace = poutine.trace(guide).get_trace(*args)
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site):
            fn = site["fn"]
            while isinstance(fn, Independent):
                fn = fn.base_dist
            if isinstance(fn, TransformedDistribution) and fn.transforms:
                return name
    return None


def check_elbo_applies(elbo: str, sites: LatentSites, baseline: str = "none", *, num_particles: int = 1,
                       guide: Optional[Callable] = None, batch: Optional[tuple] = None) -> Optional[str]:
    """Refuse an ELBO that cannot handle the sites (a ``PyroVAEError``); return a one-line warning when it
    would estimate a discrete site's gradient with the plain score function, else None. ``guide`` and ``batch``
    let the sticking-the-landing objectives check that each guide site depends on x alone."""
    non_reparameterized = sites.discrete
    if elbo == "meanfield" and non_reparameterized:
        raise PyroVAEError(f"--elbo meanfield needs every latent site reparameterized, but "
                           f"{describe_sites(non_reparameterized, sites)} is not; use --elbo enum or --elbo tracegraph")
    if elbo in PATHWISE_WEIGHTED and sites.score_function:
        raise PyroVAEError(f"--elbo {elbo} needs every latent reparameterized or summed out, but "
                           f"{describe_sites(sites.score_function, sites)} is sampled without a reparameterization; "
                           "mark it infer={'enumerate': 'parallel'}, or use --elbo enum, tracegraph, rws or vimco")
    guide_discrete = [name for name in non_reparameterized if name in sites.in_guide]
    if elbo in STICKING and guide_discrete:
        raise PyroVAEError(f"--elbo {elbo} differentiates through the guide's draws, and {describe_sites(guide_discrete, sites)} "
                           "is discrete, without such a path; use --elbo rws, vimco, tracegraph or enum (iwae, where "
                           "it is marked for enumeration)")
    if elbo == "renyi" and sites.enumerated:
        raise PyroVAEError(f"--elbo renyi is Pyro's RenyiELBO, which samples every site and cannot sum out "
                           f"{describe_sites(sites.enumerated, sites)}; use --elbo iwae (the Renyi bound at alpha 0), "
                           "which sums it inside each weight")
    if elbo == "tmc" and non_reparameterized:
        raise PyroVAEError(f"--elbo tmc draws K values of every reparameterized guide site, and "
                           f"{describe_sites(non_reparameterized, sites)} is discrete; use --elbo iwae, which sums "
                           "enumerated sites inside each weight")
    if elbo == "vimco" and sites.reparameterized:
        raise PyroVAEError(f"--elbo vimco is a score-function estimator for discrete latents, and "
                           f"{describe_sites(sites.reparameterized, sites)} is continuous; use --elbo iwae or dreg for "
                           "continuous sites, rws for a mixture of both")
    if elbo in TWO_OR_MORE and num_particles < 2:
        raise PyroVAEError(f"--elbo {elbo} weighs K draws per image against each other and needs "
                           f"--num-particles 2 or more, got {num_particles}")
    if elbo in NO_PENALTIES and sites.penalties:
        raise PyroVAEError(f"--elbo {elbo} has no place for the training penalty {sites.penalties[0]!r} of this "
                           "structure (its importance weights are of p(x, z) alone); use --elbo trace, stl or iwae")
    if elbo in STICKING and guide is not None and batch is not None:
        flow = flow_guide_site(guide, batch)
        if flow is not None:
            raise PyroVAEError(f"--elbo {elbo} holds q's parameters fixed by cutting them from the graph, and the "
                               f"guide's {flow!r} is a flow whose steps keep their parameters inside Pyro's "
                               "transforms, where they cannot be cut; use --elbo trace or iwae")
        dependent = dependent_guide_site(guide, batch)
        if dependent is not None:
            raise PyroVAEError(f"--elbo {elbo} holds q's parameters fixed site by site, which is exact only when each "
                               f"guide site depends on x alone, and the guide's {dependent[0]!r} takes its parameters "
                               f"from the draw of {dependent[1]!r}; use --elbo trace or iwae")
    if baseline != "none" and elbo != "tracegraph":
        raise PyroVAEError(f"--baseline {baseline} is for --elbo tracegraph, whose score-function gradients it "
                           f"reduces; --elbo {elbo} has no baselines")
    if elbo == "trace":
        plain = [name for name in non_reparameterized if name in sites.enumerated or name in sites.score_function]
    elif elbo == "enum":
        plain = sites.score_function
    elif elbo == "tracegraph" and baseline == "none":
        plain = non_reparameterized
    else:
        plain = []
    if not plain:
        return None
    return (f"note: {describe_sites(plain, sites)} cannot be reparameterized, so {elbo} estimates its gradient with "
            "the plain score function (no baseline, high variance); mark it infer={'enumerate': 'parallel'} "
            "and use --elbo enum to sum it out exactly, or --elbo tracegraph --baseline average (or neural)")
