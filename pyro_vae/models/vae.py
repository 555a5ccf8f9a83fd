"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014).

    p(z) = N(0, I),   p(x | z) = Bernoulli(decoder(z)),   q(z | x) = N(mu(x), sigma(x))

(or another pixel likelihood, ``likelihood``, and convolutional networks, ``net="conv"``: see
:class:`~pyro_vae.models.base.LatentStructure`).

SVI maximises the ELBO  E_q[log p(x | z)] - KL(q(z | x) || p(z));  because Normal is reparameterized,
Pyro draws z = mu + sigma * eps and gradients flow through the sample.
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist

from pyro_vae.models.base import LatentStructure


class VAE(LatentStructure):
    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, **pixels)
        self.z_dim = z_dim
        self.hidden_dims = tuple(hidden_dims)
        self.activation = activation
        self.encoder = self.make_encoder(self.hidden_dims, z_dim, activation)
        self.decoder = self.make_decoder(z_dim, tuple(reversed(self.hidden_dims)), activation)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            self.observe(self.decoder(z), x)

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
