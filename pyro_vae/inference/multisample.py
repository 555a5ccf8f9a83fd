"""Multi-sample gradient estimators after 2016, as Pyro ELBOs that SVI trains with, per data point.

With K draws z_k ~ q(z | x) and log weights log w_k = log p(x, z_k) - log q(z_k | x), each class below computes a
bound and a surrogate whose gradient is its estimator (``loss_and_grads`` steps on the surrogate; ``loss`` is minus
the bound, summed over the batch as Pyro's ELBOs do):

* :class:`STL_ELBO`, "sticking the landing" (Roeder, Wu & Duvenaud 2017): the ELBO averaged over K draws, with
  q's parameters held fixed inside log q, so that only the pathwise term reaches the guide; its variance vanishes
  when q equals the posterior.
* :class:`DReG_ELBO`, doubly reparameterized IWAE (Tucker, Lawson, Gu & Maddison 2019): the IWAE bound; the
  model's gradient is IWAE's, sum_k w~_k grad log w_k, and the guide's sum_k w~_k^2 d log w_k / dz_k dz_k / dphi,
  with w~ the normalized weights. The same expectation as IWAE's, without its score-function term.
* :class:`MIWAE_ELBO`, :class:`CIWAE_ELBO`, :class:`PIWAE_ELBO` (Rainforth et al. 2018): the mean of M IWAE
  bounds of K draws each; beta ELBO + (1 - beta) IWAE on the same K draws; and the model trained on the IWAE
  bound of all M K draws while the guide is trained on MIWAE(M, K).
* :class:`RWS_ELBO`, reweighted wake-sleep (Bornschein & Bengio 2015), wake phases only: the model ascends the IWAE
  bound (draws held fixed), the guide the self-normalized estimate sum_k w~_k grad log q(z_k | x). Pyro's
  ``ReweightedWakeSleep`` weighs one whole mini-batch per particle ("mini-batch training is not supported yet"),
  so this one weighs each data point.
* :class:`VIMCO_ELBO` (Mnih & Rezende 2016): the IWAE bound of K discrete draws, its score function with the
  leave-one-out baselines L_{-k} (log w_k replaced by the mean of the other log weights).
* :class:`TMC_ELBO`: Pyro's ``TraceTMC_ELBO`` with every reparameterized guide site drawn K times (tensor Monte
  Carlo; for one latent site it is the IWAE bound).

Sites a structure marks for enumeration in its model are summed inside each weight, as in :mod:`.iwae`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from pyro import poutine
from pyro.infer import TraceTMC_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.importance import weight_parts
from pyro_vae.inference.iwae import SurrogateELBO
from pyro_vae.inference.sites import DATA_PLATE


def _log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return log_w.logsumexp(dim) - math.log(log_w.shape[dim])


def _summed(values: torch.Tensor) -> torch.Tensor:
    """(enumerated values, K, batch) -> (K, batch): enumerated values summed inside each weight."""
    return values[0] if values.shape[0] == 1 else values.logsumexp(0)


class SampledDiscrete(Messenger):
    """Draws a guide's discrete sites instead of enumerating them."""

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        msg["infer"] = {key: value for key, value in msg["infer"].items() if key != "enumerate"}


class MultiSampleELBO(SurrogateELBO):
    """What the classes here share: K vectorized draws per data point (``num_particles``), the data plate and
    ``max_plate_nesting`` plates inside the particles' plate, and a (bound, surrogate) pair per call."""

    #: evaluate log q with q's parameters held fixed (sticking the landing)
    detach_guide = False
    #: cut the draws from the graph (wake-sleep)
    detach_draws = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs):
        if num_particles < 1:
            raise PyroVAEError(f"the number of particles must be positive, got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True, ignore_jit_warnings=True)

    def draws(self) -> int:
        """The draws per data point of one estimate."""
        return self.num_particles

    def guide_for(self, guide: Callable) -> Callable:
        return guide

    def parts(self, model: Callable, guide: Callable, args: tuple, penalties: Optional[list] = None):
        return weight_parts(model, self.guide_for(guide), args, self.draws(), -self.max_plate_nesting - 1,
                            scaled=True, penalties=penalties, detach_guide=self.detach_guide,
                            detach_draws=self.detach_draws)

    def bound_and_surrogate(self, model: Callable, guide: Callable, *args) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} computes its weights in one vectorized pass")

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Minus the bound in value; its gradient is the estimator's."""
        bound, surrogate = self.bound_and_surrogate(model, guide, *args, **kwargs)
        return -(bound.detach() + surrogate - surrogate.detach())


def _with_penalties(value: torch.Tensor, penalties: list) -> torch.Tensor:
    # training terms (beta-TCVAE's) join outside the weights, averaged over the draws, as in IWAE_ELBO
    for penalty in penalties:
        value = value + penalty.reshape((-1,) + penalty.shape[-2:]).mean(-2).sum()
    return value


class STL_ELBO(MultiSampleELBO):
    """The ELBO of K draws (their mean) whose guide gradient is the pathwise term alone (Roeder et al. 2017)."""

    detach_guide = True

    def bound_and_surrogate(self, model, guide, *args):
        penalties = []
        parts = self.parts(model, guide, args, penalties)
        log_w = _summed(parts.log_p - parts.log_q)
        elbo = _with_penalties(log_w.mean(0).sum(), penalties)
        return elbo, elbo


class DReG_ELBO(MultiSampleELBO):
    """The IWAE bound of K draws with doubly reparameterized guide gradients (Tucker et al. 2019).

    log q is evaluated with q's parameters held fixed, so the guide's gradient comes through z alone; a hook on
    each draw z_k multiplies the gradient arriving there by w~_k, which turns IWAE's sum_k w~_k d log w_k / dz_k
    into DReG's sum_k w~_k^2 d log w_k / dz_k, while the model's parameters keep IWAE's gradient."""

    detach_guide = True

    def bound_and_surrogate(self, model, guide, *args):
        parts = self.parts(model, guide, args)
        log_w = _summed(parts.log_p - parts.log_q)
        weights = torch.softmax(log_w.detach(), dim=0)  # (K, batch)
        particle_dim = -self.max_plate_nesting - 1
        for name, site in parts.guide_trace.nodes.items():
            value = site.get("value")
            if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site) \
                    or not isinstance(value, torch.Tensor) or not value.requires_grad:
                continue
            frames = {frame.name: frame.dim for frame in site["cond_indep_stack"]}
            batch_dims = value.dim() - site["fn"].event_dim
            shape = [1] * value.dim()
            shape[batch_dims + particle_dim] = weights.shape[0]
            shape[batch_dims + frames[DATA_PLATE]] = weights.shape[1]
            value.register_hook(lambda grad, w=weights.reshape(shape): grad * w)
        bound = _log_mean_exp(log_w).sum()
        return bound, (weights * log_w).sum()


class MIWAE_ELBO(MultiSampleELBO):
    """The mean of M independent IWAE bounds of K draws each (Rainforth et al. 2018; M = 1 is IWAE, K = 1 the
    ELBO of M draws)."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, outer_particles: int = 8, **kwargs):
        super().__init__(num_particles, max_plate_nesting)
        if outer_particles < 1:
            raise PyroVAEError(f"the number of outer particles M must be positive, got {outer_particles}")
        self.outer_particles = outer_particles

    def draws(self) -> int:
        return self.outer_particles * self.num_particles

    def _log_w(self, model, guide, args) -> torch.Tensor:
        parts = self.parts(model, guide, args)
        return _summed(parts.log_p - parts.log_q)  # (M K, batch), the draws of one bound next to each other

    def _miwae(self, log_w: torch.Tensor) -> torch.Tensor:
        grouped = log_w.reshape(self.outer_particles, self.num_particles, -1)
        return _log_mean_exp(grouped, 1).mean(0).sum()

    def bound_and_surrogate(self, model, guide, *args):
        bound = self._miwae(self._log_w(model, guide, args))
        return bound, bound


class CIWAE_ELBO(MultiSampleELBO):
    """beta ELBO + (1 - beta) IWAE bound on the same K draws (Rainforth et al. 2018)."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, beta: float = 0.5, **kwargs):
        super().__init__(num_particles, max_plate_nesting)
        if not 0 <= beta <= 1:
            raise PyroVAEError(f"CIWAE's beta mixes the ELBO and the IWAE bound and lies in [0, 1], got {beta}")
        self.beta = beta

    def bound_and_surrogate(self, model, guide, *args):
        parts = self.parts(model, guide, args)
        log_w = _summed(parts.log_p - parts.log_q)
        bound = (self.beta * log_w.mean(0) + (1 - self.beta) * _log_mean_exp(log_w)).sum()
        return bound, bound


def parameters_of(trace) -> list:
    """The unconstrained parameter tensors a trace read, in order, once each."""
    found = {}
    for site in trace.nodes.values():
        if site["type"] == "param":
            value = site["value"]
            value = value.unconstrained() if hasattr(value, "unconstrained") else value
            found.setdefault(id(value), value)
    return list(found.values())


class PIWAE_ELBO(MIWAE_ELBO):
    """The model's parameters ascend the IWAE bound of all M K draws, the guide's MIWAE(M, K) on the same draws
    (Rainforth et al. 2018). A parameter both programs read (a VampPrior's encoder) counts as the guide's."""

    def bound_and_surrogate(self, model, guide, *args):
        log_w = self._log_w(model, guide, args)
        return _log_mean_exp(log_w).sum(), self._miwae(log_w)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return -float(self.bound_and_surrogate(model, guide, *args)[0])

    def differentiable_loss(self, model, guide, *args, **kwargs):
        raise PyroVAEError("PIWAE gives the model and the guide the gradients of two different bounds, so it has "
                           "no single differentiable loss; train it with SVI (loss_and_grads)")

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        parts = self.parts(model, guide, args)
        log_w = _summed(parts.log_p - parts.log_q)
        iwae, miwae = _log_mean_exp(log_w).sum(), self._miwae(log_w)
        guide_params = [p for p in parameters_of(parts.guide_trace) if p.requires_grad]
        seen = {id(p) for p in guide_params}
        model_params = [p for p in parameters_of(parts.model_trace) if p.requires_grad and id(p) not in seen]
        for loss, params in ((-miwae, guide_params), (-iwae, model_params)):
            if not params or not loss.requires_grad:
                continue
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            for param, grad in zip(params, grads):
                if grad is not None:
                    param.grad = grad if param.grad is None else param.grad + grad
        return -iwae.item()


class RWS_ELBO(MultiSampleELBO):
    """Reweighted wake-sleep, wake phases (Bornschein & Bengio 2015), per data point: the model ascends the IWAE
    bound of K draws held fixed, the guide sum_k w~_k log q(z_k | x) (the self-normalized importance-sampled
    gradient of -KL(p(z | x) || q(z | x))). Any site, discrete or continuous: no draw is differentiated."""

    detach_draws = True

    def guide_for(self, guide):
        return SampledDiscrete()(guide)

    def bound_and_surrogate(self, model, guide, *args):
        parts = self.parts(model, guide, args)
        log_q = parts.log_q[0]  # the guide's draws are not enumerated: the same along any model-enumerated dim
        log_w = _summed(parts.log_p - parts.log_q.detach())
        weights = torch.softmax(log_w.detach(), dim=0)
        bound = _log_mean_exp(log_w).sum()
        return bound, bound + (weights * log_q).sum()


class VIMCO_ELBO(MultiSampleELBO):
    """The IWAE bound of K discrete draws and its score-function gradient with VIMCO's leave-one-out baselines
    (Mnih & Rezende 2016): the learning signal of draw k is L - L_{-k}, with L_{-k} the bound after log w_k is
    replaced by the mean of the other K - 1 log weights. Needs K >= 2; uses K^2 numbers per data point."""

    def __init__(self, num_particles: int = 2, max_plate_nesting: int = 1, **kwargs):
        if num_particles < 2:
            raise PyroVAEError(f"VIMCO's leave-one-out baselines need at least 2 particles, got {num_particles}")
        super().__init__(num_particles, max_plate_nesting)

    def guide_for(self, guide):
        return SampledDiscrete()(guide)

    def bound_and_surrogate(self, model, guide, *args):
        parts = self.parts(model, guide, args)
        log_q = parts.log_q[0]
        log_w = _summed(parts.log_p - parts.log_q)  # (K, batch)
        bound = _log_mean_exp(log_w)
        signal = (bound - leave_one_out(log_w.detach())).detach()
        return bound.sum(), bound.sum() + (signal * log_q).sum()


def leave_one_out(log_w: torch.Tensor) -> torch.Tensor:
    """L_{-k} for each k: log-mean-exp over j of log w_j, with log w_k replaced by the mean of the others; (K, ...)."""
    k = log_w.shape[0]
    others_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).reshape((k, k) + (1,) * (log_w.dim() - 1))
    replaced = torch.where(eye, others_mean.unsqueeze(1), log_w.unsqueeze(0))  # [k, j]
    return _log_mean_exp(replaced, 1)


class TMC_ELBO(SurrogateELBO):
    """Pyro's ``TraceTMC_ELBO``, with every reparameterized latent site of the guide drawn ``num_particles`` times
    (``infer={"enumerate": "parallel", "num_samples": K, "expand": False}``) and the draws of all sites combined as
    a tensor (tensor Monte Carlo). For a structure with one latent site it is the IWAE bound of K draws."""

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs):
        if num_particles < 1:
            raise PyroVAEError(f"the number of particles must be positive, got {num_particles}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.tmc = TraceTMC_ELBO(max_plate_nesting=max_plate_nesting, strict_enumeration_warning=False)

    def _tmc_guide(self, guide: Callable) -> Callable:
        k = self.num_particles

        def config(site):
            if site["is_observed"] or not getattr(site["fn"], "has_rsample", False):
                return {}
            return {"enumerate": "parallel", "num_samples": k, "expand": False}

        return poutine.infer_config(guide, config)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError("TMC_ELBO runs Pyro's TraceTMC_ELBO")

    def differentiable_loss(self, model, guide, *args, **kwargs):
        return self.tmc.differentiable_loss(model, self._tmc_guide(guide), *args, **kwargs)


__all__ = ["CIWAE_ELBO", "DReG_ELBO", "MIWAE_ELBO", "MultiSampleELBO", "PIWAE_ELBO", "RWS_ELBO", "STL_ELBO",
           "SampledDiscrete", "TMC_ELBO", "VIMCO_ELBO", "leave_one_out", "parameters_of"]
