"""The deep Markov model (Krishnan, Shalit & Sontag 2017, "Structured inference networks for nonlinear state space
models"; the architecture of Pyro's ``examples/dmm.py``): a chain of Gaussian latents with a gated transition.

    p(z_1 | z_0) ... p(z_T | z_{T-1}),   z_t ~ N(loc(z_{t-1}), scale(z_{t-1}))      (the gated transition)
    p(x_t | z_t) = Bernoulli(emitter(z_t))                                            (or another step likelihood)
    q(z_t | z_{t-1}, x_{t:T}) = N(combiner(z_{t-1}, h_t)),   h_t = RNN(x_T, ..., x_t)  (the structured guide)

z_0 and the guide's z_0 are learned vectors. The recurrent net reads each sequence backwards from its own end, so
q(z_t | ...) sees x_t to x_L whatever the padding; the steps after the end are masked in the model and the guide
alike. KL annealing is the trainer's ``--kl-warmup``, which scales every latent site.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models.base import positive_int
from pyro_vae.models.sequences import SequenceStructure
from pyro_vae.networks import mlp


class GatedTransition(nn.Module):
    """z_{t-1} -> (loc, scale) of p(z_t | z_{t-1}): a gate mixes a linear map (the identity at first) with a
    nonlinear proposal; the scale is a softplus of the proposal."""

    def __init__(self, z_dim: int, transition_dim: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim),
                                  nn.Sigmoid())
        self.proposal = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        nn.init.eye_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.scale = nn.Sequential(nn.ReLU(), nn.Linear(z_dim, z_dim), nn.Softplus())

    def forward(self, z_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate, proposed = self.gate(z_prev), self.proposal(z_prev)
        return (1 - gate) * self.linear(z_prev) + gate * proposed, self.scale(proposed)


class Combiner(nn.Module):
    """(z_{t-1}, h_t) -> (loc, scale) of q(z_t | z_{t-1}, x_{t:T}): the mean of tanh(W z_{t-1}) and h_t, mapped."""

    def __init__(self, z_dim: int, rnn_dim: int):
        super().__init__()
        self.from_z = nn.Sequential(nn.Linear(z_dim, rnn_dim), nn.Tanh())
        self.loc = nn.Linear(rnn_dim, z_dim)
        self.scale = nn.Sequential(nn.Linear(rnn_dim, z_dim), nn.Softplus())

    def forward(self, z_prev: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = 0.5 * (self.from_z(z_prev) + h)
        return self.loc(combined), self.scale(combined)


class DMM(SequenceStructure):
    code_site = "z_0"

    def __init__(self, x_dim: int = 20 * 16, z_dim: int = 16, hidden_dims: Sequence[int] = (100, 100),
                 activation: str = "relu", transition_dim: int = 200, rnn_dim: int = 600,
                 image_shape: Optional[Sequence[int]] = (20, 16), likelihood: str = "bernoulli", net: str = "mlp"):
        """``z_dim`` latents per step; ``hidden_dims`` the emitter's hidden layers (Pyro's example: 100, 100);
        ``transition_dim`` the gated transition's hidden size (200) and ``rnn_dim`` the guide's recurrent net's
        (600); ``image_shape`` (T, D) of the sequences."""
        super().__init__(x_dim, image_shape=image_shape, likelihood=likelihood, net=net)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.transition_dim = positive_int("transition_dim", transition_dim)
        self.rnn_dim = positive_int("rnn_dim", rnn_dim)
        self.emitter = mlp([z_dim, *self.hidden_dims, self.step_likelihood.params_per_pixel * self.step_dim],
                           activation)
        self.transition = GatedTransition(z_dim, self.transition_dim)
        self.combiner = Combiner(z_dim, self.rnn_dim)
        self.rnn = nn.RNN(self.step_dim, self.rnn_dim, nonlinearity="relu", batch_first=True)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, self.rnn_dim))

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "transition_dim": self.transition_dim, "rnn_dim": self.rnn_dim}

    def model(self, x, lengths=None):
        steps, mask = self.sequences(x, lengths)
        pyro.module("dmm", self)
        z = self.z_0.expand(steps.shape[0], self.z_dim)
        with pyro.plate("data", steps.shape[0]):
            for t in pyro.markov(range(self.num_steps)):
                loc, scale = self.transition(z)
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
                self.observe_step(t, self.emitter(z), steps[:, t], mask[:, t])

    def guide(self, x, lengths=None):
        steps, mask = self.sequences(x, lengths)
        pyro.module("dmm", self)
        lengths = mask.sum(-1)
        h_0 = self.h_0.expand(1, steps.shape[0], self.rnn_dim).contiguous()
        backwards, _ = self.rnn(self.reversed_in_length(steps, lengths), h_0)
        # h[t] has read x_L, ..., x_t. Split into steps by unbind, not indexed h[:, t]: the backward pass of an
        # index writes a zero (N, T, rnn_dim) gradient for every step, about 8% of a JIT-compiled training step
        # at the default sizes (benchmarks/dmm_vs_pytorch.py); unbind's backward stacks the T gradients once.
        h = self.reversed_in_length(backwards, lengths).unbind(1)
        z = self.z_q_0.expand(steps.shape[0], self.z_dim)
        with pyro.plate("data", steps.shape[0]):
            for t in pyro.markov(range(self.num_steps)):
                loc, scale = self.combiner(z, h[t])
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1).mask(mask[:, t]))
