"""The ELBO objectives SVI can train with, by name."""
from __future__ import annotations

import warnings

from pyro.infer import ELBO, JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.errors import PyroVAEError

#: name -> (plain class, JIT-compiled class)
ELBOS = {
    "trace": (Trace_ELBO, JitTrace_ELBO),  # Monte Carlo KL: log p(z) - log q(z) at the sampled z
    "meanfield": (TraceMeanField_ELBO, JitTraceMeanField_ELBO),  # analytic KL where Pyro knows it
}


def make_elbo(name: str = "trace", *, jit: bool = False, num_particles: int = 1) -> ELBO:
    """An ELBO by name; ``num_particles`` samples are drawn in one vectorized pass."""
    if name not in ELBOS:
        raise PyroVAEError(f"unknown ELBO {name!r}; choose one of {', '.join(ELBOS)}")
    if num_particles < 1:
        raise PyroVAEError(f"the number of particles must be positive, got {num_particles}")
    cls = ELBOS[name][1 if jit else 0]
    kwargs = {"num_particles": num_particles, "vectorize_particles": num_particles > 1}
    if jit:
        kwargs["ignore_jit_warnings"] = True
        # torch >= 2.9 marks torch.jit.trace deprecated; Pyro's JIT ELBOs still rely on it.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace. is deprecated", category=FutureWarning)
    return cls(**kwargs)
