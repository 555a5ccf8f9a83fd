"""Sequences of variable length, and the forward algorithm of a hidden Markov model.

A batch of sequences is stored flat, (N, T * D), as every data set here is (zeros after each sequence's end), with
the length of each sequence beside it; :func:`step_mask` says which steps are real. :func:`forward_log_likelihood`
is the HMM's exact log p(x_{1:T}) by the forward recursion (Rabiner 1989) in log space, used by the procedural data
set (the likelihood of its generating process) and by the ``hmm`` structure (its exact likelihood).
"""
from __future__ import annotations

import torch


def step_mask(lengths: torch.Tensor, num_steps: int) -> torch.Tensor:
    """(N, T) booleans: step t of sequence n is real (t < lengths[n])."""
    steps = torch.arange(num_steps, device=lengths.device)
    return steps < lengths.reshape(-1, 1)


def forward_log_likelihood(log_init: torch.Tensor, log_trans: torch.Tensor, log_emissions: torch.Tensor,
                           lengths: torch.Tensor) -> torch.Tensor:
    """log p(x_{1:L_n}) of each of N sequences under an HMM with K states, (N,).

    ``log_init`` (K,) log p(s_1); ``log_trans`` (K, K) log p(s_t = j | s_{t-1} = i) at [i, j]; ``log_emissions``
    (N, T, K) log p(x_t | s_t = k) of each step; ``lengths`` (N,) whole numbers from 1 to T: the steps after a
    sequence's end are left out (their emissions may be anything)."""
    num_steps = log_emissions.shape[1]
    mask = step_mask(lengths, num_steps)
    alpha = log_init + log_emissions[:, 0]  # (N, K): log p(x_1, s_1)
    for t in range(1, num_steps):
        step = torch.logsumexp(alpha.unsqueeze(-1) + log_trans, dim=-2) + log_emissions[:, t]
        alpha = torch.where(mask[:, t:t + 1], step, alpha)
    return torch.logsumexp(alpha, dim=-1)
