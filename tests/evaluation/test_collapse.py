"""Posterior-collapse diagnostics: a dimension whose q is the prior is inactive with zero KL; the mutual
information of a linear-Gaussian model's exact posterior matches its closed form; evaluate --collapse."""
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae.evaluation.collapse import collapse_diagnostics
from pyro_vae.models import LatentStructure


class HalfCollapsed(LatentStructure):
    """q(z | x) = N((2 x_0, 0), (0.5, 1)) against p(z) = N(0, I): the second dimension is the prior for every x."""

    def __init__(self):
        super().__init__(x_dim=3)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True).expand(x.shape), 1.0).to_event(1), obs=x)

    def guide(self, x):
        loc = torch.stack([2 * x[:, 0], torch.zeros(x.shape[0])], -1)
        scale = torch.tensor([0.5, 1.0]).expand(loc.shape)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def test_a_dimension_whose_q_is_the_prior_is_inactive_and_adds_no_kl():
    torch.manual_seed(0)
    x = torch.randn(300, 3)
    result = collapse_diagnostics(HalfCollapsed(), [(x[:100],), (x[100:],)])
    assert result["active_units"] == 1 and result["mean_variance"][1] == 0.0
    assert result["kl_per_dim"][1] == pytest.approx(0.0, abs=1e-6)
    # KL(N(m, 0.5^2) || N(0, 1)) = (0.25 + m^2 - 1) / 2 - log 0.5, averaged over m = 2 x_0
    expected = ((0.25 + (2 * x[:, 0]) ** 2 - 1) / 2 - math.log(0.5)).mean().item()
    assert result["kl_per_dim"][0] == pytest.approx(expected, rel=1e-5)


class LinearGaussian(LatentStructure):
    """z ~ N(0, I_2), x | z ~ N(W z, s^2 I_3), the guide the exact posterior: I(x; z) = log det(I + W^T W / s^2) / 2."""

    def __init__(self):
        super().__init__(x_dim=3)
        self.W = torch.tensor([[1.0, -0.5], [0.3, 1.0], [-0.6, 0.4]])
        self.noise = 1.0

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T, self.noise).to_event(1), obs=x)

    def guide(self, x):
        cov = torch.linalg.inv(torch.eye(2) + self.W.T @ self.W / self.noise ** 2)
        loc = x @ self.W @ cov.T / self.noise ** 2
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, cov))

    def encode(self, x):
        return pyro.poutine.trace(self.guide).get_trace(x).nodes["z"]["fn"].mean


def test_the_mutual_information_of_the_exact_posterior_matches_the_closed_form():
    torch.manual_seed(0)
    lg = LinearGaussian()
    z = torch.randn(2000, 2)
    x = z @ lg.W.T + lg.noise * torch.randn(2000, 3)
    pyro.set_rng_seed(1)  # not 0: the guide's draws would reuse the noise that made x
    result = collapse_diagnostics(lg, [(x[i:i + 500],) for i in range(0, 2000, 500)])
    exact = 0.5 * torch.logdet(torch.eye(2) + lg.W.T @ lg.W / lg.noise ** 2).item()
    assert exact > 0.5 and result["mutual_information_points"] == 2000
    assert result["mutual_information"] == pytest.approx(exact, abs=0.1)
    assert "kl_per_dim_omitted" in result  # a full-covariance q has no KL per dimension


def test_evaluate_collapse_writes_the_diagnostics_and_a_bar_chart(cli, tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "eval.json"
    code, stdout, err = cli("evaluate", run, "-K", 5, "--subset", 50, "--collapse", "--out", out)
    assert code == 0, err
    result = json.loads(out.read_text())["collapse"]
    assert result["dims"] == 3 and 0 <= result["active_units"] <= 3 and len(result["kl_per_dim"]) == 3  # TINY's
    assert "units of 'z' active" in stdout and (tmp_path / "eval-collapse.png").stat().st_size > 5000
