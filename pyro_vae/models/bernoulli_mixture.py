"""A mixture of Bernoulli products: a purely discrete latent structure whose log p(x) is a finite sum.

    p(c) = Categorical(pi),   p(x | c) = prod_d Bernoulli(x_d; sigmoid(l_cd)),   q(c | x) = Categorical(MLP(x))

The component c is a one-hot vector, so the "decoder" is a linear map from it to the pixel logits (row c of
its weight plus its bias). The guide marks c for parallel enumeration: ``TraceEnum_ELBO`` sums the ELBO
over the K components exactly, and importance sampling sums them inside the weights, which makes
log p(x) = logsumexp_c [log pi_c + log p(x | c)] exact. The test bed for every tool on discrete latents.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models.base import LatentStructure, positive_int
from pyro_vae.networks import mlp


class CategoricalPrior(nn.Module):
    """A learned p(c) over one-hot vectors: OneHotCategorical with trainable logits (uniform at the start)."""

    def __init__(self, num_categories: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_categories))

    def forward(self) -> dist.OneHotCategorical:
        return dist.OneHotCategorical(logits=self.logits)


class BernoulliMixture(LatentStructure):
    code_site = "c"
    default_elbo = "enum"

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_components: int = 10, image_shape: Optional[Sequence[int]] = None):
        """``z_dim`` is accepted for the common constructor and unused: the code is the one-hot component,
        of ``num_components`` dimensions."""
        super().__init__(x_dim, image_shape=image_shape)  # Bernoulli pixels and a table of them: no likelihood or net
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_components = positive_int("num_components", num_components)
        self.prior = CategoricalPrior(self.num_components)
        self.components = nn.Linear(self.num_components, x_dim)
        self.encoder = mlp([x_dim, *self.hidden_dims, self.num_components], activation)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_components": self.num_components}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior", self.prior)
        pyro.module("components", self.components)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.components(c)).to_event(1), obs=x)

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.OneHotCategorical(logits=self.encoder(x)), infer={"enumerate": "parallel"})

    @torch.no_grad()
    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component under q(c | x)."""
        return self.encoder(self.check_batch(x)).argmax(-1)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor, generator: torch.Generator) -> None:
        """Each component starts at a random training image, blended one part to four with the mean image.

        From random logits one component fits the mostly blank images best, the guide sends every image to
        it, and the others never learn (measured: all 10,000 test images on one component after 4 epochs).
        Starting at different images, as EM for mixtures usually does, gives components their own images
        (on 10,000 images after 4 epochs: 6 of 10 components in use with a half-and-half blend, 7 with this one,
        which starts every component closer to the mean, so that none is ruled out early).
        """
        picked = images[torch.randperm(len(images), generator=generator)[:self.num_components]].to(self.device)
        probs = (0.2 * picked + 0.8 * images.mean(0).to(self.device)).clamp(0.01, 0.99)
        self.components.weight.copy_(torch.logit(probs).T)
        self.components.bias.zero_()

    @torch.no_grad()
    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) of each image: logsumexp over components of log pi_c + log p(x | c)."""
        log_pi = torch.log_softmax(self.prior.logits, -1)
        logits = self.components.weight.T + self.components.bias  # (K, D)
        log_px_c = dist.Bernoulli(logits=logits).log_prob(self.check_batch(x).unsqueeze(-2)).sum(-1)  # (B, K)
        return (log_pi + log_px_c).logsumexp(-1)
