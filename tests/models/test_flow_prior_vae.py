"""The coupling-flow prior: its density against a brute-force Jacobian of the inverse, N(0, I) at the start,
a sample scored without the cache, and one sentence where z cannot be split."""
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.models import MODELS


def moved(z_dim=4):
    torch.manual_seed(0)
    vae = MODELS["flow-prior-vae"](z_dim=z_dim, hidden_dims=(16,), num_flows=3, flow_hidden_dims=(8,))
    with torch.no_grad():
        for p in vae.prior_flows.parameters():
            p.copy_(0.4 * torch.randn_like(p))
    return vae


def inverse(steps, z):
    for step in reversed(steps):
        z = step.inv(z)
    return z


def test_the_priors_density_is_the_base_density_of_the_inverse_plus_its_brute_force_log_determinant():
    vae = moved()
    z = torch.randn(4)
    jacobian = torch.autograd.functional.jacobian(lambda v: inverse(vae.prior_steps, v.reshape(1, 4)).reshape(4), z)
    e = inverse(vae.prior_steps, z.reshape(1, 4))
    expected = dist.Normal(0.0, 1.0).log_prob(e).sum() + torch.linalg.slogdet(jacobian)[1]
    assert abs(torch.linalg.slogdet(jacobian)[1].item()) > 1e-2
    assert vae.prior(z).log_prob(z.reshape(1, 4)).item() == pytest.approx(expected.item(), abs=1e-4)


def test_the_prior_starts_as_a_standard_normal_and_scores_its_own_samples_without_the_cache():
    fresh = MODELS["flow-prior-vae"](z_dim=5, hidden_dims=(16,), num_flows=2)
    z = torch.randn(7, 5)
    assert torch.allclose(fresh.prior(z).log_prob(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1), atol=1e-5)
    vae = moved()
    prior = vae.prior(z)
    sample = prior.rsample((6,))
    cached = prior.log_prob(sample)
    uncached = prior.log_prob(sample.clone())  # a new tensor: every step inverts it
    assert torch.allclose(cached, uncached, atol=1e-4)
    assert vae.generate(3).shape == (3, 784)


def test_a_latent_that_cannot_be_split_is_one_sentence():
    with pytest.raises(PyroVAEError, match="needs --z-dim 2 or more, got 1"):
        MODELS["flow-prior-vae"](z_dim=1, hidden_dims=(8,))
