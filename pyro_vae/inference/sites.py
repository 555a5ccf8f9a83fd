"""What kinds of latent sites a model/guide pair has (:func:`latent_sites`), and the check at the door that a
structure's two programs agree (:func:`check_programs`). Which ELBO applies to which sites is in
:mod:`pyro_vae.inference.applicability`; the score function's baselines in :mod:`pyro_vae.inference.baselines`."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution

from pyro_vae.catalog import is_file_spec
from pyro_vae.errors import PyroVAEError, first_line, user_line
from pyro_vae.likelihoods import DiscretizedLogistic
from pyro_vae.models.base import observed_step_sites
from pyro_vae.scaling import is_penalty


def without_rsample(fn: Distribution) -> Distribution:
    """A shallow copy of ``fn`` that samples without a pathwise gradient.

    Wrappers (``Independent``, ``ExpandedDistribution``, masked and transformed distributions) read
    ``has_rsample`` from their ``base_dist``, so the flag is set on a copy of the innermost distribution.
    """
    fn = copy.copy(fn)
    if isinstance(getattr(type(fn), "has_rsample", None), property) and hasattr(fn, "base_dist"):
        fn.base_dist = without_rsample(fn.base_dist)
    else:
        fn.has_rsample_(False)
    return fn


def is_enumerated(site: dict) -> bool:
    return site["infer"].get("enumerate") in ("parallel", "sequential")


@dataclass
class LatentSites:
    """The latent sample sites of a model/guide pair, by how an ELBO can differentiate them."""

    #: guide sites with a pathwise (reparameterized) gradient, such as Normal
    reparameterized: list = field(default_factory=list)
    #: sites marked ``infer={"enumerate": ...}``, in the guide or only in the model
    enumerated: list = field(default_factory=list)
    #: guide sites with neither: only a score-function gradient reaches their parameters
    score_function: list = field(default_factory=list)
    #: site name -> its distribution's class name, for messages
    distributions: dict = field(default_factory=dict)
    #: how many plates nest at most (what enumeration and vectorized particles must stay left of)
    max_plate_nesting: int = 0
    #: how many joint values the enumerated sites take (the product of their support sizes)
    enumerated_values: int = 1
    #: whether the programs weigh their terms (a scaled site such as beta-VAE's KL, or a training penalty), so that
    #: the loss SVI minimises is not the -ELBO
    weighted: bool = False
    #: where the model and guide disagree on their latent sites on this batch ("its guide samples 'w', which its
    #: model lacks"), or None: such a pair's ELBO is no bound on log p(x)
    mismatch: Optional[str] = None
    #: training penalties in the programs (beta-TCVAE's total correlation, see ``scaling.penalty``)
    penalties: list = field(default_factory=list)
    #: the latent sites the guide samples or enumerates (the others are the model's own, summed out)
    in_guide: list = field(default_factory=list)

    @property
    def discrete(self) -> list:
        return [name for name in self.distributions if name not in self.reparameterized]


def latent_sites(model: Callable, guide: Callable, args: tuple) -> LatentSites:
    """Trace the guide, and the model against it, once (no gradients) and sort their latent sites.

    The random state is saved and restored around the traces, so looking changes no later draw.
    """
    devices = [args[0].device] if isinstance(args[0], torch.Tensor) and args[0].is_cuda else []
    with torch.no_grad(), poutine.block(), torch.random.fork_rng(devices=devices):
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    sites = LatentSites()
    sites.max_plate_nesting = max((-frame.dim for trace in (guide_trace, model_trace) for site in trace.nodes.values()
                                   if site["type"] == "sample" for frame in site["cond_indep_stack"] if frame.vectorized),
                                  default=0)
    sites.weighted = any(is_penalty(site) or not (isinstance(site["scale"], (int, float)) and site["scale"] == 1.0)
                         for trace in (guide_trace, model_trace) for site in trace.nodes.values()
                         if site["type"] == "sample" and not site_is_subsample(site))
    sites.mismatch = site_mismatch(model_trace, guide_trace)
    sites.penalties = [name for trace in (guide_trace, model_trace) for name, site in trace.nodes.items()
                       if site["type"] == "sample" and is_penalty(site)]
    for trace, in_guide in ((guide_trace, True), (model_trace, False)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
                continue
            if not in_guide and name in guide_trace.nodes:
                continue
            sites.distributions[name] = type(site["fn"]).__name__
            if in_guide:
                sites.in_guide.append(name)
            if is_enumerated(site):
                sites.enumerated.append(name)
                sites.enumerated_values *= site["fn"].enumerate_support(expand=False).shape[0]
            elif in_guide and getattr(site["fn"], "has_rsample", False):
                sites.reparameterized.append(name)
            elif in_guide:
                sites.score_function.append(name)
    return sites


#: Pyro's warnings that a guide and its model sample different latent sites (pyro.util.check_model_guide_match)
SITE_MISMATCH = r"Found (non-auxiliary vars in guide but not model|vars in model but not guide)"


def site_mismatch(model_trace, guide_trace) -> Optional[str]:
    """How a model and guide traced on one batch disagree on their latent sites, in words ("its guide samples 'w',
    which its model lacks"; a model site the guide lacks counts unless it is enumerated), or None."""
    def latent(trace):
        return {name: site for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}

    model, guide = latent(model_trace), latent(guide_trace)
    extra = [name for name in guide if name not in model and not guide[name]["infer"].get("is_auxiliary")]
    if extra:
        return f"its guide samples {', '.join(map(repr, extra))}, which its model lacks"
    missing = [name for name, site in model.items() if name not in guide and not is_enumerated(site)]
    if missing:
        return f"its model samples {', '.join(map(repr, missing))}, which its guide lacks"
    return None


def disagreement(images: int, mismatch: str) -> str:
    """The sentence for a model and guide that disagree on their latent sites on a batch of ``images`` images."""
    return (f"the structure's model and guide disagree on a batch of {images:,} images: {mismatch}, so its ELBO "
            "and log-likelihood would be no bounds on log p(x); a model and guide must sample the same latent sites "
            "on every batch and call")


def mismatch_in_words(message: str) -> str:
    """Pyro's site-mismatch warning (:data:`SITE_MISMATCH`) as :func:`site_mismatch` says it."""
    names = ", ".join(repr(name) for name in re.findall(r"'([^']+)'", message.rpartition("{")[2]))
    if "in guide but not model" in message:
        return f"its guide samples {names}, which its model lacks"
    return f"its model samples {names}, which its guide lacks"


#: the observation site every structure writes, ``pyro.sample("x", p(x | z), obs=x)``, and the plate of the images
OBSERVATION_SITE, DATA_PLATE = "x", "data"


def check_programs(model: Callable, guide: Callable, args: tuple, structure: str, *, binary: bool = False) -> None:
    """The structure's contract, checked on one batch before training (a ``PyroVAEError`` naming the first breach).

    Traces the guide and the model against it once, with gradients on as in training, without touching the random state,
    and refuses: a model without the observed site ``"x"`` (evaluation and drawing go through it); a sample site
    outside ``pyro.plate("data", batch_size)`` (per-image bounds need every site in it); a latent site of the guide
    that the model lacks, or one of the model that the guide lacks and that is not enumerated (the ELBO would be
    silently wrong: it would not be a bound on log p(x)); a log-density or ``pyro.factor`` that is NaN or infinite;
    a ``data`` plate of another size than the batch (or subsampled: every image must count once); programs with no
    parameter, or with a ``pyro.param`` outside the structure's ``nn.Module`` (checkpoints keep the module's state);
    and, for a structure from a file, any error its programs raise, as one sentence naming the line, and (with
    ``binary``: the data are binary) a density observing the pixels, unbounded on two values.
    """
    who = f"the structure {structure}"
    devices = [args[0].device] if isinstance(args[0], torch.Tensor) and args[0].is_cuda else []
    with torch.enable_grad(), poutine.block(), torch.random.fork_rng(devices=devices), pyro.validation_enabled(True):
        try:
            guide_trace = poutine.trace(guide).get_trace(*args)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
            for trace in (guide_trace, model_trace):
                trace.compute_log_prob()
        except PyroVAEError:
            raise
        except ValueError as err:
            if "found invalid values" not in str(err):
                _refuse_what_it_raised(err, who, structure)
            found = re.search(r"parameter (\w+) .*of distribution (\w+)", str(err))
            what = f" (the parameter {found[1]} of a {found[2]})" if found else ""
            raise PyroVAEError(f"{who}: a distribution or factor of its model or guide got NaN or infinite values on "
                               f"a batch of the training images, before any training{what}; check what it computes"
                               ) from None
        except Exception as err:  # noqa: BLE001 - a structure file's own mistake: one sentence, where it happened
            _refuse_what_it_raised(err, who, structure)

    def sample_sites(trace):
        return {name: site for name, site in trace.nodes.items()
                if site["type"] == "sample" and not site_is_subsample(site)}

    params = [name for trace in (guide_trace, model_trace) for name, site in trace.nodes.items()
              if site["type"] == "param"]
    if not params:
        raise PyroVAEError(f"{who}: its model and guide register no parameters (pyro.module or pyro.param), so "
                           "there is nothing to train; register the networks with pyro.module('name', network)")
    loose = sorted({name for name in params if "$$$" not in name})
    if loose:
        raise PyroVAEError(f"{who}: pyro.param({loose[0]!r}) lives outside the structure's networks, so its "
                           "checkpoints would not keep it (evaluate and --resume would start it afresh); make it an "
                           "nn.Parameter of the structure (registered with pyro.module) instead")
    model_sites, guide_sites = sample_sites(model_trace), sample_sites(guide_trace)
    observed = model_sites.get(OBSERVATION_SITE)
    steps = observed_step_sites(model_trace) if observed is None else []
    if steps:  # a structure over sequences observes step t at "x_t" (pyro_vae.models.sequences)
        observed = model_sites[steps[0]]
    if observed is None or not observed["is_observed"]:
        found = ", ".join(repr(name) for name, site in model_sites.items() if site["is_observed"]) or "none"
        raise PyroVAEError(f"{who}: its model has no observed site named {OBSERVATION_SITE!r} (observed sites: "
                           f"{found}); write pyro.sample({OBSERVATION_SITE!r}, p(x | z), obs=x) (or, over sequences, "
                           "one site 'x_t' per step t), which evaluation and drawing go through")
    support, base = getattr(observed["fn"], "support", None), observed["fn"]
    while hasattr(base, "base_dist"):  # Independent (to_event) and the like: name what they wrap
        base = base.base_dist
    # the library's discretized logistic is a distribution over the 256 pixel values, though its support reads [0, 1]
    if binary and is_file_spec(structure) and support is not None and not support.is_discrete \
            and not isinstance(base, DiscretizedLogistic):
        raise PyroVAEError(f"{who}: its model observes the binary pixels with a density "
                           f"({type(base).__name__}), which grows without bound on two values, so its ELBO "
                           "and NLL would mean nothing (a negative NLL, say); observe them with a distribution over "
                           "0 and 1, such as Bernoulli")
    batch_size = args[0].shape[0]
    for program, sites in (("model", model_sites), ("guide", guide_sites)):
        for name, site in sites.items():
            frames = [frame for frame in site["cond_indep_stack"] if frame.name == DATA_PLATE]
            if not frames and is_penalty(site):  # a term of the whole batch's objective (pyro_vae.scaling.penalty)
                continue
            if not frames:
                raise PyroVAEError(f"{who}: the site {name!r} of its {program} is outside pyro.plate({DATA_PLATE!r}, "
                                   "batch_size); every site that belongs to one image must sit inside that plate")
            size, full = frames[0].size, frames[0].full_size
            if size != batch_size or full not in (None, size):
                declared = f"{full:,} subsampled to {size:,}" if full not in (None, size) else f"{size:,}"
                raise PyroVAEError(f"{who}: its {program} declares pyro.plate({DATA_PLATE!r}) of {declared} at the "
                                   f"site {name!r}, for a batch of {batch_size:,} images; give it the batch's size, "
                                   f"pyro.plate({DATA_PLATE!r}, x.shape[0]), so that every image counts once")
    for name, site in guide_sites.items():
        if not site["is_observed"] and name not in model_sites:
            raise PyroVAEError(f"{who}: its guide samples {name!r}, which its model lacks, so the ELBO would not be "
                               f"a bound on log p(x); sample {name!r} in the model too, or drop it from the guide")
    for name, site in model_sites.items():
        if not site["is_observed"] and name not in guide_sites and not is_enumerated(site):
            raise PyroVAEError(f"{who}: its model samples {name!r}, which its guide lacks; give the guide a "
                               f"q({name} | x), or mark the site infer={{'enumerate': 'parallel'}} to sum it out")
    for program, trace in (("model", model_trace), ("guide", guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and "log_prob" in site and not bool(torch.isfinite(site["log_prob"]).all()):
                bad = site["log_prob"][~torch.isfinite(site["log_prob"])].reshape(-1)[0].item()
                what = "log-factor" if site["infer"].get("is_auxiliary") or name.startswith("_") or \
                    type(site["fn"]).__name__ == "Unit" else "log-density"
                raise PyroVAEError(f"{who}: the {what} of the site {name!r} of its {program} is {bad} on a batch of "
                                   "the training images, before any training; check what it computes")


def _refuse_what_it_raised(err: BaseException, who: str, structure: str) -> None:
    """A structure from a file whose model or guide raised while it was checked: one sentence naming the error and
    the line of the file; a built-in structure's error is ours, and stays a traceback."""
    if not is_file_spec(structure):
        raise err
    raise PyroVAEError(f"{who}: running its guide and model on a batch of the training images raised "
                       f"{type(err).__name__}{user_line(err, structure.rpartition(':')[0])}: {first_line(err)}"
                       ) from None


def describe_sites(names: list, sites: LatentSites) -> str:
    listed = ", ".join(f"{name!r} ({sites.distributions[name]})" for name in names)
    return f"site{'s' if len(names) > 1 else ''} {listed}"
