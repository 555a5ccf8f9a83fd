"""The ELBO objectives SVI can train with, by name."""
from __future__ import annotations

import warnings
from typing import Optional

from pyro.infer import (ELBO, JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceGraph_ELBO, JitTraceMeanField_ELBO,
                        RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO)

from pyro_vae.catalog import ELBO_HELP, ELBO_NAMES, ELBO_PARAMETERS, MULTI_SAMPLE_ELBOS, check_registry  # noqa: F401 (ELBO_HELP re-exported)
from pyro_vae.config import check_elbo_parameters
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.iwae import IWAE_ELBO
from pyro_vae.inference.multisample import (CIWAE_ELBO, DReG_ELBO, MIWAE_ELBO, PIWAE_ELBO, RWS_ELBO, STL_ELBO,
                                            TMC_ELBO, VIMCO_ELBO)


class CompiledOnceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro's ``JitTraceMeanField_ELBO``, compiled once instead of at every step.

    Pyro 1.9.2's ``differentiable_loss`` builds its compiled loss when ``self._loss_and_surrogate_loss`` is None
    but stores it as ``self._differentiable_loss``, so every call builds a new one and traces the model and guide
    again: a step of the default VAE took 29 ms against TraceMeanField_ELBO's 6.6 ms. Setting the attribute Pyro
    looks for after the first call lets it reuse the compiled loss (harmless should Pyro look for the right one).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


#: name -> (plain class, JIT-compiled class)
ELBOS = {
    "trace": (Trace_ELBO, JitTrace_ELBO),  # Monte Carlo KL: log p(z) - log q(z) at the sampled z
    "meanfield": (TraceMeanField_ELBO, CompiledOnceMeanField_ELBO),  # analytic KL where Pyro knows it
    "enum": (TraceEnum_ELBO, JitTraceEnum_ELBO),  # sites marked for enumeration summed out exactly
    "tracegraph": (TraceGraph_ELBO, JitTraceGraph_ELBO),  # score function, Rao-Blackwellized, with baselines
    "iwae": (IWAE_ELBO, IWAE_ELBO),  # importance-weighted bound with K = num_particles; IWAE_ELBO(jit=True) compiles
    # the multi-sample estimators after 2016 (inference/multisample.py), not compiled
    "stl": (STL_ELBO, None),
    "dreg": (DReG_ELBO, None),
    "miwae": (MIWAE_ELBO, None),
    "piwae": (PIWAE_ELBO, None),
    "ciwae": (CIWAE_ELBO, None),
    "rws": (RWS_ELBO, None),
    "vimco": (VIMCO_ELBO, None),
    "renyi": (RenyiELBO, None),  # Pyro's, per data point; alpha = 0 is the IWAE bound, alpha -> 1 the ELBO
    "tmc": (TMC_ELBO, None),
}

check_registry("ELBO", ELBOS, ELBO_NAMES)




def make_elbo(name: str = "trace", *, jit: bool = False, num_particles: int = 1,
              max_plate_nesting: Optional[int] = None, alpha: Optional[float] = None,
              outer_particles: Optional[int] = None, ciwae_beta: Optional[float] = None) -> ELBO:
    """An ELBO by name; ``num_particles`` samples are drawn in one vectorized pass.

    ``alpha`` is the Renyi bound's (default 0.5; >= 0, not 1), ``outer_particles`` the M of MIWAE and PIWAE
    (M bounds of K = ``num_particles`` draws; default 8), ``ciwae_beta`` CIWAE's weight of the ELBO (default 0.5).

    ``max_plate_nesting`` (the number of nested plates, see ``evaluation.max_plate_nesting``) tells
    enumeration which tensor dimensions are free; without it Pyro guesses by running the model once.
    """
    if name not in ELBOS:
        raise PyroVAEError(f"unknown ELBO {name!r}; choose one of {', '.join(ELBOS)}")
    if num_particles < 1:
        raise PyroVAEError(f"the number of particles must be positive, got {num_particles}")
    given = {"alpha": alpha, "outer_particles": outer_particles, "ciwae_beta": ciwae_beta}
    check_elbo_parameters(name, given)
    given = {option: ELBO_PARAMETERS[option][1] if value is None else value for option, value in given.items()}
    cls = ELBOS[name][1 if jit else 0]
    if cls is None:
        raise PyroVAEError(f"the {name} objective has no JIT-compiled version; train it without --jit")
    if name in MULTI_SAMPLE_ELBOS:
        plates = 1 if max_plate_nesting is None else max_plate_nesting
        return cls(num_particles, plates, outer_particles=given["outer_particles"], beta=given["ciwae_beta"])
    if name == "renyi":
        return RenyiELBO(alpha=given["alpha"], num_particles=num_particles, vectorize_particles=num_particles > 1,
                         max_plate_nesting=1 if max_plate_nesting is None else max_plate_nesting)
    kwargs = {"num_particles": num_particles, "vectorize_particles": num_particles > 1}
    if max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if name == "enum":
        kwargs["strict_enumeration_warning"] = False  # a structure without discrete sites is fine here
    if jit:
        kwargs["ignore_jit_warnings"] = True
        # torch >= 2.9 marks torch.jit.trace deprecated; Pyro's JIT ELBOs still rely on it.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace. is deprecated", category=FutureWarning)
    if name == "iwae":
        return IWAE_ELBO(num_particles, 1 if max_plate_nesting is None else max_plate_nesting, jit=jit)
    return cls(**kwargs)
