"""The GMVAE benchmark's hand-written PyTorch loss computes exactly what TraceEnum_ELBO computes."""
import importlib

import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO

from conftest import REPO
from pyro_vae.models import GMVAE

BENCHMARKS = REPO / "benchmarks"


def test_the_hand_written_loss_is_the_enumerated_elbo_of_the_pyro_programs(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmark imports its sibling svi_vs_pytorch
    benchmark = importlib.import_module("gmvae_enum_vs_pytorch")
    torch.manual_seed(0)
    num_components, batch_size, z_dim = 3, 5, 4
    gmvae = GMVAE(z_dim=z_dim, hidden_dims=[16], num_components=num_components)
    with torch.no_grad():  # clusters of unequal width, so every term of the ELBO counts
        gmvae.prior_z.raw_scales.normal_()
    x = torch.bernoulli(torch.full((batch_size, 784), 0.3))
    eps = torch.randn(num_components, batch_size, z_dim)
    # The guide's z under enumeration of c has the shape (K, B, z_dim) of the hand-written draw; set it to
    # that draw, and let TraceEnum_ELBO enumerate c itself with z replayed.
    guide_trace = poutine.trace(poutine.enum(gmvae.guide, first_available_dim=-2)).get_trace(x)
    q_z = guide_trace.nodes["z"]["fn"].base_dist
    guide_trace.nodes["z"]["value"] = q_z.loc + q_z.scale * eps
    guide_trace.remove_node("c")
    guide_with_that_draw = poutine.replay(gmvae.guide, trace=guide_trace)
    expected = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(gmvae.model, guide_with_that_draw, x)
    assert benchmark.gmvae_loss(gmvae, x, eps).item() == pytest.approx(expected.item(), rel=1e-5)
