"""A VAE whose prior is learned: a mixture of K diagonal Gaussians with trainable weights, means and scales.

    p(z) = sum_k pi_k N(z; m_k, s_k),   p(x | z) = Bernoulli(decoder(z)),   q(z | x) = N(mu(x), sigma(x))

The prior is just model code: a ``MixtureSameFamily`` distribution whose parameters the model registers
with ``pyro.module`` like the decoder's. Its KL has no closed form, so the ELBO estimates it by sampling.
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.models.vae import VAE


class MixtureOfGaussians(nn.Module):
    def __init__(self, num_components: int, dim: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.locs = nn.Parameter(torch.randn(num_components, dim))
        self.raw_scales = nn.Parameter(torch.zeros(num_components, dim))

    def forward(self) -> dist.MixtureSameFamily:
        components = dist.Normal(self.locs, softplus(self.raw_scales) + 1e-3).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class MixturePriorVAE(VAE):
    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_components: int = 10, **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        self.num_components = num_components
        self.prior = MixtureOfGaussians(num_components, z_dim)

    def config(self) -> dict:
        return {**super().config(), "num_components": self.num_components}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior", self.prior)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            self.observe(self.decoder(z), x)
