"""A VAE whose prior is a learned normalizing flow (as in Kingma et al. 2016's and Chen et al. 2017's flow priors):

    p(z) = the density of f(e), e ~ N(0, I), f = g_T o ... o g_1 affine coupling steps (RealNVP; Dinh et al. 2017),
    p(x | z) = Bernoulli(decoder(z)),   q(z | x) = N(mu(x), sigma(x)).

The prior scores the guide's draws, which it did not make, so it needs an inverse that is cheap: an affine
coupling step keeps the first half of z and moves the second by a scale and shift computed from the first,
y_2 = x_2 * exp(s(x_1)) + t(x_1), and is inverted in one pass (Pyro's ``AffineCoupling``). The order of z is
reversed between steps (and restored at the end), and each step's last layer starts at zero, so the prior
starts as N(0, I). Options: ``num_flows`` (default 4) and ``flow_hidden_dims`` (default 100); z needs two
dimensions or more.
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineCoupling
from pyro.nn import DenseNN
from torch import nn

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import positive_int
from pyro_vae.models.flow_vae import with_reversals
from pyro_vae.models.vae import VAE


def coupling_steps(z_dim: int, num_flows: int, hidden_dims: Sequence[int]) -> tuple[nn.ModuleList, list]:
    """(the modules that hold the parameters, every step in order) of a RealNVP flow that starts as the identity."""
    split = z_dim // 2
    steps = []
    for _ in range(num_flows):
        hypernet = DenseNN(split, list(hidden_dims), [z_dim - split, z_dim - split])
        nn.init.zeros_(hypernet.layers[-1].weight)  # scale exp(0) = 1 and shift 0: the identity
        nn.init.zeros_(hypernet.layers[-1].bias)
        steps.append(AffineCoupling(split, hypernet))
    steps = with_reversals(steps, z_dim)
    return nn.ModuleList([step for step in steps if isinstance(step, nn.Module)]), steps


class FlowPriorVAE(VAE):
    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_flows: int = 4, flow_hidden_dims: Sequence[int] = (100,), **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        if z_dim < 2:
            raise PyroVAEError(f"a coupling flow prior splits z in two and needs --z-dim 2 or more, got {z_dim}")
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        self.num_flows = positive_int("num_flows", num_flows)
        self.flow_hidden_dims = tuple(positive_int("flow_hidden_dims", n) for n in flow_hidden_dims)
        self.prior_flows, self.prior_steps = coupling_steps(z_dim, self.num_flows, self.flow_hidden_dims)

    def config(self) -> dict:
        return {**super().config(), "num_flows": self.num_flows, "flow_hidden_dims": list(self.flow_hidden_dims)}

    def prior(self, like: torch.Tensor) -> dist.TransformedDistribution:
        """p(z): N(0, I) pushed through the coupling steps (on ``like``'s device and dtype)."""
        return dist.TransformedDistribution(dist.Normal(like.new_zeros(self.z_dim), 1.0).to_event(1),
                                            self.prior_steps)

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior_flows", self.prior_flows)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(x))
            self.observe(self.decoder(z), x)
