"""Pixel likelihoods p(x | z) beyond the Bernoulli, each a correctly normalised distribution, and bits per dimension.

Issue 11 (grey and colour data) builds its ``--likelihood`` option on these; they are usable now from a
structure's own decoder. Pixels are floats in [0, 1]; 8-bit data are stored as ``k / 255`` for k in 0..255.

* ``continuous-bernoulli``: Loaiza-Ganem & Cunningham (2019), the density on [0, 1] that the Bernoulli
  log-likelihood of grey pixels is *not* (it lacks the normaliser C(lambda)); Pyro's ``ContinuousBernoulli``.
* ``gaussian``: Normal(mu, sigma) with sigma learned (per pixel or shared); a density on the real line.
* ``discretized-logistic``: the probability of the 8-bit value k is the mass a logistic(mu, s) puts on the
  bin [k - 1/2, k + 1/2] / 255, the two edge bins taking the tails (PixelCNN++, Salimans et al. 2017); a
  distribution over the 256 values, so its NLL is directly in nats of the discrete data.
* ``categorical``: each feature one of C categories with probabilities softmax(decoder outputs): the whole numbers
  0 to C - 1 of vectors (tables) and sequences, C counted from the data (``categorical-C`` as a run records it,
  :meth:`PixelLikelihood.spec_for_data`), or the 256 values k / 255 of 8-bit pixels (a 256-way softmax per pixel).

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

from pyro_vae.catalog import (LIKELIHOOD_NAMES, check_registry, is_discrete_likelihood, likelihood_name,
                              takes_binary_pixels)
from pyro_vae.pixels import GRID_TOLERANCE, LEVELS_MAX, dequantize, is_binary, on_8bit_grid  # noqa: F401 (re-exported)
from pyro_vae.errors import PyroVAEError


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


class CategoricalLevels(TorchDistribution):
    """Each value one of C levels ``k * step``, k = 0 .. C - 1, with the probabilities softmax(``logits``) over the
    last axis: the whole numbers 0 .. C - 1 (``step`` 1) or the 8-bit values k / 255 (``step`` 1 / 255). log_prob
    takes the nearest level; values beyond the levels are refused before they come here (``support_error``)."""

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.real  # the levels k * step
    has_rsample = False

    def __init__(self, logits: torch.Tensor, step: float = 1.0, validate_args=None):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.step = step
        super().__init__(self.logits.shape[:-1], torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(CategoricalLevels, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits, new.step = self.logits.expand(batch_shape + self.logits.shape[-1:]), self.step
        super(CategoricalLevels, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def num_levels(self) -> int:
        return self.logits.shape[-1]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        level = torch.round(value / self.step).long().clamp(0, self.num_levels - 1).unsqueeze(-1)
        level, log_pmf = torch.broadcast_tensors(level, self.logits)
        return log_pmf.gather(-1, level[..., :1]).squeeze(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            level = torch.distributions.Categorical(logits=self.logits).sample(sample_shape)
            return level.to(self.logits.dtype) * self.step

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self.num_levels, dtype=self.logits.dtype, device=self.logits.device)
        return (self.logits.exp() * levels).sum(-1) * self.step


#: the smallest scale of the Gaussian and the logistic (a scale that may shrink to 0 makes the density unbounded)
MIN_SCALE = 1e-3


BINARY_ONLY = ("the Bernoulli likelihood needs binary pixels (0 or 1); binarize the data first (--binarize dynamic "
               "or static), or choose a likelihood for grey pixels (--likelihood continuous-bernoulli, gaussian or "
               "discretized-logistic)")


class PixelLikelihood(nn.Module):
    """The decoder's outputs -> p(x | z) over the ``x_dim`` pixels of an image, as one event: the base class of the
    likelihoods of :data:`LIKELIHOOD_CLASSES`, each one class.

    A structure's decoder emits ``params_per_pixel * x_dim`` numbers per image and its model writes
    ``pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)``; the batch and any leading particle or
    enumeration dimensions pass through. A new likelihood is a subclass that sets ``name`` (its ``--likelihood``),
    ``params_per_pixel`` and :meth:`pixels` (the per-pixel distribution of the decoder's outputs), and may narrow
    :meth:`support_error`; plus its entry in ``pyro_vae.catalog.LIKELIHOOD_PIXELS`` (what pixels it takes). Scales
    are softplus(raw) + MIN_SCALE.
    """

    name: str = ""
    params_per_pixel: int = 1
    shared_scale: bool = False

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = x_dim

    @classmethod
    def from_spec(cls, spec: str, x_dim: int) -> "PixelLikelihood":
        """The likelihood that ``spec`` (what :attr:`spec` returns, the ``--likelihood`` name here) names."""
        if spec != cls.name:
            raise PyroVAEError(f"unknown likelihood {spec!r}; choose one of {', '.join(LIKELIHOOD_CLASSES)}")
        return cls(x_dim)

    @classmethod
    def spec_for_data(cls, spec: str, kind: str, values: list) -> str:
        """The spec to build for data of ``kind`` (images, vectors, sequences) whose splits hold ``values``: ``spec``
        itself, unless the likelihood counts something from the data (the categorical's categories)."""
        return spec

    @property
    def spec(self) -> str:
        """The name that rebuilds this likelihood (``--likelihood``, or what the data made of it)."""
        return self.name

    @property
    def binary_only(self) -> bool:
        """Whether the pixels must be 0 or 1."""
        return takes_binary_pixels(self.name)

    @property
    def discrete(self) -> bool:
        """Whether this is a distribution over the pixel values (else a density, compared on dequantized data)."""
        return is_discrete_likelihood(self.name)

    def support_error(self, x: torch.Tensor) -> str | None:
        """One sentence if some of the pixels ``x`` lie outside this likelihood's support, else None: by default
        pixels must be finite and in [0, 1]."""
        if not bool(torch.isfinite(x).all()):
            return f"the {self.name} likelihood got NaN or Inf pixels"
        if bool((x < 0).any() | (x > 1).any()):
            return f"the {self.name} likelihood needs pixels in [0, 1], got values from {x.min():g} to {x.max():g}"
        return None

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        """The distribution of each pixel given the decoder's outputs (shape (..., params_per_pixel * x_dim))."""
        raise NotImplementedError

    def _split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) per pixel from (loc, raw scale) outputs."""
        loc, raw = outputs[..., :self.x_dim], outputs[..., self.x_dim:]
        return loc, softplus(raw) + MIN_SCALE

    def forward(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        if outputs.shape[-1] != self.params_per_pixel * self.x_dim:
            raise PyroVAEError(f"the {self.name} likelihood of {self.x_dim} pixels takes "
                               f"{self.params_per_pixel * self.x_dim} decoder outputs, got {outputs.shape[-1]}")
        return self.pixels(outputs).to_event(1)

    def mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """The images to show for decoder outputs: the mean of p(x | z), clamped to [0, 1]."""
        return self.forward(outputs).base_dist.mean.clamp(0, 1)


class BernoulliPixels(PixelLikelihood):
    """Binary pixels, Bernoulli with the decoder's outputs as logits."""

    name = "bernoulli"

    def support_error(self, x: torch.Tensor) -> str | None:
        return None if is_binary(x) else BINARY_ONLY

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=outputs)


class ContinuousBernoulliPixels(PixelLikelihood):
    """The continuous Bernoulli of Loaiza-Ganem & Cunningham (2019), a density on [0, 1] (the outputs are logits)."""

    name = "continuous-bernoulli"

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=outputs)


class GaussianPixels(PixelLikelihood):
    """Normal(loc, scale) per pixel, both from the decoder: a density on the real line."""

    name = "gaussian"
    params_per_pixel = 2

    def support_error(self, x: torch.Tensor) -> str | None:
        return f"the {self.name} likelihood got NaN or Inf pixels" if not bool(torch.isfinite(x).all()) else None

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(*self._split(outputs))


class SharedGaussianPixels(GaussianPixels):
    """Normal(loc, scale) with a loc per pixel from the decoder and one learned scale for all pixels."""

    name = "gaussian-shared"
    params_per_pixel = 1
    shared_scale = True

    def __init__(self, x_dim: int):
        super().__init__(x_dim)
        self.raw_scale = nn.Parameter(torch.zeros(()))

    def _split(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return outputs, softplus(self.raw_scale.expand(outputs.shape)) + MIN_SCALE


class DiscretizedLogisticPixels(PixelLikelihood):
    """The discretized logistic of PixelCNN++ (:class:`DiscretizedLogistic`), a distribution over the 256 values of
    8-bit pixels, with (loc, scale) per pixel from the decoder."""

    name = "discretized-logistic"
    params_per_pixel = 2

    def support_error(self, x: torch.Tensor) -> str | None:
        why = super().support_error(x)
        if why is None and not on_8bit_grid(x):
            why = ("the discretized-logistic likelihood is a distribution over 8-bit values k / 255, and these pixels "
                   "are not on that grid; choose --likelihood continuous-bernoulli or gaussian for them")
        return why

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        return DiscretizedLogistic(*self._split(outputs))


class CategoricalPixels(PixelLikelihood):
    """Each feature one of ``num_levels`` categories (:class:`CategoricalLevels`), its logits from the decoder:
    ``categorical-C`` over the whole numbers 0 .. C - 1 of vectors and sequences, ``categorical`` over the 256 values
    k / 255 of 8-bit pixels. The decoder's outputs are the C logits of every feature, category-major like the
    Gaussian's (loc, scale): all features' logits of category 0, then of category 1, ..."""

    name = "categorical"
    #: the categories of ``categorical`` alone: the 8-bit values
    PIXEL_LEVELS = LEVELS_MAX + 1

    def __init__(self, x_dim: int, num_levels: int = PIXEL_LEVELS, step: float = 1 / LEVELS_MAX):
        super().__init__(x_dim)
        if num_levels < 2:
            raise PyroVAEError(f"the categorical likelihood needs at least 2 categories, got {num_levels}")
        self.num_levels, self.step = num_levels, step
        self.params_per_pixel = num_levels

    @classmethod
    def from_spec(cls, spec: str, x_dim: int) -> "CategoricalPixels":
        if spec == cls.name:
            return cls(x_dim)
        count = spec[len(cls.name) + 1:]
        if likelihood_name(spec) != cls.name:
            raise PyroVAEError(f"unknown likelihood {spec!r}; the categorical likelihood is categorical or "
                               "categorical-C for C categories")
        return cls(x_dim, int(count), 1.0)

    @classmethod
    def spec_for_data(cls, spec: str, kind: str, values: list) -> str:
        """``categorical-C`` for vectors and sequences of whole numbers from 0, C their largest value + 1 (at least
        2); for images, or a spec that counts its categories already (a resumed run), ``spec``."""
        if kind == "images" or spec != cls.name:
            return spec
        for split in values:
            if not bool(((split >= 0) & (split == split.round())).all()):
                bad = split[(split < 0) | (split != split.round())][0].item()
                raise PyroVAEError(f"the categorical likelihood takes whole numbers 0, 1, 2, ... as categories, and "
                                   f"the data hold {bad:g}; choose --likelihood gaussian for real values")
        return f"{cls.name}-{max(2, int(max(split.max().item() for split in values)) + 1)}"

    @property
    def spec(self) -> str:
        return self.name if self.step != 1.0 else f"{self.name}-{self.num_levels}"

    def support_error(self, x: torch.Tensor) -> str | None:
        if not bool(torch.isfinite(x).all()):
            return f"the {self.spec} likelihood got NaN or Inf values"
        if self.step != 1.0:
            why = super().support_error(x)
            if why is None and not on_8bit_grid(x):
                why = ("the categorical likelihood of pixels is a distribution over 8-bit values k / 255, and these "
                       "pixels are not on that grid; choose --likelihood continuous-bernoulli or gaussian for them")
            return why
        if not bool(((x >= 0) & (x < self.num_levels) & (x == x.round())).all()):
            bad = x[(x < 0) | (x >= self.num_levels) | (x != x.round())][0].item()
            return (f"the {self.spec} likelihood takes the whole numbers 0 to {self.num_levels - 1}, and the data "
                    f"hold {bad:g}")
        return None

    def pixels(self, outputs: torch.Tensor) -> dist.TorchDistribution:
        logits = outputs.reshape(*outputs.shape[:-1], self.num_levels, self.x_dim).transpose(-1, -2)
        return CategoricalLevels(logits, self.step)

    def mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """The expected value of each feature (for 8-bit pixels, in [0, 1])."""
        mean = self.forward(outputs).base_dist.mean
        return mean.clamp(0, 1) if self.step != 1.0 else mean


#: --likelihood name -> its class
LIKELIHOOD_CLASSES = {cls.name: cls for cls in (BernoulliPixels, ContinuousBernoulliPixels, GaussianPixels,
                                                SharedGaussianPixels, DiscretizedLogisticPixels, CategoricalPixels)}
check_registry("likelihood", LIKELIHOOD_CLASSES, LIKELIHOOD_NAMES)


def pixel_likelihood(name: str, x_dim: int) -> PixelLikelihood:
    """The likelihood ``name`` (``--likelihood``, or a spec a run recorded such as ``categorical-5``) of ``x_dim``
    pixels or features."""
    base = likelihood_name(name)
    if base not in LIKELIHOOD_CLASSES:
        raise PyroVAEError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOOD_CLASSES)}")
    return LIKELIHOOD_CLASSES[base].from_spec(name, x_dim)


def likelihood_for_data(name: str, kind: str, values: list) -> str:
    """The spec of the likelihood ``name`` for data of ``kind`` whose splits hold ``values``
    (:meth:`PixelLikelihood.spec_for_data`): ``categorical`` becomes ``categorical-C`` on vectors and sequences."""
    return LIKELIHOOD_CLASSES[likelihood_name(name)].spec_for_data(name, kind, values)


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
