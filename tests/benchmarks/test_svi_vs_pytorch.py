"""The benchmark's hand-written PyTorch baseline computes exactly what Trace_ELBO computes."""
import importlib.util

import pytest
import torch
from pyro import poutine

from conftest import REPO
from pyro_vae import VAE

spec = importlib.util.spec_from_file_location(
    "svi_vs_pytorch", REPO / "benchmarks" / "svi_vs_pytorch.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_the_hand_written_loss_is_the_single_sample_elbo_of_the_pyro_programs(net):
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=[16], net=net)
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    eps = torch.randn(5, 4)
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    guide = poutine.trace(vae.guide).get_trace(x)
    guide.nodes["z"]["value"] = z  # the same draw as the hand-written loss
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    expected = -(model.log_prob_sum() - guide.nodes["z"]["fn"].log_prob(z).sum())
    assert benchmark.pytorch_loss(vae, x, eps).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("num_particles", [1, 5])
def test_the_hand_written_iwae_loss_is_the_loss_of_iwae_elbo_on_the_same_draw(num_particles):
    from pyro_vae.inference import make_elbo

    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=[16])
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    # IWAE_ELBO draws its K x batch codes as loc + scale * eps in one call of the guide's sampler, the first
    # random numbers it takes after the seed: draw eps with the same seed, the same shape, the same generator.
    torch.manual_seed(1)
    eps = torch.randn(num_particles, 5, 4)
    torch.manual_seed(1)
    expected = make_elbo("iwae", num_particles=num_particles).differentiable_loss(vae.model, vae.guide, x)
    loss = benchmark.pytorch_iwae_loss(vae, x, eps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # and so are the gradients that the two training loops step on
    params = list(vae.parameters())
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(expected, params)):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_the_hand_written_iwae_loss_is_not_the_loss_of_another_draw():
    from pyro_vae.inference import make_elbo

    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=[16])
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    eps = torch.randn(5, 5, 4)
    expected = make_elbo("iwae", num_particles=5).loss(vae.model, vae.guide, x)  # the draw after eps
    assert benchmark.pytorch_iwae_loss(vae, x, eps).item() != pytest.approx(expected, rel=1e-6)
