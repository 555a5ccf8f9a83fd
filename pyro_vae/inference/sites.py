"""What kinds of latent sites a model/guide pair has, what each ELBO does with them, and the baselines
that ``TraceGraph_ELBO`` subtracts from the score function of the non-reparameterized ones."""
from __future__ import annotations

import contextlib
import copy
import re

from dataclasses import dataclass, field
from typing import Callable, Optional

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import Distribution, Independent, TransformedDistribution

from pyro_vae.catalog import BASELINES, is_file_spec  # noqa: F401 (BASELINES re-exported)
from pyro_vae.errors import PyroVAEError, first_line, user_line
from pyro_vae.likelihoods import DiscretizedLogistic
from pyro_vae.models.base import observed_step_sites
from pyro_vae.networks import mlp
from pyro_vae.scaling import is_penalty

AVERAGE_BASELINE_PARAM = "__baseline_avg_downstream_cost_"  # TraceGraph_ELBO's name for the decaying average


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


def _describe(names: list, sites: LatentSites) -> str:
    listed = ", ".join(f"{name!r} ({sites.distributions[name]})" for name in names)
    return f"site{'s' if len(names) > 1 else ''} {listed}"


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
                           f"{_describe(non_reparameterized, sites)} is not; use --elbo enum or --elbo tracegraph")
    if elbo in PATHWISE_WEIGHTED and sites.score_function:
        raise PyroVAEError(f"--elbo {elbo} needs every latent reparameterized or summed out, but "
                           f"{_describe(sites.score_function, sites)} is sampled without a reparameterization; "
                           "mark it infer={'enumerate': 'parallel'}, or use --elbo enum, tracegraph, rws or vimco")
    guide_discrete = [name for name in non_reparameterized if name in sites.in_guide]
    if elbo in STICKING and guide_discrete:
        raise PyroVAEError(f"--elbo {elbo} differentiates through the guide's draws, and {_describe(guide_discrete, sites)} "
                           "is discrete, without such a path; use --elbo rws, vimco, tracegraph or enum (iwae, where "
                           "it is marked for enumeration)")
    if elbo == "renyi" and sites.enumerated:
        raise PyroVAEError(f"--elbo renyi is Pyro's RenyiELBO, which samples every site and cannot sum out "
                           f"{_describe(sites.enumerated, sites)}; use --elbo iwae (the Renyi bound at alpha 0), "
                           "which sums it inside each weight")
    if elbo == "tmc" and non_reparameterized:
        raise PyroVAEError(f"--elbo tmc draws K values of every reparameterized guide site, and "
                           f"{_describe(non_reparameterized, sites)} is discrete; use --elbo iwae, which sums "
                           "enumerated sites inside each weight")
    if elbo == "vimco" and sites.reparameterized:
        raise PyroVAEError(f"--elbo vimco is a score-function estimator for discrete latents, and "
                           f"{_describe(sites.reparameterized, sites)} is continuous; use --elbo iwae or dreg for "
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
    return (f"note: {_describe(plain, sites)} cannot be reparameterized, so {elbo} estimates its gradient with "
            "the plain score function (no baseline, high variance); mark it infer={'enumerate': 'parallel'} "
            "and use --elbo enum to sum it out exactly, or --elbo tracegraph --baseline average (or neural)")


class DataPointBaseline(nn.Module):
    """x -> one predicted downstream cost per data point: the input-dependent baseline of Mnih & Gregor (2014),
    for training (``--baseline neural``) and for the estimator comparison (``score-nn-baseline``)."""

    def __init__(self, in_dim: int, hidden_dim: int = 100):
        super().__init__()
        self.net = mlp([in_dim, hidden_dim, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cost = self.net(x.reshape(x.shape[0], -1)).squeeze(-1)
        # TraceGraph_ELBO sums a batch of one image's downstream cost to a scalar: match it
        return cost.reshape(()) if cost.numel() == 1 else cost


class ScoreFunctionBaselines(Messenger):
    """Prepare a guide's non-reparameterized latent sites for ``TraceGraph_ELBO``: drop their enumeration
    marks (it samples every site) and, unless ``baseline`` is "none", give them its baseline options: the
    decaying average of the downstream cost, plus for "neural" a learned function of ``x`` (``networks``).

    Pyro keeps the decaying average per position in the batch; when a batch of another size comes (the
    last, smaller batch of an epoch), the average restarts from its mean over positions.
    """

    def __init__(self, x: torch.Tensor, baseline: str = "none", networks: Optional[nn.ModuleDict] = None):
        super().__init__()
        self.x, self.baseline, self.networks = x, baseline, networks

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg) or getattr(msg["fn"], "has_rsample", False):
            return
        infer = {key: value for key, value in msg["infer"].items() if key != "enumerate"}
        if self.baseline != "none":
            name, store, batch_shape = msg["name"], pyro.get_param_store(), msg["fn"].batch_shape
            if batch_shape.numel() == 1:  # TraceGraph_ELBO sums a batch of one image's downstream cost to a scalar
                batch_shape = torch.Size()
            average = AVERAGE_BASELINE_PARAM + name
            if average in store and store[average].shape != batch_shape:
                store[average] = store[average].detach().mean().expand(batch_shape).clone()
            infer["baseline"] = {"use_decaying_avg_baseline": True}
            if self.baseline == "neural":
                infer["baseline"].update(nn_baseline=self.networks[name], nn_baseline_input=self.x)
        msg["infer"] = infer


def neural_baselines(sites: LatentSites, x_dim: int) -> nn.ModuleDict:
    """One :class:`DataPointBaseline` per site that only a score-function gradient reaches."""
    return nn.ModuleDict({name: DataPointBaseline(x_dim) for name in sites.discrete})


def with_baselines(guide: Callable, baseline: str, networks: Optional[nn.ModuleDict] = None) -> Callable:
    """``guide`` run under :class:`ScoreFunctionBaselines`; the networks are registered so SVI trains them."""
    if baseline not in BASELINES:
        raise PyroVAEError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")

    def guide_with_baselines(x, *args):
        if networks is not None:
            pyro.module("score_function_baselines", networks)
        with ScoreFunctionBaselines(x, baseline, networks):
            return guide(x, *args)

    return guide_with_baselines
