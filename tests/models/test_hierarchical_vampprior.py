"""The two-level VampPrior: its ELBO is the three-term hand computation on the same draw; it refuses what it must."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.errors import PyroVAEError
from pyro_vae.models import MODELS


def test_the_elbo_is_the_three_terms_by_hand_on_the_same_draw():
    torch.manual_seed(0)
    hv = MODELS["hierarchical-vampprior"](z_dim=3, z1_dim=2, hidden_dims=(16,), num_pseudo_inputs=5)
    x = (torch.rand(4, 784) < 0.3).float()
    pyro.set_rng_seed(3)
    library = -Trace_ELBO().loss(hv.model, hv.guide, x)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        q2 = dist.Normal(*hv.encoder(x))
        z2 = q2.rsample()
        q1 = dist.Normal(*hv.encoder_z1(torch.cat([x, z2], -1)))
        z1 = q1.rsample()
        loc_u, scale_u = hv.encoder(hv.pseudo_inputs())  # (K, 3): q(z2 | u_k)
        components = dist.Normal(loc_u, scale_u).log_prob(z2.unsqueeze(1)).sum(-1)  # (4, K)
        log_p_z2 = torch.logsumexp(components, -1) - math.log(5)
        log_p_z1 = dist.Normal(*hv.prior_z1(z2)).log_prob(z1).sum(-1)
        log_p_x = dist.Bernoulli(logits=hv.decoder(torch.cat([z1, z2], -1))).log_prob(x).sum(-1)
        by_hand = (log_p_x + log_p_z1 - q1.log_prob(z1).sum(-1) + log_p_z2 - q2.log_prob(z2).sum(-1)).sum()
    assert library == pytest.approx(by_hand.item(), rel=1e-5)


def test_the_top_latent_is_the_code_and_samples_come_from_the_vampprior():
    torch.manual_seed(0)
    hv = MODELS["hierarchical-vampprior"](z_dim=3, hidden_dims=(16,), num_pseudo_inputs=5)
    x = (torch.rand(6, 784) < 0.3).float()
    assert torch.allclose(hv.encode(x), hv.encoder(x)[0]) and hv.z1_dim == 3
    assert hv.generate(7).shape == (7, 784)
    assert hv.config()["z1_dim"] == 3 and MODELS["hierarchical-vampprior"](**hv.config()).z1_dim == 3


@pytest.mark.parametrize("elbo", ["stl", "dreg"])
def test_sticking_the_landing_refuses_its_hierarchical_guide(cli, tmp_path, elbo):
    code, out, err = cli("train", "--model", "hierarchical-vampprior", "--elbo", elbo, "--num-particles", 2,
                         "--subset", 200, "--epochs", 1, "--hidden-dims", 8, "--z-dim", 2, "--run-dir", tmp_path / "r")
    assert code == 2 and "takes its parameters from the draw of 'z2'" in err and "Traceback" not in err


def test_a_bad_z1_dim_is_one_sentence():
    with pytest.raises(PyroVAEError, match="z1_dim"):
        MODELS["hierarchical-vampprior"](hidden_dims=(8,), z1_dim=0)
