"""Flow guides: each flow's density against a brute-force Jacobian, the identity at the start, the ELBO by hand,
importance sampling exact on a linear-Gaussian model, and one sentence for an option that does not fit."""
import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import log_likelihood_iwae
from pyro_vae.models import MODELS, LatentStructure
from pyro_vae.models.flow_vae import FLOW_NAMES, flow_steps

Z, CONTEXT = 3, 4


def conditioned(steps, context):
    return [step.condition(context) if hasattr(step, "condition") else step for step in steps]


def randomized(flow: str):
    """The flow's steps with every parameter drawn at random (IAF's start at the identity otherwise)."""
    torch.manual_seed(1)
    modules, steps = flow_steps(flow, Z, 3, CONTEXT, (8,), num_householder=2)
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return modules, steps


def push(transforms, z0):
    z = z0
    for transform in transforms:
        z = transform(z)
    return z


@pytest.mark.parametrize("flow", FLOW_NAMES)
def test_each_flows_log_density_is_the_base_density_less_the_brute_force_log_determinant(flow):
    _, steps = randomized(flow)
    context = torch.randn(1, CONTEXT)
    base = dist.Normal(torch.tensor([[0.3, -0.2, 0.1]]), torch.tensor([[0.8, 1.1, 0.6]])).to_event(1)
    z0 = base.sample()
    # the whole map's Jacobian by autograd, on transforms of its own (the draw below fills the others' caches)
    jacobian = torch.autograd.functional.jacobian(
        lambda v: push(conditioned(steps, context), v.reshape(1, Z)).reshape(Z), z0.reshape(Z))
    log_det = torch.linalg.slogdet(jacobian)[1]
    transforms = conditioned(steps, context)
    z = push(transforms, z0)
    q = dist.TransformedDistribution(base, transforms)
    expected = base.log_prob(z0) - log_det
    assert abs(log_det.item()) > 1e-2  # the random flow is not the identity
    assert q.log_prob(z).item() == pytest.approx(expected.item(), abs=1e-4)


@pytest.mark.parametrize("flow", ["iaf", "sylvester"])
def test_a_flow_whose_step_parameters_are_zero_is_the_identity(flow):
    modules, steps = randomized(flow)
    with torch.no_grad():
        for name, p in modules.named_parameters():
            # the last layer of each step's network: IAF's mu = 0 and log sigma = 0; Sylvester's R, S and b = 0
            if name.split(".")[-2] == str(len(steps[0].nn.layers) - 1):
                p.zero_()
        if flow == "sylvester":  # Q's reflections need nonzero vectors: only R = 0 (and S, b) make the identity
            for step in steps:
                step.nn.layers[-1].bias[-2 * Z:] = 1.0
    z0, context = torch.randn(5, Z), torch.randn(5, CONTEXT)
    transforms = conditioned(steps, context)
    z = push(transforms, z0)
    assert torch.allclose(z, z0, atol=1e-6)
    base = dist.Normal(torch.zeros(Z), 1.0).to_event(1)
    assert torch.allclose(dist.TransformedDistribution(base, transforms).log_prob(z), base.log_prob(z0), atol=1e-5)


def test_the_iaf_vae_starts_as_its_gaussian_guide():
    vae = MODELS["iaf-vae"](z_dim=Z, hidden_dims=(16,), context_dim=CONTEXT, flow_hidden_dims=(8,))
    x = (torch.rand(6, 784) < 0.3).float()
    loc, _ = vae.encoder(x)
    assert torch.allclose(vae.encode(x), loc)


def standard_normal_log_density(vae, z):
    return dist.Normal(0.0, 1.0).log_prob(z).sum()


def pseudo_inputs_mixture_log_density(vae, z):
    """vampprior-iaf's prior by hand: (1/K) sum_k N(z; mu(u_k), sigma(u_k)), u_k = clamp(W^T, 0, 1), the
    encoder's base Gaussian at each pseudo-input."""
    loc, scale = vae.encoder(vae.pseudo_inputs.linear.weight.T.clamp(0, 1))
    return torch.logsumexp(dist.Normal(loc, scale).log_prob(z).sum(-1), 0) - math.log(loc.shape[0])


@pytest.mark.parametrize("name, log_prior_of", [("planar-vae", standard_normal_log_density),
                                                ("iaf-vae", standard_normal_log_density),
                                                ("sylvester-vae", standard_normal_log_density),
                                                ("vampprior-iaf", pseudo_inputs_mixture_log_density)])
def test_the_elbo_of_a_flow_guide_is_the_hand_computation_on_the_same_draw(name, log_prior_of):
    torch.manual_seed(0)
    vae = MODELS[name](z_dim=Z, hidden_dims=(16,), num_flows=2, context_dim=CONTEXT, flow_hidden_dims=(8,),
                       **({"num_pseudo_inputs": 6} if name == "vampprior-iaf" else {}))
    with torch.no_grad():
        for p in vae.flows.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = (torch.rand(4, 784) < 0.3).float()
    pyro.set_rng_seed(7)
    library = -Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        loc, scale = vae.encoder(x)
        z0 = dist.Normal(loc, scale).rsample()
        context = vae.context(x)
    total = 0.0
    for i in range(x.shape[0]):
        steps = vae.transforms(context[i:i + 1])
        jacobian = torch.autograd.functional.jacobian(lambda v: push(steps, v.reshape(1, Z)).reshape(Z), z0[i])
        with torch.no_grad():
            z = push(vae.transforms(context[i:i + 1]), z0[i:i + 1])
            log_q = dist.Normal(loc[i], scale[i]).log_prob(z0[i]).sum() - torch.linalg.slogdet(jacobian)[1]
            log_prior = log_prior_of(vae, z[0])
            logits = vae.decoder(z)
            log_lik = dist.Bernoulli(logits=logits).log_prob(x[i:i + 1]).sum()
        total += (log_lik + log_prior - log_q).item()
    assert library == pytest.approx(total, rel=1e-5)


class LinearGaussianFlow(LatentStructure):
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3); the guide an IAF over a base Gaussian that is the exact
    posterior. At the identity every importance weight is p(x); moved off it, importance sampling still converges."""

    def __init__(self):
        super().__init__(x_dim=3)
        self.W = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]])
        self.b = torch.tensor([0.2, -0.1, 0.5])
        self.noise = 0.6
        self.flows, self.steps = flow_steps("iaf", 2, 2, 1, (8,), num_householder=1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.noise).to_event(1), obs=x)

    def guide(self, x):
        precision = torch.eye(2) + self.W.T @ self.W / self.noise ** 2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.noise ** 2
        context = torch.ones(x.shape[0], 1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(dist.MultivariateNormal(loc, cov),
                                                          conditioned(self.steps, context)))

    def log_marginal(self, x):
        return dist.MultivariateNormal(self.b, self.W @ self.W.T + self.noise ** 2 * torch.eye(3)).log_prob(x)


def test_importance_sampling_with_a_flow_guide_is_exact_on_the_linear_gaussian_model():
    torch.manual_seed(0)
    lg = LinearGaussianFlow()
    points = torch.randn(20, 3) * 2.0
    truth = lg.log_marginal(points)
    exact = log_likelihood_iwae(lg.model, lg.guide, (points,), num_samples=7)
    assert torch.allclose(exact, truth, atol=1e-4)  # the flow is the identity: every weight is p(x)
    with torch.no_grad():
        for p in lg.flows.parameters():
            p.copy_(0.1 * torch.randn_like(p))
    moved = log_likelihood_iwae(lg.model, lg.guide, (points,), num_samples=5000)
    single = log_likelihood_iwae(lg.model, lg.guide, (points,), num_samples=1)
    assert single.mean().item() < truth.mean().item() - 0.1  # the moved flow leaves a real gap at K = 1
    assert moved.mean().item() == pytest.approx(truth.mean().item(), abs=0.05)


@pytest.mark.parametrize("options, message", [
    ({"num_flows": 0}, "num_flows"),
    ({"num_householder": 9, "z_dim": 4}, "num_householder (9) must be at most z_dim (4)"),
    ({"context_dim": -1}, "context_dim"),
])
def test_a_flow_option_that_does_not_fit_is_one_sentence(options, message):
    with pytest.raises(PyroVAEError, match=re.escape(message)):
        MODELS["sylvester-vae"](hidden_dims=(8,), **options)


def test_pyros_own_sylvester_log_determinant_misses_the_brute_force_one_where_ours_does_not():
    """Why sylvester-vae has its own step: Pyro's Sylvester (1.9) is z + tanh(z S Q^T + b) Q R, whose Jacobian
    determinant is det(I + diag(h') Q R S Q^T), but it returns log prod(1 + h' R_ii S_ii), right only for Q = I."""
    from pyro.distributions.transforms import Sylvester

    torch.manual_seed(2)
    step = Sylvester(Z, count_transforms=2)
    with torch.no_grad():
        for p in step.parameters():
            p.copy_(0.8 * torch.randn_like(p))
    x = torch.randn(1, Z)
    jacobian = torch.autograd.functional.jacobian(lambda v: step(v.reshape(1, Z)).reshape(Z), x.reshape(Z))
    y = step(x)
    assert abs(step.log_abs_det_jacobian(x, y).item() - torch.linalg.slogdet(jacobian)[1].item()) > 1e-3


@pytest.mark.slow
def test_a_flow_vae_trains_evaluates_samples_and_goes_through_compare_estimators(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--model", "sylvester-vae", "--subset", 200, "--epochs", 1, "--hidden-dims", 16,
                         "--z-dim", 3, "--batch-size", 50, "--model-option", "num_flows=2",
                         "--model-option", "num_householder=3", "--run-dir", run, "--no-progress", "--eval-samples", 20)
    assert code == 0, err
    assert "test NLL" in out and (run / "samples.png").exists()
    code, out, err = cli("sample", run, "--num", 4, "--out", tmp_path / "s.png")
    assert code == 0, err
    code, out, err = cli("compare-estimators", "--model", "iaf-vae", "--train-epochs", 1, "--subset", 200,
                         "--hidden-dims", 16, "--z-dim", 3, "--repeats", 3, "--batch-size", 10, "--train-steps", 0,
                         "--estimators", "reparam,iwae,stl", "--out", tmp_path / "cmp", "--no-progress")
    assert code == 0, err
    assert "is a flow whose steps keep their parameters inside Pyro's transforms" in out


@pytest.mark.parametrize("elbo", ["stl", "dreg"])
def test_sticking_the_landing_on_a_flow_guide_is_one_sentence(cli, tmp_path, elbo):
    code, out, err = cli("train", "--model", "planar-vae", "--elbo", elbo, "--num-particles", 2, "--subset", 200,
                         "--epochs", 1, "--hidden-dims", 8, "--z-dim", 2, "--run-dir", tmp_path / "r")
    assert code == 2 and "is a flow whose steps keep their parameters" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_flow_too_large_for_the_machine_is_one_sentence_before_anything_is_allocated(cli, tmp_path):
    # Sylvester's hypernet puts out 2 z^2 numbers a step: counted on the meta device, where Pyro's index
    # bookkeeping stays on the CPU (limits.SmallTensorsOnCPU)
    code, out, err = cli("train", "--model", "sylvester-vae", "--z-dim", 20000, "--subset", 100,  # not all 70,000
                         "--run-dir", tmp_path / "r")
    assert code == 2 and "would need about" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
