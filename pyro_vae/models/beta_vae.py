"""The beta-VAE (Higgins et al. 2017): the VAE's generative model, trained with the KL term weighted by beta.

    maximise  E_q[log p(x | z)] - beta * KL(q(z | x) || p(z))

:class:`~pyro_vae.scaling.scale_latents` multiplies log p(z) in the model and log q(z | x) in the guide by beta,
which is exactly beta times the KL part (beta = 0 included, which Pyro's ``poutine.scale`` refuses). beta = 1 is the VAE; beta > 1 trades reconstruction for a simpler code.
Evaluation measures the unscaled ELBO and log-likelihood of the same generative model.
"""
from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import finite_number
from pyro_vae.models.vae import VAE
from pyro_vae.scaling import scale_latents


class BetaVAE(VAE):
    option_rules = {"beta": (lambda v: finite_number(v) and v >= 0, "a finite number >= 0 (0 drops the KL term)")}

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", beta: float = 1.0, **pixels):
        """``beta`` weights the KL term (1 is the VAE).
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        if not beta >= 0:
            raise PyroVAEError(f"beta weights the KL term and must be non-negative, got {beta}")
        self.beta = float(beta)

    def config(self) -> dict:
        return {**super().config(), "beta": self.beta}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            with scale_latents(self.beta):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            self.observe(self.decoder(z), x)

    def guide(self, x):
        with scale_latents(self.beta):
            super().guide(x)
