"""Pixel likelihoods p(x | z) beyond the Bernoulli, each a correctly normalised distribution, and bits per dimension.

Issue 11 (grey and colour data) builds its ``--likelihood`` option on these; they are usable now from a
structure's own decoder. Pixels are floats in [0, 1]; 8-bit data are stored as ``k / 255`` for k in 0..255.

* ``continuous-bernoulli``: Loaiza-Ganem & Cunningham (2019), the density on [0, 1] that the Bernoulli
  log-likelihood of grey pixels is *not* (it lacks the normaliser C(lambda)); Pyro's ``ContinuousBernoulli``.
* ``gaussian``: Normal(mu, sigma) with sigma learned (per pixel or shared); a density on the real line.
* ``discretized-logistic``: the probability of the 8-bit value k is the mass a logistic(mu, s) puts on the
  bin [k - 1/2, k + 1/2] / 255, the two edge bins taking the tails (PixelCNN++, Salimans et al. 2017); a
  distribution over the 256 values, so its NLL is directly in nats of the discrete data.

Bits per dimension of 8-bit data: a discrete likelihood's NLL in nats over D dimensions is NLL / (D ln 2).
A continuous density on [0, 1] is compared after uniform dequantization, x = (k + u) / 256: then
-log P(k) <= -log p(x) + D log 256, so its bits per dimension are NLL / (D ln 2) + 8 (:func:`bits_per_dim`).
"""
from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.nn.functional import logsigmoid, softplus

from pyro_vae.catalog import LIKELIHOOD_NAMES, check_registry
from pyro_vae.data import is_binary
from pyro_vae.errors import PyroVAEError

#: the 8-bit grid: values k / LEVELS_MAX for k in 0..LEVELS_MAX
LEVELS_MAX = 255


class DiscretizedLogistic(TorchDistribution):
    """P(x = k / 255) = F((x + 1/510 - loc) / scale) - F((x - 1/510 - loc) / scale) with F the logistic CDF,
    F(+inf) = 1 for k = 255 and F(-inf) = 0 for k = 0, so the 256 probabilities sum to one exactly.

    Computed in log space: log(F(u) - F(l)) = log F(u) + log(1 - F(l)) + log(1 - exp(l - u)), stable in both
    tails; where a bin's mass underflows (below e^-30), the density at its centre times the bin width stands in.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.interval(0.0, 1.0)  # the values k / 255; log_prob rounds to the nearest one
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        super(DiscretizedLogistic, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = torch.round(value * LEVELS_MAX)
        x = k / LEVELS_MAX
        half_bin = 0.5 / LEVELS_MAX
        inv_scale = 1.0 / self.scale
        upper = (x + half_bin - self.loc) * inv_scale
        lower = (x - half_bin - self.loc) * inv_scale
        log_cdf_upper = logsigmoid(upper)  # log F(upper)
        log_sf_lower = logsigmoid(-lower)  # log (1 - F(lower))
        # log (F(upper) - F(lower)) for the inner bins, stable in both tails:
        # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u))
        log_mass = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(lower - upper))
        centre = (x - self.loc) * inv_scale
        log_density = centre - 2 * softplus(centre) - torch.log(self.scale) + math.log(2 * half_bin)
        inner = torch.where(torch.isfinite(log_mass) & (log_mass > -30), log_mass, log_density)
        return torch.where(k <= 0, log_cdf_upper, torch.where(k >= LEVELS_MAX, log_sf_lower, inner))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            return (torch.round(x.clamp(0, 1) * LEVELS_MAX) / LEVELS_MAX)

    @property
    def mean(self) -> torch.Tensor:
        """The logistic's location, clamped to [0, 1] (the distribution's own mean is near it for small scales)."""
        return self.loc.clamp(0, 1)


#: name -> whether the likelihood is a distribution over the 256 values of 8-bit data (else a density on [0, 1]
#: or the real line, compared in bits per dimension after uniform dequantization)
DISCRETE_LIKELIHOODS = {"bernoulli": True, "continuous-bernoulli": False, "gaussian": False,
                        "gaussian-shared": False, "discretized-logistic": True}
LIKELIHOODS = tuple(DISCRETE_LIKELIHOODS)
check_registry("likelihood", LIKELIHOODS, LIKELIHOOD_NAMES)
#: the smallest scale of the Gaussian and the logistic (a scale that may shrink to 0 makes the density unbounded)
MIN_SCALE = 1e-3


BINARY_ONLY = ("the Bernoulli likelihood needs binary pixels (0 or 1); binarize the data first (--binarize dynamic "
               "or static), or choose a likelihood for grey pixels (--likelihood continuous-bernoulli, gaussian or "
               "discretized-logistic)")
#: how far a pixel may sit from the 8-bit grid k / 255 and still count as on it (float32 rounding of k / 255)
GRID_TOLERANCE = 1e-4


def on_8bit_grid(images: torch.Tensor) -> bool:
    """Whether every value is k / 255 for a whole k in 0..255 (up to float rounding)."""
    scaled = images * LEVELS_MAX
    return bool(((scaled - scaled.round()).abs() <= GRID_TOLERANCE * LEVELS_MAX).all()
                and (images >= 0).all() and (images <= 1).all())


class PixelLikelihood(nn.Module):
    """The decoder's outputs -> p(x | z) over the ``x_dim`` pixels of an image, as one event.

    A structure's decoder emits ``params_per_pixel * x_dim`` numbers per image and its model writes
    ``pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)``; the batch and any leading particle or
    enumeration dimensions pass through. ``bernoulli`` and ``continuous-bernoulli`` take logits; ``gaussian``
    takes (loc, raw scale) per pixel, or with ``shared_scale`` (the name ``gaussian-shared``) a loc per pixel and
    one learned scale for all pixels;
    ``discretized-logistic`` takes (loc, raw scale) per pixel. Scales are softplus(raw) + MIN_SCALE.
    """

    def __init__(self, name: str, x_dim: int, shared_scale: bool = False):
        super().__init__()
        if name not in DISCRETE_LIKELIHOODS:
            raise PyroVAEError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}")
        if name == "gaussian-shared":
            name, shared_scale = "gaussian", True
        if shared_scale and name != "gaussian":
            raise PyroVAEError(f"a shared scale is an option of the gaussian likelihood, not of {name}")
        self.name, self.x_dim, self.shared_scale = name, x_dim, shared_scale
        two = name == "discretized-logistic" or (name == "gaussian" and not shared_scale)
        self.params_per_pixel = 2 if two else 1
        self.raw_scale = nn.Parameter(torch.zeros(())) if shared_scale else None

    @property
    def spec(self) -> str:
        """The name that rebuilds this likelihood (``--likelihood``): ``gaussian-shared`` for a shared scale."""
        return "gaussian-shared" if self.shared_scale else self.name

    @property
    def binary_only(self) -> bool:
        return self.name == "bernoulli"

    @property
    def discrete(self) -> bool:
        return DISCRETE_LIKELIHOODS[self.name]

    def support_error(self, x: torch.Tensor) -> str | None:
        """One sentence if some of the pixels ``x`` lie outside this likelihood's support, else None."""
        if self.name == "bernoulli":
            return None if is_binary(x) else BINARY_ONLY
        if not bool(torch.isfinite(x).all()):
            return f"the {self.name} likelihood got NaN or Inf pixels"
        if self.name == "gaussian":
            return None
        if bool((x < 0).any() | (x > 1).any()):
            return f"the {self.name} likelihood needs pixels in [0, 1], got values from {x.min():g} to {x.max():g}"
        if self.name == "discretized-logistic" and not on_8bit_grid(x):
            return ("the discretized-logistic likelihood is a distribution over 8-bit values k / 255, and these pixels "
                    "are not on that grid; choose --likelihood continuous-bernoulli or gaussian for them")
        return None

    def _split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = (outputs[..., :self.x_dim], outputs[..., self.x_dim:]) if self.params_per_pixel == 2 else \
            (outputs, self.raw_scale.expand(outputs.shape))
        return loc, softplus(raw) + MIN_SCALE

    def forward(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        if outputs.shape[-1] != self.params_per_pixel * self.x_dim:
            raise PyroVAEError(f"the {self.name} likelihood of {self.x_dim} pixels takes "
                               f"{self.params_per_pixel * self.x_dim} decoder outputs, got {outputs.shape[-1]}")
        if self.name == "bernoulli":
            pixels = dist.Bernoulli(logits=outputs)
        elif self.name == "continuous-bernoulli":
            pixels = dist.ContinuousBernoulli(logits=outputs)
        elif self.name == "gaussian":
            pixels = dist.Normal(*self._split(outputs))
        else:
            pixels = DiscretizedLogistic(*self._split(outputs))
        return pixels.to_event(1)

    def mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """The images to show for decoder outputs: the mean of p(x | z), clamped to [0, 1]."""
        return self.forward(outputs).base_dist.mean.clamp(0, 1)


def bits_per_dim(nll_nats: float, num_dims: int, *, dequantized: bool, levels: int = LEVELS_MAX + 1) -> float:
    """Bits per dimension from an NLL in nats per image over ``num_dims`` dimensions.

    ``dequantized``: the NLL is that of a density on [0, 1] evaluated at x = (k + u) / levels; the discrete
    data's NLL is then at most NLL + D log(levels) nats (the bins' width 1/levels per dimension), which adds
    log2(levels) = 8 bits per dimension for 8-bit data.
    """
    if num_dims < 1:
        raise ValueError(f"the number of dimensions must be positive, got {num_dims}")
    correction = num_dims * math.log(levels) if dequantized else 0.0
    return (nll_nats + correction) / (num_dims * math.log(2))


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None, levels: int = LEVELS_MAX + 1) -> torch.Tensor:
    """8-bit images stored as k / 255 -> (k + u) / levels with u ~ Uniform(0, 1): uniform dequantization."""
    k = torch.round(images * LEVELS_MAX)
    u = torch.rand(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return (k + u) / levels
