"""What the structures over sequences share: batches of sequences of variable length, and one observed site per step.

A sequence data set stores each sequence flat, (N, T * D) with zeros after its end, its shape (T, D) as the data's
``image_shape`` and the length of each sequence beside it (the second element of every batch). A structure over
sequences is then called ``model(x, lengths)`` and ``guide(x, lengths)`` like any structure with conditioning, and
observes step t at the site ``"x_t"`` (``x_0`` to ``x_{T-1}``), masked after the sequence's end, so that
enumeration over a chain of discrete states (``pyro.markov``) stays linear in T. Masked steps add nothing to any
bound: a padded sequence has the likelihood of the unpadded one.
"""
from __future__ import annotations

from typing import Optional

import pyro
import torch

from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.likelihoods import pixel_likelihood
from pyro_vae.markov import step_mask
from pyro_vae.models.base import LatentStructure


def step_site(t: int) -> str:
    """The observed site of step ``t`` (from 0)."""
    return f"x_{t}"


class SequenceStructure(LatentStructure):
    """Base class of the structures over sequences (T, D): subclasses observe each step with :meth:`observe_step`."""

    #: the second argument of model and guide is each sequence's length (the data's ``labels``)
    needs_labels = True
    #: what the structure models: sequences (T, D), not images or vectors
    data_kind = "sequences"

    def __init__(self, x_dim: int, *, image_shape=None, likelihood: str = "bernoulli", net: str = "mlp"):
        if image_shape is None or len(image_shape) != 2:
            shape = "no shape" if image_shape is None else f"the shape {tuple(image_shape)}"
            raise PyroVAEError(f"{type(self).__name__} models sequences (N, T, D), and these data have {shape}; "
                               "give it a sequence data set (--dataset hmm-sequences, or a .npz of (N, T, D) arrays)")
        if net != "mlp":
            raise PyroVAEError(f"{type(self).__name__} builds its own networks over steps; --net {net} is for images")
        super().__init__(x_dim, image_shape=image_shape, likelihood=likelihood, net=net)
        self.num_steps, self.step_dim = self.image_shape
        self.step_likelihood = pixel_likelihood(likelihood, self.step_dim)

    def sequences(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch as (N, T, D) steps and its (N, T) mask of real steps; ``lengths`` None means every sequence is
        T steps long (drawing from the prior)."""
        x = self.check_batch(x)
        if lengths is None:
            lengths = torch.full((x.shape[0],), self.num_steps, dtype=torch.long, device=x.device)
        lengths = torch.as_tensor(lengths, device=x.device)
        if lengths.shape != (x.shape[0],) or lengths.is_floating_point():
            raise InvalidDataError(f"expected one whole-number length per sequence, shape ({x.shape[0]},), got "
                                   f"{tuple(lengths.shape)} {lengths.dtype}")
        if bool((lengths < 1).any() | (lengths > self.num_steps).any()):
            raise InvalidDataError(f"sequence lengths must be from 1 to T = {self.num_steps}, got values from "
                                   f"{int(lengths.min())} to {int(lengths.max())}")
        return x.reshape(x.shape[0], self.num_steps, self.step_dim), step_mask(lengths, self.num_steps)

    def observe_step(self, t: int, outputs: torch.Tensor, x_t: torch.Tensor, mask_t: torch.Tensor) -> torch.Tensor:
        """``pyro.sample("x_t", p(x_t | ...), obs=x_t)`` with the step's likelihood of ``outputs``, masked where the
        sequence has ended (``mask_t``, (N,) booleans)."""
        return pyro.sample(step_site(t), self.step_likelihood(outputs).mask(mask_t), obs=x_t)

    @staticmethod
    def reversed_in_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each sequence of (N, T, D) reversed within its own length (padding stays at the end): applied twice, the
        identity. A recurrent net run over the result reads x_L, ..., x_1 first, whatever the padding."""
        steps = torch.arange(x.shape[1], device=x.device)
        index = torch.where(steps < lengths.reshape(-1, 1), lengths.reshape(-1, 1) - 1 - steps, steps)
        return x.gather(1, index.unsqueeze(-1).expand_as(x))
