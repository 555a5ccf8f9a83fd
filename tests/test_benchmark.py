"""The benchmark's hand-written PyTorch baseline computes exactly what Trace_ELBO computes."""
import importlib.util
from pathlib import Path

import pytest
import torch
from pyro import poutine

from pyro_vae import VAE

spec = importlib.util.spec_from_file_location(
    "svi_vs_pytorch", Path(__file__).resolve().parents[1] / "benchmarks" / "svi_vs_pytorch.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_the_hand_written_loss_is_the_single_sample_elbo_of_the_pyro_programs():
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=[16])
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    eps = torch.randn(5, 4)
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    guide = poutine.trace(vae.guide).get_trace(x)
    guide.nodes["z"]["value"] = z  # the same draw as the hand-written loss
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    expected = -(model.log_prob_sum() - guide.nodes["z"]["fn"].log_prob(z).sum())
    assert benchmark.pytorch_loss(vae, x, eps).item() == pytest.approx(expected.item(), rel=1e-6)
