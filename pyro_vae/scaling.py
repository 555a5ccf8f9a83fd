"""Effect handlers that rescale log-densities: the KL weight of beta-VAEs and KL warm-up, and its undoing;
and training penalties, factors of the training objective that are not part of the generative model."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

#: the ``infer`` flag of a :func:`penalty` site
PENALTY = "training_penalty"
#: the ``infer`` flag of a penalty that :class:`scale_latents` (KL warm-up) scales like the KL it belongs to
WARMS_UP = "scaled_like_the_kl"

#: how many measurements (:class:`unscaled`, :func:`measuring`) are under way: they leave penalties out
_measurements = 0


def _count_measurement(change: int) -> None:
    global _measurements
    _measurements += change


@contextlib.contextmanager
def measuring() -> Iterator[None]:
    """Inside, a :func:`penalty` given as a function is not computed (:func:`penalties_wanted` is False): every
    measurement of the generative model leaves penalties out anyway, and FactorVAE's discriminator made an
    importance-sampled NLL 13 times slower."""
    _count_measurement(1)
    try:
        yield
    finally:
        _count_measurement(-1)


def penalties_wanted() -> bool:
    """Whether a model should compute its training penalties: False while the model is only measured."""
    return _measurements == 0


def penalty(name: str, log_factor: torch.Tensor | Callable[[], torch.Tensor], *, warms_up: bool = True) -> None:
    """``pyro.factor(name, log_factor)`` for a term of the *training objective* only, such as beta-TCVAE's
    -(beta - 1) * total correlation: SVI maximises E_q[log p(x, z) + log_factor - log q(z | x)], while every
    measurement of the generative model (ELBO, importance-sampled log p(x)) leaves the site out
    (:func:`is_penalty`; :class:`unscaled` gives it scale 0).

    A penalty is a reweighting of the KL term, so KL warm-up (:class:`scale_latents`) scales it with the KL;
    ``warms_up=False`` keeps the whole weight of a term that trains a network of its own instead, such as
    FactorVAE's discriminator, which should learn from the first step.

    ``log_factor`` may also be a function of no arguments that returns the tensor: it is then called only when
    the penalty is wanted, so that measurements skip its work (:func:`penalties_wanted`) and the site is left
    out of their traces."""
    if callable(log_factor):
        if not penalties_wanted():
            return
        log_factor = log_factor()
    unit = dist.Unit(log_factor)
    pyro.sample(name, unit, obs=unit.sample(), infer={"is_auxiliary": True, PENALTY: True, WARMS_UP: warms_up})


def is_penalty(site: dict) -> bool:
    return bool(site["infer"].get(PENALTY))


class scale_latents(Messenger):
    """Multiply the log-density of every latent (non-observed) sample site, and of every :func:`penalty` that
    warms up, by ``factor``.

    Applied to both model and guide it scales log p(z) - log q(z | x), i.e. the KL part of the ELBO, and
    leaves the reconstruction term log p(x | z) alone: the KL warm-up of Sonderby et al. (2016). Penalties
    reweight parts of that KL (beta-TCVAE's total correlation), so they rise with it.
    """

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] != "sample" or site_is_subsample(msg):
            return
        if not msg["is_observed"] or msg["infer"].get(WARMS_UP):
            msg["scale"] = msg["scale"] * self.factor


class unscaled(Messenger):
    """Undo every scale inside it (beta, warm-up) and drop training penalties (scale 0), so that an ELBO
    measures the generative model itself.

    Messengers process a site from the innermost outwards, so this one, entered outermost, has the last word.
    Inside it models skip their penalties' work (:func:`measuring`).
    """

    def __enter__(self):
        _count_measurement(1)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            _count_measurement(-1)

    def _process_message(self, msg):
        if msg["type"] == "sample":
            msg["scale"] = 0.0 if msg["infer"].get(PENALTY) else 1.0
