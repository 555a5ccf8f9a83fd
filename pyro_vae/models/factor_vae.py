"""FactorVAE (Kim & Mnih 2018): the VAE whose training penalises a discriminator's estimate of the total correlation.

The objective adds to the ELBO minus gamma times the total correlation of the aggregate posterior q(z):

    maximise  E_q[log p(x | z)] - KL(q(z | x) || p(z)) - gamma TC,   TC = KL(q(z) || prod_j q(z_j)).

Where beta-TCVAE estimates the TC from the batch's densities, FactorVAE learns it: a discriminator D tells codes
drawn from q(z) (one per image) from codes drawn from prod_j q(z_j) (each dimension shuffled independently
across the batch). When D is optimal, its logit at z is log q(z) - log prod_j q(z_j) (the density-ratio trick),
so E_q(z)[logit D(z)] estimates the TC.

Written as Pyro code it is the VAE's model with two training terms (:func:`pyro_vae.scaling.penalty`):

* ``penalty("total_correlation", -gamma * logit D(z))`` with the discriminator's weights held (detached): its
  gradient reaches the encoder through the reparameterized z, never the discriminator;
* ``penalty("discriminator", log sigmoid(D(z)) + log sigmoid(-D(z_shuffled)))`` with the codes held: the
  log-likelihood of D's classification, whose gradient reaches the discriminator alone.

One Adam step on the sum then takes the VAE step and the discriminator step of the paper's algorithm at
once, on the same batch (as disentanglement_lib does; the paper draws a second batch for the shuffled codes),
with the trainer's Adam settings (the paper gives the discriminator Adam betas (0.5, 0.9)). The reported ELBO
and log-likelihood leave both terms out, as for beta-TCVAE. The discriminator is the paper's: 6 layers of
1000 leaky-ReLU (slope 0.2) units, 2 logits; ``discriminator_dims`` makes it smaller for quick runs. Under
``--kl-warmup`` the TC term rises with the KL; the discriminator's term keeps its whole weight from the first
step (``warms_up=False``), so that D has learned the TC by the time it counts.

Under ``--elbo iwae`` both terms join the bound outside its log-mean-exp, averaged over the particles
(:class:`~pyro_vae.inference.iwae.IWAE_ELBO`), so each still reaches only its own network. A batch of one image
has nothing to shuffle: its shuffled code is the code itself, and that step teaches the discriminator nothing
(an epoch's last batch can be one image; keep batches large, the paper's are 64).
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import linear, logsigmoid

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import finite_number
from pyro_vae.models.vae import VAE
from pyro_vae.scaling import penalty


class Discriminator(nn.Module):
    """Codes (..., d) -> the logit (...) of "drawn from q(z)" against "drawn from prod_j q(z_j)": the difference of
    the two logits of the paper's 2-way classifier."""

    def __init__(self, z_dim: int, hidden_dims: Sequence[int] = (1000,) * 6):
        super().__init__()
        layers, width = [], z_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, *, held: bool = False) -> torch.Tensor:
        """The logit; with ``held`` the weights are detached, so that gradients reach ``z`` alone (written out
        layer by layer: ``torch.func.functional_call`` does not run under Pyro's JIT)."""
        h = z
        for layer in self.net:
            if held and isinstance(layer, nn.Linear):
                h = linear(h, layer.weight.detach(), layer.bias.detach())
            else:
                h = layer(h)
        return h[..., 0] - h[..., 1]


def shuffle_dimensions(z: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Samples of prod_j q(z_j) from samples of q(z): every dimension of the batch (dimension -2) permuted on its
    own (Kim & Mnih, algorithm 1)."""
    num = z.shape[-2]
    index = torch.stack([torch.randperm(num, generator=generator, device=z.device) for _ in range(z.shape[-1])], -1)
    return torch.gather(z, -2, index.expand(z.shape))


class FactorVAE(VAE):
    batch_coupled = True  # the shuffled codes mix the batch's images
    option_rules = {"gamma": (lambda v: finite_number(v) and v >= 0, "a finite number >= 0 (0 is the VAE)")}

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", gamma: float = 35.0, discriminator_dims: Sequence[int] = (1000,) * 6,
                 **pixels):
        """``gamma`` weights the total correlation (35 by default: dSprites in Kim & Mnih 2018 used 10 to 100,
        disentanglement_lib's study 10, 20, 30, 40, 50, 100); gamma = 0 is the VAE with an idle discriminator.
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        if not gamma >= 0:
            raise PyroVAEError(f"gamma weights the total correlation and must be non-negative, got {gamma}")
        self.gamma = float(gamma)
        self.discriminator_dims = [int(width) for width in discriminator_dims]
        self.discriminator = Discriminator(z_dim, self.discriminator_dims)

    def config(self) -> dict:
        return {**super().config(), "gamma": self.gamma, "discriminator_dims": self.discriminator_dims}

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """The discriminator's estimate of log q(z) - sum_j log q(z_j) at each code, its weights held."""
        return self.discriminator(z, held=True)

    def discriminator_log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """log D(z) + log(1 - D(z_shuffled)) per image, the codes held: what the discriminator maximises."""
        z = z.detach()
        return logsigmoid(self.discriminator(z)) + logsigmoid(-self.discriminator(shuffle_dimensions(z)))

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("decoder", self.decoder)
        pyro.module("discriminator", self.discriminator)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            self.observe(self.decoder(z), x)
            # functions: computed in training only, never while the model is measured (the discriminator costs time)
            penalty("total_correlation", lambda: -self.gamma * self.total_correlation(z))
            penalty("discriminator", lambda: self.discriminator_log_likelihood(z), warms_up=False)
