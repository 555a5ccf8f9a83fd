"""The two-level VAE with a VampPrior (Tomczak & Welling 2018, "VAE with a VampPrior", their HVAE):

    p(z2) = (1/K) sum_k q(z2 | u_k),   p(z1 | z2) = N(mu(z2), sigma(z2)),   p(x | z1, z2) = Bernoulli(decoder(z1, z2)),
    q(z2 | x) = N(mu(x), sigma(x)),    q(z1 | x, z2) = N(mu(x, z2), sigma(x, z2)).

The top latent z2 has the VampPrior of ``vampprior`` (the same pseudo-inputs, the same encoder q(z2 | x) in the
model and the guide); the bottom latent z1 is drawn given z2 in both programs, and the decoder reads both. The
ELBO has three terms: E_q[log p(x | z1, z2)] + E_q[log p(z1 | z2) - log q(z1 | x, z2)] + E_q[log p(z2) - log q(z2 | x)].

What differs from the authors' code (github.com/jmtomczak/vae_vampprior, models/HVAE_2level.py, as we read its
description): there, q(z1 | x, z2) and p(x | z1, z2) pass x (or z1) and z2 through separate gated layers before
joining them; here each network takes the concatenation (x and z2; z1 and z2) through the structure's own MLP or
conv net of ``--hidden-dims``. Their MNIST runs use z1 = z2 = 40, gated 300-300 networks, lr 5e-4, KL warm-up
over 100 epochs and K = 500 pseudo-inputs: ``--z-dim 40 --hidden-dims 300,300 --activation gated --lr 5e-4
--kl-warmup 100`` (z1_dim defaults to z_dim).
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.models.base import positive_int
from pyro_vae.models.vampprior import VampPriorVAE
from pyro_vae.networks import GaussianMLP


class HierarchicalVampPrior(VampPriorVAE):
    code_site = "z2"

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_pseudo_inputs: int = 500, pseudo_input_init: str = "random",
                 z1_dim: Optional[int] = None, **pixels):
        """``z_dim`` is the top latent z2's (with the VampPrior), ``z1_dim`` the bottom one's (default: z_dim).
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, num_pseudo_inputs, pseudo_input_init, **pixels)
        self.z1_dim = positive_int("z1_dim", z_dim if z1_dim is None else z1_dim)
        self.encoder_z1 = self.make_encoder(self.hidden_dims, self.z1_dim, activation, extra_dim=z_dim)
        self.prior_z1 = GaussianMLP(z_dim, tuple(reversed(self.hidden_dims)), self.z1_dim, activation)
        self.decoder = self.make_decoder(self.z1_dim + z_dim, tuple(reversed(self.hidden_dims)), activation)

    def config(self) -> dict:
        return {**super().config(), "z1_dim": self.z1_dim}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("pseudo_inputs", self.pseudo_inputs)
        pyro.module("encoder", self.encoder)
        pyro.module("prior_z1", self.prior_z1)
        pyro.module("decoder", self.decoder)
        prior = self.prior()
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", prior)
            z1 = pyro.sample("z1", dist.Normal(*self.prior_z1(z2)).to_event(1))
            self.observe(self.decoder(torch.cat([z1, z2], -1)), x)

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("encoder", self.encoder)
        pyro.module("encoder_z1", self.encoder_z1)
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(*self.encoder(x)).to_event(1))
            pyro.sample("z1", dist.Normal(*self.encoder_z1(x, z2)).to_event(1))
