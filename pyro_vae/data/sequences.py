"""``hmm-sequences``: binary sequences drawn here from a known hidden Markov model, and their exact likelihood.

The generating process (:func:`generating_hmm`) has K = 4 hidden states with sticky transitions (a state stays with
probability 0.85 and moves to each other one with 0.05), starts in each state with probability 1/4, and emits at
every step D = 16 independent binary features: those of the state's own block of four (features 4k to 4k + 3 for
state k) are on with probability 0.8, the twelve others with 0.1. Each sequence has a length drawn uniformly from
10 to 20 (T = 20 steps, the steps after its end zeros), so masks matter.

The data set (:func:`load_hmm_sequences`) holds 5,000 / 1,000 / 1,000 train / valid / test sequences, drawn once
with a fixed seed and a generator of their own (the same tensors every time, and torch's global random state
untouched), stored as every sequence data set here: flat (N, T * D) with ``image_shape`` (T, D) and the lengths in
``Split.labels``. :func:`generating_log_likelihood` is the exact log p(x_{1:L}) of each sequence of a split under
the generating process (the forward algorithm of :mod:`pyro_vae.markov`): the bound no structure can beat on
average.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pyro_vae.data.types import Dataset, Split
from pyro_vae.markov import forward_log_likelihood, step_mask


NAME = "hmm-sequences"
NUM_STATES = 4
NUM_FEATURES = 16
NUM_STEPS = 20
MIN_LENGTH = 10
#: the probability that the hidden state stays where it is from one step to the next
STAY = 0.85
#: the probability that a feature of the state's own block is on, and that any other feature is
ON, OFF = 0.8, 0.1
SPLIT_SIZES = (5_000, 1_000, 1_000)
#: the sequences are drawn once with this seed, whatever the training seed
SEED = 20_170_327


@dataclass(frozen=True)
class BinaryHMM:
    """A hidden Markov model with binary emissions: p(s_1 = k) = ``init[k]``, p(s_t = j | s_{t-1} = i) =
    ``transition[i, j]``, and p(x_t | s_t = k) = prod_d Bernoulli(x_td; ``emission[k, d]``)."""

    init: torch.Tensor  # (K,)
    transition: torch.Tensor  # (K, K), rows sum to one
    emission: torch.Tensor  # (K, D), probabilities strictly between 0 and 1

    @property
    def num_features(self) -> int:
        return self.emission.shape[1]

    def log_emissions(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_t | s_t = k) of binary steps ``x`` (N, T, D) -> (N, T, K)."""
        x = x.to(self.emission.dtype)
        return x @ self.emission.log().T + (1 - x) @ torch.log1p(-self.emission).T

    def log_likelihood(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The exact log p(x_{1:L_n}) of each sequence, (N,): ``x`` (N, T, D) or flat (N, T * D), ``lengths`` (N,)."""
        steps = x.reshape(len(x), -1, self.num_features)
        return forward_log_likelihood(self.init.log(), self.transition.log(), self.log_emissions(steps), lengths)

    def sample(self, lengths: torch.Tensor, num_steps: int, generator: torch.Generator) -> torch.Tensor:
        """Sequences of the given lengths drawn with ``generator``, (N, num_steps, D) float32, zeros after each end."""
        count = len(lengths)
        state = torch.multinomial(self.init.expand(count, -1), 1, generator=generator).squeeze(-1)
        states = [state]
        for _ in range(1, num_steps):
            state = torch.multinomial(self.transition[state], 1, generator=generator).squeeze(-1)
            states.append(state)
        probs = self.emission[torch.stack(states, 1)]  # (N, T, D)
        x = torch.bernoulli(probs, generator=generator).float()
        return x * step_mask(lengths, num_steps).unsqueeze(-1)


def generating_hmm() -> BinaryHMM:
    """The HMM that draws ``hmm-sequences`` (see the module docstring), in float64."""
    transition = torch.full((NUM_STATES, NUM_STATES), (1 - STAY) / (NUM_STATES - 1), dtype=torch.float64)
    transition.fill_diagonal_(STAY)
    block = torch.arange(NUM_FEATURES) // (NUM_FEATURES // NUM_STATES)
    emission = torch.full((NUM_STATES, NUM_FEATURES), OFF, dtype=torch.float64)
    emission[block == torch.arange(NUM_STATES).unsqueeze(-1)] = ON
    return BinaryHMM(torch.full((NUM_STATES,), 1 / NUM_STATES, dtype=torch.float64), transition, emission)


def load_hmm_sequences(seed: int = SEED) -> Dataset:
    """The ``hmm-sequences`` data set: :data:`SPLIT_SIZES` sequences drawn from :func:`generating_hmm` with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(SPLIT_SIZES)
    lengths = torch.randint(MIN_LENGTH, NUM_STEPS + 1, (total,), generator=generator)
    x = generating_hmm().sample(lengths, NUM_STEPS, generator).reshape(total, -1)
    ends = torch.tensor(SPLIT_SIZES).cumsum(0).tolist()
    splits = [Split(x[start:end], lengths[start:end]) for start, end in zip([0, *ends[:-1]], ends)]
    sizes = " / ".join(f"{size:,}" for size in SPLIT_SIZES)
    description = (f"{NAME}: {sizes} train / valid / test binary sequences of {MIN_LENGTH} to {NUM_STEPS} steps "
                   f"(T = {NUM_STEPS}) of {NUM_FEATURES} features, drawn from a known {NUM_STATES}-state hidden Markov "
                   f"model (seed {seed}); its exact log-likelihood: pyro_vae.data.sequences.generating_log_likelihood")
    return Dataset(NAME, *splits, image_shape=(NUM_STEPS, NUM_FEATURES), description=description, kind="sequences")


def generating_log_likelihood(split: Split) -> torch.Tensor:
    """The exact log-likelihood of each sequence of a split of ``hmm-sequences`` under the process that drew it,
    (N,) float64 nats (divide by ``split.labels`` for nats per step)."""
    return generating_hmm().log_likelihood(split.images.cpu(), split.labels.cpu())
