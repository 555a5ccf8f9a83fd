"""The flow benchmark's hand-written IAF loss is the library's -ELBO, value and gradients, on the same draw."""
import importlib.util

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from conftest import REPO
from pyro_vae.models import MODELS

spec = importlib.util.spec_from_file_location("flow_vs_pytorch", REPO / "benchmarks" / "flow_vs_pytorch.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_the_hand_written_iaf_loss_has_the_librarys_value_and_gradients_on_the_same_draw():
    torch.manual_seed(0)
    vae = MODELS["iaf-vae"](z_dim=3, hidden_dims=[16], num_flows=3, context_dim=4, flow_hidden_dims=[8])
    with torch.no_grad():
        for p in vae.flows.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the identity, so the flow's terms count
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    params = list(vae.parameters())
    pyro.set_rng_seed(1)
    with pyro.validation_enabled(False):
        loss = Trace_ELBO().loss_and_grads(vae.model, vae.guide, x)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(1)
    eps = torch.randn(5, 3)
    hand = benchmark.iaf_loss(vae, x, eps)
    hand.backward()
    assert hand.item() == pytest.approx(loss, rel=1e-5)
    for p, g in zip(params, grads):
        assert torch.allclose(p.grad, g, atol=1e-4, rtol=1e-4)
