"""The importance-weighted bound (Burda, Grosse & Salakhutdinov 2016) as a training objective.

    L_K = E[ log (1/K) sum_k w_k ],   w_k = p(x, z_k) / q(z_k | x),   z_k ~ q(z | x) independently,

a lower bound on log p(x) that equals the ELBO at K = 1 and rises towards log p(x) as K grows. The K
particles are drawn in one vectorized pass (a ``pyro.plate`` over particles), and the gradient flows through
the reparameterized draws. Discrete sites marked ``infer={"enumerate": "parallel"}`` are summed exactly inside
each weight, w_k = sum_c p(x, z_kc, c) / q(z_kc | x, c), as in the importance-sampled likelihood of
``pyro_vae.evaluation`` (the same code computes the weights), so the bound holds for the mixture structures
too; q(c | x) cancels from it, and so receives no gradient from it.

Pyro's ``RenyiELBO(alpha=0)`` is the same bound for structures without enumerated sites; this class adds
enumeration, Pyro scales (a beta-VAE's beta, KL warm-up) and a JIT-compiled variant.
"""
from __future__ import annotations

import math
import weakref

import pyro
import pyro.ops.jit
import torch
from pyro.infer import ELBO

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.importance import log_weights


class SurrogateELBO(ELBO):
    """An ELBO whose ``differentiable_loss`` carries the estimator's gradient: ``loss`` is its value, and
    ``loss_and_grads`` steps on it."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.item()


class IWAE_ELBO(SurrogateELBO):
    """``loss`` is minus the importance-weighted bound with ``num_particles`` = K samples, summed over the batch
    (the convention of Pyro's ELBOs: SVI steps on the batch total). Needs every sampled latent reparameterized
    or enumerated; ``max_plate_nesting`` is the number of plates around the sites (1 for a data plate)."""

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1, jit: bool = False,
                 ignore_jit_warnings: bool = True):
        if num_particles < 1:
            raise PyroVAEError(f"the number of particles must be positive, got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True, ignore_jit_warnings=ignore_jit_warnings)
        self.jit = jit
        self._compiled = None

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("IWAE_ELBO computes its weights in one vectorized pass, not trace by trace")

    def _bound(self, model, guide, *args) -> torch.Tensor:

        particle_dim = -self.max_plate_nesting - 1
        penalties = []
        log_w = log_weights(model, guide, args, self.num_particles, particle_dim, scaled=True,
                             penalties=penalties)
        # (enumerated values, K, batch): sum the values inside each weight, then log-mean-exp over K. Without
        # enumerated sites there is one value, and its log-sum-exp is itself, bit for bit (and so is its gradient).
        log_w = log_w[0] if log_w.shape[0] == 1 else log_w.logsumexp(0)
        bound = (log_w.logsumexp(0) - math.log(self.num_particles)).sum()
        # training terms (beta-TCVAE's, FactorVAE's) join the objective outside the weights, averaged over the
        # particles: inside, they would reweight the particles, and a term meant for one network would move others
        for penalty in penalties:
            bound = bound + penalty.reshape((-1,) + penalty.shape[-2:]).mean(-2).sum()
        return bound

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if kwargs:
            raise PyroVAEError("IWAE_ELBO takes the programs' arguments by position only")
        if not self.jit:
            return -self._bound(model, guide, *args)
        if self._compiled is None:
            weakself = weakref.ref(self)

            # As Pyro's JitTrace_ELBO: parameters become inputs of the traced graph, and the draws inside
            # stay random on every call.
            @pyro.ops.jit.trace(ignore_warnings=self.ignore_jit_warnings)
            def compiled(*args, **kwargs):
                return -weakself()._bound(model, guide, *args)

            self._compiled = compiled
        return self._compiled(*args, _pyro_model_id=id(model), _pyro_guide_id=id(guide))
