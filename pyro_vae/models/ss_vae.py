"""The semi-supervised VAE, model M2 of Kingma, Rezende, Mohamed & Welling (2014), as in Pyro's
``examples/vae/ss_vae_M2.py``.

    p(y) = Categorical(uniform),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(decoder(z, y))
    q(y | x) = Categorical(classifier(x)),  q(z | x, y) = N(mu(x, y), sigma(x, y))

A labelled image observes y in the model and the guide; an unlabelled one samples y from the classifier,
marked for parallel enumeration so that ``TraceEnum_ELBO`` sums over the classes exactly. Because the
ELBO of labelled images never trains the classifier, labelled images also add the auxiliary term
alpha * log q(y | x) (Kingma et al., eq. 9): an observed site of the model scaled by alpha.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pyro_vae.models.base import LatentStructure, finite_number, one_hot_labels, positive_int
from pyro_vae.networks import concat


class SSVAE(LatentStructure):
    code_site = "z"
    default_elbo = "enum"
    semi_supervised = True
    option_rules = {"aux_weight": (lambda v: finite_number(v) and v >= 0, "a finite number >= 0")}

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_classes: int = 10, aux_weight: float = 46.0,
                 **pixels):
        """``aux_weight`` is alpha, the weight of the classification term on labelled images (46 in Pyro's
        example; Kingma et al. use 0.1 N).
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, **pixels)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_classes = positive_int("num_classes", num_classes)
        self.check_options({"aux_weight": aux_weight})
        self.aux_weight = float(aux_weight)
        self.classifier = self.make_classifier(self.hidden_dims, self.num_classes, activation)
        self.encoder = self.make_encoder(self.hidden_dims, z_dim, activation, extra_dim=self.num_classes)
        self.decoder = self.make_decoder(z_dim + self.num_classes, tuple(reversed(self.hidden_dims)), activation)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_classes": self.num_classes, "aux_weight": self.aux_weight}

    def model(self, x, y: Optional[torch.Tensor] = None):
        x = self.check_batch(x)
        label = None if y is None else one_hot_labels(y, x.shape[0], self.num_classes, x.device)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            y = pyro.sample("y", dist.OneHotCategorical(logits=x.new_zeros(self.num_classes)), obs=label)
            self.observe(self.decoder(concat(z, y)), x)
            if label is not None and self.aux_weight:
                pyro.module("classifier", self.classifier)
                with poutine.scale(scale=self.aux_weight):
                    pyro.sample("y_aux", dist.OneHotCategorical(logits=self.classifier(x)), obs=label)

    def guide(self, x, y: Optional[torch.Tensor] = None):
        x = self.check_batch(x)
        pyro.module("classifier", self.classifier)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(x)),
                                infer={"enumerate": "parallel"})
            else:
                y = one_hot_labels(y, x.shape[0], self.num_classes, x.device)
            pyro.sample("z", dist.Normal(*self.encoder(x, y)).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under q(y | x)."""
        return self.classifier(self.check_batch(x)).argmax(-1)
