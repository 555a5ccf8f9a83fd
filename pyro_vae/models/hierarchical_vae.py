"""A VAE with two stochastic layers, sized as in the IWAE paper (Burda et al. 2016): latents 100 and 50.

    p(z2) = N(0, I),  p(z1 | z2) = N(mu(z2), sigma(z2)),  p(x | z1) = Bernoulli(decoder(z1))
    q(z1 | x) = N(mu(x), sigma(x)),  q(z2 | z1) = N(mu(z1), sigma(z1))

The ELBO has three terms: E_q[log p(x | z1)] + E_q[log p(z1 | z2) - log q(z1 | x)] + E_q[log p(z2) - log q(z2 | z1)].
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist

from pyro_vae.models.base import LatentStructure
from pyro_vae.networks import GaussianMLP


class HierarchicalVAE(LatentStructure):
    code_site = "z1"

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", z1_dim: int = 100, top_hidden_dims: Sequence[int] = (100, 100),
                 **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, **pixels)
        self.z_dim, self.z1_dim, self.activation = z_dim, z1_dim, activation
        self.hidden_dims, self.top_hidden_dims = tuple(hidden_dims), tuple(top_hidden_dims)
        self.encoder_z1 = self.make_encoder(self.hidden_dims, z1_dim, activation)
        self.encoder_z2 = GaussianMLP(z1_dim, self.top_hidden_dims, z_dim, activation)
        self.prior_z1 = GaussianMLP(z_dim, tuple(reversed(self.top_hidden_dims)), z1_dim, activation)
        self.decoder = self.make_decoder(z1_dim, tuple(reversed(self.hidden_dims)), activation)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "z1_dim": self.z1_dim, "top_hidden_dims": list(self.top_hidden_dims)}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior_z1", self.prior_z1)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(*self.prior_z1(z2)).to_event(1))
            self.observe(self.decoder(z1), x)

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("encoder_z1", self.encoder_z1)
        pyro.module("encoder_z2", self.encoder_z2)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(*self.encoder_z1(x)).to_event(1))
            pyro.sample("z2", dist.Normal(*self.encoder_z2(z1)).to_event(1))
