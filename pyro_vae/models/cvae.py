"""The conditional VAE (Sohn et al. 2015) with a digit label y as the condition.

    p(z) = N(0, I),   p(x | z, y) = Bernoulli(decoder(z, y)),   q(z | x, y) = N(mu(x, y), sigma(x, y))

Because y is given to the decoder, z only has to carry the style; ``generate(n, y)`` draws the digit y.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import InvalidDataError
from pyro_vae.models.base import LatentStructure, one_hot_labels
from pyro_vae.networks import concat


class CVAE(LatentStructure):
    needs_labels = True

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_classes: int = 10, **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, **pixels)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_classes = num_classes
        self.encoder = self.make_encoder(self.hidden_dims, z_dim, activation, extra_dim=num_classes)
        self.decoder = self.make_decoder(z_dim + num_classes, tuple(reversed(self.hidden_dims)), activation)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_classes": self.num_classes}

    def label_code(self, y: Optional[torch.Tensor], batch_size: int) -> torch.Tensor:
        """One-hot codes of the labels, after checking there is one label in range per image."""
        if y is None:
            raise InvalidDataError("the conditional VAE needs a label y for every image; pass model(x, y)")
        return one_hot_labels(y, batch_size, self.num_classes, self.device)

    def model(self, x, y=None):
        x = self.check_batch(x)
        label = self.label_code(y, x.shape[0])
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            self.observe(self.decoder(concat(z, label)), x)

    def guide(self, x, y=None):
        x = self.check_batch(x)
        label = self.label_code(y, x.shape[0])
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x, label)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
