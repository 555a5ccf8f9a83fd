"""Pixel likelihoods sum (or integrate) to one over their support; bits per dimension (issue 11)."""
import math

import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.likelihoods import LEVELS_MAX, DiscretizedLogistic, bits_per_dim, dequantize, pixel_likelihood

GRID = torch.arange(LEVELS_MAX + 1, dtype=torch.float64) / LEVELS_MAX


@pytest.mark.parametrize("loc", [-0.5, 0.0, 0.3, 0.5, 1.0, 1.7])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 0.1, 1.0, 30.0])
def test_the_discretized_logistic_sums_to_one_over_the_256_values(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    probabilities = d.log_prob(GRID).exp()
    assert torch.isfinite(probabilities).all()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-9)


def test_the_discretized_logistic_is_the_logistic_mass_of_each_bin():
    loc, scale = 0.4, 0.05
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    cdf = lambda t: 1 / (1 + math.exp(-(t - loc) / scale))  # noqa: E731
    for k in (0, 1, 100, 102, 254, 255):
        x = k / 255
        upper = 1.0 if k == 255 else cdf(x + 0.5 / 255)
        lower = 0.0 if k == 0 else cdf(x - 0.5 / 255)
        assert d.log_prob(torch.tensor(x, dtype=torch.float64)).exp().item() == pytest.approx(upper - lower, rel=1e-9)


def test_discretized_logistic_samples_are_8_bit_values_with_the_right_frequencies():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.full((200_000,), 0.5, dtype=torch.float64), torch.tensor(0.02, dtype=torch.float64))
    samples = d.sample()
    k = torch.round(samples * 255)
    assert torch.equal(samples, k / 255) and samples.min() >= 0 and samples.max() <= 1
    counts = torch.bincount(k.long(), minlength=256).double() / len(samples)
    expected = DiscretizedLogistic(torch.tensor(0.5, dtype=torch.float64),
                                   torch.tensor(0.02, dtype=torch.float64)).log_prob(GRID).exp()
    assert (counts - expected).abs().max().item() < 0.005  # about 5 standard errors of the largest bin


def _integral(log_density, lower, upper, points=200_001):
    x = torch.linspace(lower, upper, points, dtype=torch.float64)
    return torch.trapezoid(log_density(x).exp(), x).item()


def _one_pixel(name, *outputs):
    """p(x | z) of a one-pixel image from the decoder outputs ``outputs``, as a structure builds it, and its
    log-density as a function of the pixel value."""
    d = pixel_likelihood(name, 1).double()(torch.tensor([outputs], dtype=torch.float64))
    return d, lambda x: d.log_prob(x.reshape(-1, 1))


@pytest.mark.parametrize("logit", [-6.0, -1.0, 0.0, 0.05, 2.5])
def test_the_continuous_bernoulli_integrates_to_one_on_the_unit_interval(logit):
    _, log_density = _one_pixel("continuous-bernoulli", logit)
    assert _integral(log_density, 0.0, 1.0) == pytest.approx(1.0, abs=1e-6)


def test_the_bernoulli_log_likelihood_of_grey_pixels_is_not_a_density():
    """Why the continuous Bernoulli exists: x log p + (1 - x) log(1 - p) integrates to less than one."""
    p = torch.tensor(0.7, dtype=torch.float64)
    assert _integral(lambda x: x * p.log() + (1 - x) * (1 - p).log(), 0.0, 1.0) < 0.9


@pytest.mark.parametrize("loc, raw_scale", [(0.5, -2.0), (0.0, 0.5), (0.9, -4.6)])
def test_the_gaussian_integrates_to_one(loc, raw_scale):
    d, log_density = _one_pixel("gaussian", loc, raw_scale)
    scale = d.base_dist.scale.item()
    assert _integral(log_density, loc - 12 * scale, loc + 12 * scale) == pytest.approx(1.0, abs=1e-6)


def test_bits_per_dimension():
    assert bits_per_dim(784 * math.log(2), 784, dequantized=False) == pytest.approx(1.0)
    # a dequantized density: + log2(256) = 8 bits per dimension
    assert bits_per_dim(0.0, 3072, dequantized=True) == pytest.approx(8.0)
    assert bits_per_dim(-1000.0, 784, dequantized=True) == pytest.approx(-1000 / (784 * math.log(2)) + 8)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0, dequantized=False)


def test_dequantization_stays_in_each_value_s_bin():
    k = torch.arange(256, dtype=torch.float64).repeat(40)
    x = dequantize(k / 255, torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(x * 256), k)


def test_the_discretized_logistic_has_finite_exact_gradients():
    """A decoder learns loc and scale through log_prob: its gradients agree with finite differences, edges
    and inner bins alike, also where a bin's mass is far in a tail."""
    values = torch.tensor([0.0, 3 / 255, 0.5, 1.0, 254 / 255], dtype=torch.float64)
    loc = torch.tensor([0.2, 0.0, 0.45, 0.3, 1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.1, 0.01, 0.03, 0.2, 0.001], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda m, s: DiscretizedLogistic(m, s).log_prob(values), (loc, scale))


def test_pixel_likelihoods_are_one_event_over_the_image_and_take_the_decoder_outputs():
    from pyro_vae.likelihoods import pixel_likelihood

    torch.manual_seed(0)
    x = torch.rand(5, 6)
    logits = torch.randn(5, 6)
    bernoulli = pixel_likelihood("bernoulli", 6)
    binary = torch.bernoulli(x)
    assert torch.allclose(bernoulli(logits).log_prob(binary),
                          torch.distributions.Bernoulli(logits=logits).log_prob(binary).sum(-1))
    gaussian = pixel_likelihood("gaussian", 6)
    outputs = torch.randn(3, 5, 12)  # a particle dimension in front
    d = gaussian(outputs)
    assert d.batch_shape == (3, 5) and d.event_shape == (6,)
    scale = torch.nn.functional.softplus(outputs[..., 6:]) + 1e-3
    assert torch.allclose(d.log_prob(x), torch.distributions.Normal(outputs[..., :6], scale).log_prob(x).sum(-1))
    shared = pixel_likelihood("gaussian-shared", 6)
    assert shared.params_per_pixel == 1 and len(list(shared.parameters())) == 1
    assert shared(logits).log_prob(x).shape == (5,)
    with pytest.raises(PyroVAEError, match="takes 12 decoder outputs, got 6"):
        gaussian(logits)
    with pytest.raises(PyroVAEError, match="unknown likelihood .poisson."):
        pixel_likelihood("poisson", 6)


def test_the_discretized_logistic_image_likelihood_sums_to_one_over_all_two_pixel_images():
    """Two pixels, 256 x 256 possible images: the probabilities of all of them add up to one."""
    from pyro_vae.likelihoods import pixel_likelihood

    likelihood = pixel_likelihood("discretized-logistic", 2)
    outputs = torch.tensor([0.3, 0.8, -2.0, -4.0], dtype=torch.float64)  # locs, raw scales
    a, b = torch.meshgrid(GRID, GRID, indexing="ij")
    images = torch.stack([a.reshape(-1), b.reshape(-1)], -1)
    assert likelihood(outputs).log_prob(images).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
