"""The neural networks that parameterize encoders and decoders."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.catalog import ACTIVATION_NAMES, check_registry


class GatedDense(nn.Module):
    """A gated dense layer, h = Linear_h(x) * sigmoid(Linear_g(x)): the hidden layer of the VampPrior paper's
    best fully connected networks (Tomczak & Welling 2018; ``GatedDense`` in their code's utils/nn.py, used
    there without an activation on h)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.h = nn.Linear(in_dim, out_dim)
        self.g = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


#: The choice of hidden layer: a Linear layer followed by an activation, or "gated", where each hidden Linear
#: layer and its activation are one ``GatedDense`` layer instead. "gated" is therefore not an elementwise
#: activation (its class takes the layer sizes); build networks with ``mlp`` and ``GaussianMLP``.
GATED = "gated"
ACTIVATIONS = {"relu": nn.ReLU, "softplus": nn.Softplus, "tanh": nn.Tanh, GATED: GatedDense}
check_registry("activation", ACTIVATIONS, ACTIVATION_NAMES)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")


def gated_layers(sizes: Sequence[int]) -> list[nn.Module]:
    """A ``GatedDense`` layer for each consecutive pair of ``sizes``."""
    return [GatedDense(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last). With
    ``activation="gated"`` every layer but the last is a ``GatedDense`` layer and the last is Linear."""
    _check_activation(activation)
    if activation == GATED:
        return nn.Sequential(*gated_layers(sizes[:-1]), nn.Linear(sizes[-2], sizes[-1]))
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def concat(*features: torch.Tensor) -> torch.Tensor:
    """Concatenate feature vectors along the last dimension, broadcasting their leading (batch, particle,
    enumeration) dimensions: x of shape (B, D) joins an enumerated one-hot code of shape (K, 1, K) as (K, B, D + K)."""
    batch_shape = torch.broadcast_shapes(*(f.shape[:-1] for f in features))
    return torch.cat([f.expand(batch_shape + f.shape[-1:]) for f in features], -1)


class GaussianMLP(nn.Module):
    """input -> (loc, scale) of a diagonal Gaussian over ``out_dim`` variables; scale = softplus(.) + min_scale.

    The encoder q(z | x) of every structure, and the conditional prior p(z1 | z2) of the hierarchical VAE.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu",
                 min_scale: float = 1e-4):
        super().__init__()
        _check_activation(activation)
        if activation == GATED:  # every hidden layer gated, nothing after the last
            self.trunk = nn.Sequential(*gated_layers([in_dim, *hidden_dims]))
            self.act = nn.Identity()
        else:
            self.trunk = mlp([in_dim, *hidden_dims], activation)
            self.act = ACTIVATIONS[activation]() if hidden_dims else nn.Identity()
        width = hidden_dims[-1] if hidden_dims else in_dim
        self.loc = nn.Linear(width, out_dim)
        self.scale = nn.Linear(width, out_dim)
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``extra`` features (a one-hot label, an enumerated cluster) join ``x`` first, as :func:`concat` does."""
        h = self.act(self.trunk(concat(x, *extra) if extra else x))
        return self.loc(h), softplus(self.scale(h)) + self.min_scale


class BernoulliDecoder(nn.Module):
    """z -> the pixels' likelihood parameters (``out_dim`` numbers): the logits of independent Bernoulli pixels
    by default, or what :class:`~pyro_vae.likelihoods.PixelLikelihood` takes for another likelihood."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu"):
        super().__init__()
        self.net = mlp([in_dim, *hidden_dims, out_dim], activation)

    @property
    def output_layer(self) -> nn.Linear:
        return self.net[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
