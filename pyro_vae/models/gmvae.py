"""The Gaussian-mixture VAE: a discrete cluster c above a continuous code z (Dilokthanakul et al. 2016;
the factorisation of Rui Shu's GMVAE).

    p(c) = Categorical(1/K),  p(z | c) = N(mu_c, sigma_c),  p(x | z) = Bernoulli(decoder(z))
    q(c | x) = Categorical(classifier(x)),  q(z | x, c) = N(mu(x, c), sigma(x, c))

The guide marks c for parallel enumeration, so ``TraceEnum_ELBO`` computes the ELBO as the exact sum over
the K clusters of q(c | x) times the (reparameterized) ELBO given c: no score-function gradient at all.
p(c) is uniform, as in Dilokthanakul et al.: with learned weights the prior followed the guide onto one
cluster (0.87 of its mass after 5 epochs, every test image on it).
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.models.base import LatentStructure, positive_int



class ClusterGaussians(nn.Module):
    """One-hot c -> (loc, scale) of p(z | c): row c of a learned table of means and scales."""

    def __init__(self, num_components: int, z_dim: int):
        super().__init__()
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.raw_scales = nn.Parameter(torch.zeros(num_components, z_dim))

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return c @ self.locs, softplus(c @ self.raw_scales) + 1e-3


class GMVAE(LatentStructure):
    code_site = "z"
    default_elbo = "enum"

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_components: int = 10, image_shape: Optional[Sequence[int]] = None,
                 likelihood: str = "bernoulli", net: str = "mlp"):
        super().__init__(x_dim, image_shape=image_shape, likelihood=likelihood, net=net)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_components = positive_int("num_components", num_components)
        self.prior_z = ClusterGaussians(self.num_components, z_dim)
        self.decoder = self.make_decoder(z_dim, tuple(reversed(self.hidden_dims)), activation)
        self.classifier = self.make_classifier(self.hidden_dims, self.num_components, activation)
        self.encoder = self.make_encoder(self.hidden_dims, z_dim, activation, extra_dim=self.num_components)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_components": self.num_components}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior_z", self.prior_z)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=x.new_zeros(self.num_components)))
            z = pyro.sample("z", dist.Normal(*self.prior_z(c)).to_event(1))
            self.observe(self.decoder(z), x)

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("classifier", self.classifier)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=self.classifier(x)), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(*self.encoder(x, c)).to_event(1))

    @torch.no_grad()
    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable cluster under q(c | x)."""
        return self.classifier(self.check_batch(x)).argmax(-1)
