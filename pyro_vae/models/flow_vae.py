"""VAEs whose guide is a normalizing flow (Rezende & Mohamed 2015; Kingma et al. 2016; van den Berg et al. 2018):

    p(z) = N(0, I),   p(x | z) = Bernoulli(decoder(z)),
    q(z | x):  z_0 ~ N(mu(x), sigma(x)),   z = f_T(... f_1(z_0; h(x)) ...; h(x)),
    log q(z | x) = log N(z_0; mu(x), sigma(x)) - sum_t log |det d f_t / d z_{t-1}|,

written with Pyro's transforms as one ``TransformedDistribution`` at the guide's site "z": the ELBO, importance
sampling and every estimator see an ordinary reparameterized site whose ``log_prob`` includes the flow's
log-determinants. Each step's parameters come from a context h(x), a network of the image of its own
(``context_dim`` features; an MLP, or a conv net with ``--net conv``):

* ``planar-vae``: planar steps f(z) = z + u tanh(w . z + b) with (u, w, b) = hypernet(h(x)) (Pyro's
  ``ConditionalPlanar``; Pyro keeps w . u >= -1 so each step is invertible);
* ``iaf-vae``: inverse autoregressive steps f(z) = mu_t(z, h) + sigma_t(z, h) * z, mu_t and sigma_t of z_<i
  and h (Pyro's ``ConditionalAffineAutoregressive``, a MADE of ``flow_hidden_dims``), the order of z reversed
  between steps (``Permute``) and restored at the end. The last layer of each MADE starts at zero, so the flow starts as the identity
  and training starts from the Gaussian guide;
* ``sylvester-vae``: Householder Sylvester steps f(z) = z + tanh(z Q S + b) R Q^T, Q a product of
  ``num_householder`` reflections, R and S upper triangular, all from a hypernet of h(x)
  (:mod:`pyro_vae.models.sylvester`: Pyro's own ``Sylvester`` is not conditional, and its log-determinant is
  right only when Q = I).

The planar and Sylvester steps have no inverse in closed form; Pyro caches the draw that each step made, so the
guide scores its own draws (all that training and importance sampling ask of it).
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive, ConditionalPlanar, Permute
from pyro.nn import ConditionalAutoRegressiveNN, DenseNN
from torch import nn

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import positive_int
from pyro_vae.models.sylvester import ConditionalSylvester
from pyro_vae.models.vae import VAE

FLOW_NAMES = ("planar", "iaf", "sylvester")


def flow_steps(flow: str, z_dim: int, num_flows: int, context_dim: int, hidden_dims: Sequence[int],
               num_householder: int) -> tuple[nn.ModuleList, list]:
    """The T steps of a flow over ``z_dim`` variables, conditional on ``context_dim`` features:
    (the modules that hold their parameters, every step in order). A step's ``condition(context)`` (or the step
    itself, for Sylvester and the permutations) is a Pyro transform."""
    steps = []
    for _ in range(num_flows):
        if flow == "planar":
            steps.append(ConditionalPlanar(DenseNN(context_dim, list(hidden_dims), param_dims=[1, z_dim, z_dim])))
        elif flow == "iaf":
            made = ConditionalAutoRegressiveNN(z_dim, context_dim, list(hidden_dims), param_dims=[1, 1])
            last = made.layers[-1]
            nn.init.zeros_(last.weight)  # mu = 0 and log sigma = 0: the identity
            nn.init.zeros_(last.bias)
            steps.append(ConditionalAffineAutoregressive(made))
        elif flow == "sylvester":
            steps.append(ConditionalSylvester(z_dim, context_dim, hidden_dims, num_householder))
        else:
            raise PyroVAEError(f"unknown flow {flow!r}; choose one of {', '.join(FLOW_NAMES)}")
    if flow == "iaf":
        steps = with_reversals(steps, z_dim)
    return nn.ModuleList([step for step in steps if isinstance(step, nn.Module)]), steps


def with_reversals(steps: list, z_dim: int) -> list:
    """``steps`` with the order of z reversed between each two, and once more at the end where that leaves it
    reversed, so that a flow of identity steps is the identity (autoregressive and coupling steps see every
    coordinate conditioned on the others only if the order alternates)."""
    out = []
    for t, step in enumerate(steps):
        out.append(step)
        if t < len(steps) - 1 or (len(steps) % 2 == 0 and z_dim > 1):
            out.append(Permute(torch.arange(z_dim - 1, -1, -1)))  # one per place: each caches its own last draw
    return out


class FlowVAE(VAE):
    """A VAE with a flow guide; the subclasses name the flow (``planar-vae``, ``iaf-vae``, ``sylvester-vae``)."""

    flow = "iaf"

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_flows: int = 4, context_dim: int = 50,
                 flow_hidden_dims: Sequence[int] = (100,), num_householder: int = 2, **pixels):
        """``num_flows`` steps T; ``context_dim`` features of h(x); ``flow_hidden_dims`` the hidden layers of each
        step's hypernet (planar) or MADE (IAF); ``num_householder`` reflections in Q (Sylvester, at most z_dim).
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        self.num_flows = positive_int("num_flows", num_flows)
        self.context_dim = positive_int("context_dim", context_dim)
        self.flow_hidden_dims = tuple(positive_int("flow_hidden_dims", n) for n in flow_hidden_dims)
        self.num_householder = positive_int("num_householder", num_householder)
        if self.num_householder > z_dim:
            raise PyroVAEError(f"the model option num_householder ({num_householder}) must be at most z_dim "
                               f"({z_dim}): Q is a product of reflections in z's {z_dim} dimensions")
        self.context = self.make_classifier(self.hidden_dims, self.context_dim, activation)  # h(x)
        self.flows, self._steps = flow_steps(self.flow, z_dim, self.num_flows, self.context_dim,
                                             self.flow_hidden_dims, self.num_householder)

    def config(self) -> dict:
        return {**super().config(), "num_flows": self.num_flows, "context_dim": self.context_dim,
                "flow_hidden_dims": list(self.flow_hidden_dims), "num_householder": self.num_householder}

    def transforms(self, context: torch.Tensor) -> list:
        """The flow's steps for a batch of contexts h(x): Pyro transforms, in the order they apply to z_0."""
        return [step.condition(context) if hasattr(step, "condition") else step for step in self._steps]

    def posterior(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """q(z | x) for a flat batch x: the base Gaussian pushed through the flow."""
        loc, scale = self.encoder(x)
        return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(1), self.transforms(self.context(x)))

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("encoder", self.encoder)
        pyro.module("context", self.context)
        pyro.module("flows", self.flows)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *conditioning) -> torch.Tensor:
        """The flow applied to the base Gaussian's mean (a flow distribution has no mean in closed form)."""
        x = self.check_batch(x)
        z, _ = self.encoder(x)
        for transform in self.transforms(self.context(x)):
            z = transform(z)
        return z


class PlanarVAE(FlowVAE):
    flow = "planar"


class IAFVAE(FlowVAE):
    flow = "iaf"


class SylvesterVAE(FlowVAE):
    flow = "sylvester"
