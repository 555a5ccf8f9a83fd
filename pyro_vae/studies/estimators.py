"""Gradient estimators of the ELBO, by name, and how to measure them on any model/guide pair.

An estimator is one of Pyro's ELBO classes plus the guide as that ELBO should see it:

* ``reparam``: ``Trace_ELBO``; latent samples are differentiated through, z = mu + sigma * eps;
* ``score``: ``TraceGraph_ELBO`` with every latent site made non-reparameterized, so the gradient is the
  score function  grad log q(z) * (downstream cost), Rao-Blackwellized by Pyro's dependency tracking;
* ``score-avg-baseline``: the same, with a decaying average of each site's downstream cost subtracted;
* ``score-nn-baseline``: the same, with that average plus a neural network of x subtracted (centring plus
  an input-dependent baseline, as in Mnih & Gregor 2014); Pyro's ``nn_baseline`` trains the network on the
  squared error of its prediction, here with a learning rate 10 times the model's, as in Pyro's tutorial;
* ``meanfield``: ``TraceMeanField_ELBO``, reparameterized, with the KL term in closed form where Pyro knows it;
* ``iwae``: ``RenyiELBO(alpha=0)`` with 5 particles: the gradient of the importance-weighted bound, a different
  objective from the ELBO;
* ``enum``: ``TraceEnum_ELBO``; the sites a structure marks ``infer={"enumerate": "parallel"}`` are summed out
  exactly, so a purely discrete structure gets the exact gradient;
* ``concrete-T`` (``concrete-1``, ``concrete-0.5``, ``concrete-0.1``, or any temperature T > 0): the
  Gumbel-softmax estimator of Jang, Gu & Poole (2017), see :class:`RelaxedOneHot`; biased, less so as T falls.

An estimator that cannot compute its gradient on a pair's sites (a pathwise one on a discrete site, say) is
refused with the reason, by :func:`applicability`, rather than computing something else under its name.

Nothing here knows which model it runs: latent sites are found by tracing the guide and changed by poutine
messengers, and the gradients are those Pyro's ELBO puts on the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional

import pyro
import torch
from pyro import poutine
from pyro.distributions import OneHotCategorical, RelaxedOneHotCategorical
from pyro.infer import ELBO, RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import OneHotCategorical as TorchOneHotCategorical, kl_divergence, register_kl

from pyro_vae.catalog import (CONCRETE_TEMPERATURES, ESTIMATOR_SUMMARIES, check_registry, concrete_name,  # noqa: F401
                              concrete_summary, concrete_temperature)
from pyro_vae.config import check_positive  # noqa: F401 (re-exported: toy, comparison, discrete use it)
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.importance import max_plate_nesting
from pyro_vae.inference.optim import GroupedOptim
from pyro_vae.inference.multisample import (CIWAE_ELBO, DReG_ELBO, MIWAE_ELBO, PIWAE_ELBO, RWS_ELBO, STL_ELBO,
                                            TMC_ELBO, VIMCO_ELBO)
from pyro_vae.inference.applicability import check_elbo_applies
from pyro_vae.inference.baselines import DataPointBaseline
from pyro_vae.inference.sites import latent_sites as sort_sites, without_rsample

#: The neural baseline learns this many times faster than the model, as in Pyro's SVI tutorial (part III).
BASELINE_LR_FACTOR = 10


@dataclass(frozen=True)
class EstimatorSpec:
    summary: str
    elbo_class: type
    elbo_options: dict = field(default_factory=dict)
    score_function: bool = False
    #: None, "average" (decaying average) or "neural" (decaying average plus a network of x)
    baseline: Optional[str] = None
    #: the temperature of the Concrete relaxation of one-hot sites; None: no relaxation
    temperature: Optional[float] = None


def concrete_spec(temperature: float) -> EstimatorSpec:
    return EstimatorSpec(concrete_summary(temperature), TraceMeanField_ELBO, temperature=temperature)


_SUMMARY = ESTIMATOR_SUMMARIES
ESTIMATORS: dict[str, EstimatorSpec] = {
    "reparam": EstimatorSpec(_SUMMARY["reparam"], Trace_ELBO),
    "score": EstimatorSpec(_SUMMARY["score"], TraceGraph_ELBO, score_function=True),
    "score-avg-baseline": EstimatorSpec(_SUMMARY["score-avg-baseline"], TraceGraph_ELBO, score_function=True,
                                        baseline="average"),
    "score-nn-baseline": EstimatorSpec(_SUMMARY["score-nn-baseline"], TraceGraph_ELBO, score_function=True,
                                       baseline="neural"),
    "meanfield": EstimatorSpec(_SUMMARY["meanfield"], TraceMeanField_ELBO),
    "iwae": EstimatorSpec(_SUMMARY["iwae"], RenyiELBO, {"alpha": 0, "num_particles": 5, "vectorize_particles": True}),
    "enum": EstimatorSpec(_SUMMARY["enum"], TraceEnum_ELBO),
    **{concrete_name(t): concrete_spec(t) for t in CONCRETE_TEMPERATURES},
    "stl": EstimatorSpec(_SUMMARY["stl"], STL_ELBO, {"num_particles": 5}),
    "dreg": EstimatorSpec(_SUMMARY["dreg"], DReG_ELBO, {"num_particles": 5}),
    "miwae": EstimatorSpec(_SUMMARY["miwae"], MIWAE_ELBO, {"num_particles": 5, "outer_particles": 2}),
    "piwae": EstimatorSpec(_SUMMARY["piwae"], PIWAE_ELBO, {"num_particles": 5, "outer_particles": 2}),
    "ciwae": EstimatorSpec(_SUMMARY["ciwae"], CIWAE_ELBO, {"num_particles": 5, "beta": 0.5}),
    "rws": EstimatorSpec(_SUMMARY["rws"], RWS_ELBO, {"num_particles": 5}),
    "vimco": EstimatorSpec(_SUMMARY["vimco"], VIMCO_ELBO, {"num_particles": 5}),
    "renyi": EstimatorSpec(_SUMMARY["renyi"], RenyiELBO, {"alpha": 0.5, "num_particles": 5,
                                                         "vectorize_particles": True}),
    "tmc": EstimatorSpec(_SUMMARY["tmc"], TMC_ELBO, {"num_particles": 5}),
}
#: the estimators whose applicability is the training objective's of the same name (inference.sites)
_OBJECTIVES = ("stl", "dreg", "miwae", "piwae", "ciwae", "rws", "vimco", "renyi", "tmc")
check_registry("estimator", ESTIMATORS, ESTIMATOR_SUMMARIES)


def estimator_spec(name: str) -> EstimatorSpec:
    """The estimator ``name``: one of :data:`ESTIMATORS`, or ``concrete-T`` for any temperature T > 0."""
    if name in ESTIMATORS:
        return ESTIMATORS[name]
    try:
        temperature = concrete_temperature(name)
    except ValueError as err:
        raise PyroVAEError(str(err)) from None
    if temperature is not None:
        return concrete_spec(temperature)
    raise PyroVAEError(f"unknown gradient estimator {name!r}; choose among {', '.join(ESTIMATORS)} "
                       "(concrete-T for any temperature T > 0)")


def _without_enumeration(infer: dict) -> dict:
    """``infer`` without the enumeration mark, which only ``TraceEnum_ELBO`` acts on (the others warn)."""
    return {key: value for key, value in infer.items() if key != "enumerate"}


class ScoreFunctionSites(Messenger):
    """Makes every latent sample site non-reparameterized and sampled, not enumerated; ``baselines`` maps site
    names to ``infer["baseline"]`` options for ``TraceGraph_ELBO``."""

    def __init__(self, baselines: Optional[Mapping[str, dict]] = None):
        super().__init__()
        self.baselines = baselines or {}

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        if getattr(msg["fn"], "has_rsample", False):
            msg["fn"] = without_rsample(msg["fn"])
        msg["infer"] = _without_enumeration(msg["infer"])
        if msg["name"] in self.baselines:
            msg["infer"] = {**msg["infer"], "baseline": self.baselines[msg["name"]]}


class RelaxedOneHot(RelaxedOneHotCategorical):
    """A one-hot site relaxed for the Gumbel-softmax estimator (Jang, Gu & Poole 2017): samples are
    softmax((logits + Gumbel noise) / T), points inside the simplex with a pathwise gradient, and the KL
    between two such sites is the exact KL of the one-hot categoricals they relax.

    The objective is then E_g[log p(x | softmax((l + g) / T))] - KL(q(c) || p(c)): only the expected
    likelihood term is relaxed. Its gradient is biased, and the bias vanishes as T -> 0: the relaxed sample
    tends to the one-hot Gumbel-max sample onehot(argmax(l + g)), which is exactly c ~ q, and writing the
    expectation over u = l + g as an integral against the Gumbel density p(u - l) moves the derivative onto
    that density, so by dominated convergence the gradient tends to that of the ELBO (for a likelihood that
    is smooth and bounded on the simplex, such as the Bernoulli mixture's). The variance grows as T falls.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # Pyro computes every site's density, although the closed-form KL never uses this one; at low
        # temperatures samples round to exact zeros, whose log density would be NaN.
        return super().log_prob(value.clamp_min(torch.finfo(value.dtype).tiny))


@register_kl(RelaxedOneHot, RelaxedOneHot)
def _kl_relaxed_one_hot(q: RelaxedOneHot, p: RelaxedOneHot) -> torch.Tensor:
    return kl_divergence(OneHotCategorical(logits=q.logits), OneHotCategorical(logits=p.logits))


class RelaxOneHotSites(Messenger):
    """Replaces the ``OneHotCategorical`` at each latent site named in ``sites`` by its :class:`RelaxedOneHot`
    at ``temperature``: in the guide, which then samples relaxed vectors, and in the model, which receives
    them and pairs its prior with the guide's in ``TraceMeanField_ELBO``'s closed-form KL."""

    def __init__(self, temperature: float, sites: Iterable[str]):
        super().__init__()
        self.temperature = temperature
        self.sites = set(sites)

    def _pyro_sample(self, msg):
        if msg["name"] in self.sites and not msg["is_observed"]:
            logits = msg["fn"].logits
            # At low temperatures float32 samples miss Pyro's simplex check by rounding; their density is never
            # used (the KL is in closed form), so the check is off.
            msg["fn"] = RelaxedOneHot(torch.tensor(self.temperature, dtype=logits.dtype, device=logits.device),
                                      logits=logits, validate_args=False)
            msg["infer"] = _without_enumeration(msg["infer"])


def _latent(trace) -> dict:
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}


def _guide_latent(guide_trace) -> dict:
    sites = _latent(guide_trace)
    if not sites:
        raise PyroVAEError("the guide has no latent sample site, so there is no gradient estimator to compare; "
                           "the guide must sample the latent variables that the model observes x through")
    return sites


def latent_sites(guide: Callable, args: tuple) -> dict:
    """The guide's latent sample sites (name -> trace node), in the order the guide samples them."""
    with torch.no_grad():
        return _guide_latent(poutine.trace(guide).get_trace(*args))


def _describe(name: str, site: dict) -> str:
    fn = site["fn"]
    while hasattr(fn, "base_dist") and not isinstance(fn, RelaxedOneHotCategorical):
        fn = fn.base_dist
    return f"site {name!r} ({type(fn).__name__})"


def applicability(name: str, model: Callable, guide: Callable, args: tuple, num_particles: Optional[int] = None
                  ) -> Optional[str]:
    """Whether the estimator ``name`` computes its gradient on this model/guide pair: None if it does, else the
    reason it does not, one sentence.

    Pathwise estimators need every latent site of the guide reparameterized (Pyro would otherwise fall back
    to a score function, or refuse); ``enum`` needs a site marked for enumeration; the relaxation needs
    discrete sites that are one-hot, in the guide and in the model; the neural baseline one cost per data
    point. The score function applies to any site.
    """
    spec = estimator_spec(name)
    if name in _OBJECTIVES:
        particles = num_particles if num_particles is not None else spec.elbo_options.get("num_particles", 1)
        try:
            check_elbo_applies(name, sort_sites(model, guide, args), num_particles=particles, guide=guide, batch=args)
        except PyroVAEError as err:
            return str(err).replace(f"--elbo {name} ", f"{name} ", 1)
        return None
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    sites, model_sites = _guide_latent(guide_trace), _latent(model_trace)
    non_pathwise = [(site_name, site) for site_name, site in sites.items() if not site["fn"].has_rsample]
    if spec.elbo_class in (Trace_ELBO, TraceMeanField_ELBO, RenyiELBO) and spec.temperature is None and non_pathwise:
        consequence = {Trace_ELBO: "Trace_ELBO would silently use the score function instead",
                       TraceMeanField_ELBO: "TraceMeanField_ELBO refuses it",
                       RenyiELBO: "RenyiELBO drops the score-function term of such sites, so its gradient "
                                  "would miss it"}[spec.elbo_class]
        return f"{_describe(*non_pathwise[0])} has no pathwise gradient, and {consequence}"
    if spec.elbo_class is TraceEnum_ELBO and not any(site["infer"].get("enumerate") == "parallel"
                                                     for site in [*sites.values(), *model_sites.values()]):
        return "no latent site is marked infer={'enumerate': 'parallel'}, so there is nothing to sum out"
    if spec.temperature is not None:
        if not non_pathwise:
            return "the guide has no discrete latent site to relax"
        for site_name, site in non_pathwise:
            if site_name not in model_sites:
                return f"the model has no latent site {site_name!r} to pair with the guide's"
            for where, node in (("guide", site), ("model", model_sites[site_name])):
                if not isinstance(node["fn"], TorchOneHotCategorical):
                    return (f"{_describe(site_name, node)} of the {where} is not one-hot, and only a one-hot site "
                            "has a relaxation (a point of the simplex) that the model code accepts")
    if spec.baseline == "neural":
        for site_name, site in sites.items():
            if tuple(site["fn"].batch_shape) != (args[0].shape[0],):
                return (f"the neural baseline predicts one cost per data point, but {_describe(site_name, site)} has "
                        f"batch shape {tuple(site['fn'].batch_shape)}; use score-avg-baseline instead")
    return None


class EstimatorNotApplicable(PyroVAEError):
    """An estimator asked for on a model/guide pair whose sites it cannot handle."""


class Estimator:
    """One gradient estimator bound to a model/guide pair: ``elbo``, ``model``, and ``guide`` as it runs it.

    ``example_args`` (a batch such as the ones it will see) tells which sites are latent and, for the
    neural baseline, the size of x. Extra keyword arguments go to the ELBO class (e.g. ``num_particles``).
    """

    def __init__(self, name: str, model: Callable, guide: Callable, example_args: tuple, **elbo_options):
        self.name = name
        self.spec = estimator_spec(name)
        reason = applicability(name, model, guide, example_args, elbo_options.get("num_particles"))
        if reason is not None:
            raise EstimatorNotApplicable(f"the estimator {name} does not apply here: {reason}")
        self.base_model, self.base_guide = model, guide
        sites = latent_sites(guide, example_args)
        self.sites = list(sites)
        # Known plate nesting spares Pyro a guess (and its log line) when it vectorizes particles, and
        # tells enumeration which dimensions are free.
        options = {"max_plate_nesting": max_plate_nesting(model, guide, example_args), **self.spec.elbo_options}
        self.elbo: ELBO = self.spec.elbo_class(**{**options, **elbo_options})
        self.baseline_nets = _neural_baselines(sites, example_args[0]) if self.spec.baseline == "neural" else None
        self.model, self.guide = model, guide
        if self.spec.score_function:
            self.guide = self._score_function_guide
        if self.spec.temperature is not None:
            relax = RelaxOneHotSites(self.spec.temperature,
                                     [site for site, node in sites.items() if not node["fn"].has_rsample])
            self.model, self.guide = relax(model), relax(guide)

    def optimizer(self, lr: float) -> GroupedOptim:
        """Adam for SVI over every parameter, with the neural baseline's learning rate raised."""
        baseline = set(self.baseline_nets.parameters()) if self.baseline_nets is not None else set()

        def adam(params: list, lr: float) -> torch.optim.Adam:
            groups = [{"params": [p for p in params if p not in baseline]},
                      {"params": [p for p in params if p in baseline], "lr": BASELINE_LR_FACTOR * lr}]
            return torch.optim.Adam([group for group in groups if group["params"]], lr=lr)

        return GroupedOptim(adam, {"lr": lr})

    def _baselines(self, x: torch.Tensor) -> dict:
        if self.spec.baseline is None:
            return {}
        options = {site: {"use_decaying_avg_baseline": True} for site in self.sites}
        if self.baseline_nets is not None:
            for site, net in zip(self.sites, self.baseline_nets):
                options[site].update(nn_baseline=net, nn_baseline_input=x)
        return options

    def _score_function_guide(self, *args, **kwargs):
        if self.baseline_nets is not None:
            pyro.module("score_function_baseline", self.baseline_nets)  # so that SVI trains them too
        with ScoreFunctionSites(self._baselines(args[0])):
            return self.base_guide(*args, **kwargs)


def _neural_baselines(sites: dict, x: torch.Tensor) -> nn.ModuleList:
    return nn.ModuleList(DataPointBaseline(x[0].numel()) for _ in sites).to(x.device)


def parameter_groups(model: Callable, guide: Callable, args: tuple) -> dict[str, dict[str, torch.Tensor]]:
    """The trainable tensors of the guide and of the model, by parameter-store name."""
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)

    def params(trace, exclude=()):
        return {name: site["value"].unconstrained() for name, site in trace.nodes.items()
                if site["type"] == "param" and name not in exclude}

    guide_params = params(guide_trace)
    return {"guide": guide_params, "model": params(model_trace, exclude=guide_params)}
