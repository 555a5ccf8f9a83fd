"""Effect handlers that rescale log-densities: the KL weight of beta-VAEs and KL warm-up, and its undoing."""
from __future__ import annotations

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class scale_latents(Messenger):
    """Multiply the log-density of every latent (non-observed) sample site by ``factor``.

    Applied to both model and guide it scales log p(z) - log q(z | x), i.e. the KL part of the ELBO, and
    leaves the reconstruction term log p(x | z) alone: the KL warm-up of Sonderby et al. (2016).
    """

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = msg["scale"] * self.factor


class unscaled(Messenger):
    """Undo every scale inside it (beta, warm-up), so that an ELBO measures the generative model itself.

    Messengers process a site from the innermost outwards, so this one, entered outermost, has the last word.
    """

    def _process_message(self, msg):
        if msg["type"] == "sample":
            msg["scale"] = 1.0
