"""A hidden Markov model with neural emissions, its states summed out exactly (Pyro's ``examples/hmm.py`` pattern).

    s_1 ~ Categorical(pi),   s_t | s_{t-1} ~ Categorical(A[s_{t-1}]),   p(x_t | s_t) = Bernoulli(emitter(s_t))

The states are marked for parallel enumeration inside ``pyro.markov``, so ``TraceEnum_ELBO`` (this structure's
default ELBO) sums them out by variable elimination in O(T K^2): its loss is exactly -log p(x_{1:T}), and the guide
has no latent site. The emitter is a network of the one-hot state. After a sequence's end only the emissions are
masked: the states run on, and their transition probabilities sum to one, so padding changes nothing.
:meth:`log_likelihood` is the same number from the forward algorithm, per sequence, what ``evaluate`` reports.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.markov import forward_log_likelihood
from pyro_vae.models.base import positive_int
from pyro_vae.models.sequences import SequenceStructure
from pyro_vae.networks import mlp


class HMM(SequenceStructure):
    code_site = None  # no continuous code: the states are summed out
    default_elbo = "enum"

    def __init__(self, x_dim: int = 20 * 16, z_dim: int = 50, hidden_dims: Sequence[int] = (100,),
                 activation: str = "relu", num_states: int = 8, image_shape: Optional[Sequence[int]] = (20, 16),
                 likelihood: str = "bernoulli", net: str = "mlp"):
        """``num_states`` hidden states; ``hidden_dims`` the emitter's hidden layers; ``z_dim`` is accepted for the
        common constructor and unused."""
        super().__init__(x_dim, image_shape=image_shape, likelihood=likelihood, net=net)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_states = positive_int("num_states", num_states)
        self.init_logits = nn.Parameter(torch.zeros(self.num_states))
        # sticky at first: states persist, as in most sequences, and the chain can still leave them
        self.trans_logits = nn.Parameter(2.0 * torch.eye(self.num_states))
        self.emitter = mlp([self.num_states, *self.hidden_dims,
                            self.step_likelihood.params_per_pixel * self.step_dim], activation)
        # distinct states from the start, so that they do not stay interchangeable
        self.register_buffer("state_codes", torch.eye(self.num_states))

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_states": self.num_states}

    def emissions(self) -> torch.Tensor:
        """The emitter's outputs for every state, (K, params per step)."""
        return self.emitter(self.state_codes)

    def model(self, x, lengths=None):
        steps, mask = self.sequences(x, lengths)
        pyro.module("hmm", self)
        outputs = self.emissions()
        state = None
        with pyro.plate("data", steps.shape[0]):
            for t in pyro.markov(range(self.num_steps)):
                logits = self.init_logits if state is None else self.trans_logits[state]
                state = pyro.sample(f"s_{t}", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
                self.observe_step(t, outputs[state], steps[:, t], mask[:, t])

    def guide(self, x, lengths=None):
        pass  # every latent site is enumerated in the model

    def log_likelihood(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """log p(x_{1:L}) of each sequence, (N,): the forward algorithm over the same parameters the model uses."""
        steps, mask = self.sequences(x, lengths)
        per_state = self.step_likelihood(self.emissions())  # batch (K,)
        log_emissions = per_state.log_prob(steps.unsqueeze(-2))  # (N, T, K)
        return forward_log_likelihood(torch.log_softmax(self.init_logits, -1),
                                      torch.log_softmax(self.trans_logits, -1), log_emissions, mask.sum(-1))
