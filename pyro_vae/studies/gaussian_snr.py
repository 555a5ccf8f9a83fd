"""The Gaussian problem on which Rainforth et al. 2018 (section 4) derive and show how the IWAE gradients' SNR
scales with K, and on which Tucker et al. 2019 show DReG's: a model and a guide as Pyro programs whose optimum is
known in closed form, with their parameters moved a little off it.

Model: z ~ N(mu, I), x | z ~ N(z, I) in D dimensions, so p(x) = N(mu, 2 I) and p(z | x) = N((x + mu) / 2, I / 2).
Guide: q(z | x) = N(A x + b, (2/3) I), A a D x D matrix. Data: N points drawn from p(x) with a true mu ~ N(0, I).
The maximum-likelihood mu is the data's mean; the guide that the IWAE bound (and the ELBO) favour at that mu
has A = I / 2 and b = mu / 2, the exact posterior's mean (its variance 2/3 is held fixed, so q is never exact).
Every parameter is then moved by independent N(0, perturbation^2) noise, so that the expected gradients are small
but not zero, as in the papers (our reading of their setup; their figures were not available to us).

With the model's parameters fixed near the optimum, the IWAE guide gradient's expectation shrinks as 1/K while its
standard deviation shrinks as 1/sqrt(K): SNR ~ K^(-1/2). The model's expectation tends to the gradient of
log p(x), its standard deviation to 0 as 1/sqrt(K): SNR ~ K^(+1/2). DReG removes the guide's score term, whose
variance does not shrink with K, and its guide SNR grows instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import PyroVAEError

#: the guide's fixed variance in Rainforth et al.'s problem
GUIDE_VARIANCE = 2.0 / 3.0


@dataclass
class GaussianProblem:
    """The data and the perturbed starting parameters; :meth:`model` and :meth:`guide` are the Pyro programs,
    called with the data ``x`` (N, D). Their parameters (``mu``; ``A``, ``b``) start at :attr:`start` in every
    scope of Pyro's parameter store."""

    x: torch.Tensor
    true_mu: torch.Tensor
    start: dict

    @classmethod
    def make(cls, dim: int = 20, num_data: int = 1024, perturbation: float = 0.01, seed: int = 0) -> "GaussianProblem":
        for value, name in ((dim, "the dimension D"), (num_data, "the number of data points")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PyroVAEError(f"{name} must be a positive whole number, got {value!r}")
        if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation >= 0):
            raise PyroVAEError(f"the perturbation must be a finite number >= 0, got {perturbation!r}")
        generator = torch.Generator().manual_seed(seed)
        true_mu = torch.randn(dim, generator=generator)
        x = true_mu + math.sqrt(2.0) * torch.randn(num_data, dim, generator=generator)
        mu = x.mean(0)
        optimum = {"mu": mu, "A": torch.eye(dim) / 2, "b": mu / 2}
        start = {name: value + perturbation * torch.randn(value.shape, generator=generator)
                 for name, value in optimum.items()}
        return cls(x, true_mu, start)

    def model(self, x: torch.Tensor) -> None:
        mu = pyro.param("mu", self.start["mu"].clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, 1.0).expand(x.shape).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        a = pyro.param("A", self.start["A"].clone())
        b = pyro.param("b", self.start["b"].clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x @ a.T + b, math.sqrt(GUIDE_VARIANCE)).to_event(1))

    def log_evidence(self, mu: torch.Tensor) -> torch.Tensor:
        """log p(x) = sum over the data of log N(x_n; mu, 2 I), in closed form."""
        return dist.Normal(mu, math.sqrt(2.0)).log_prob(self.x).sum()
