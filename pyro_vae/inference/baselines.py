"""Baselines for score-function gradients under ``TraceGraph_ELBO`` (``--baseline average`` or ``neural``): the
decaying average of the downstream cost and Mnih & Gregor's input-dependent network, attached to a guide's
non-reparameterized sites."""
from __future__ import annotations

from typing import Callable, Optional

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn

from pyro_vae.catalog import BASELINES
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.sites import LatentSites
from pyro_vae.networks import mlp

AVERAGE_BASELINE_PARAM = "__baseline_avg_downstream_cost_"  # TraceGraph_ELBO's name for the decaying average


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
