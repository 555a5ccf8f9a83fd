"""Known answers for the multi-sample estimators of pyro_vae.inference.multisample."""
import itertools
import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO
from pyro.poutine.messenger import Messenger
from torch.distributions import constraints

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference import make_elbo
from pyro_vae.inference.iwae import IWAE_ELBO
from pyro_vae.inference.multisample import (CIWAE_ELBO, DReG_ELBO, MIWAE_ELBO, PIWAE_ELBO, RWS_ELBO, STL_ELBO,
                                            TMC_ELBO, VIMCO_ELBO, leave_one_out)

W = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]])
B = torch.tensor([0.2, -0.1, 0.5])
NOISE = 0.6


def exact_posterior_parameters():
    """q(z | x) = N(x A + c, L L^T) equal to p(z | x) of the linear-Gaussian model."""
    cov = torch.linalg.inv(torch.eye(2) + W.T @ W / NOISE ** 2)
    a = W @ cov.T / NOISE ** 2
    return a, -B @ a, torch.linalg.cholesky(cov)


def linear_model(x):
    w = pyro.param("w", W.clone())
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ w.T + B, NOISE).to_event(1), obs=x)


def linear_guide(x):
    a0, c0, l0 = exact_posterior_parameters()
    a = pyro.param("a", a0)
    c = pyro.param("c", c0)
    tril = pyro.param("tril", l0, constraint=constraints.lower_cholesky)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.MultivariateNormal(x @ a + c, scale_tril=tril))


def gradients(elbo, model, guide, x, names):
    for name in names:
        if name in pyro.get_param_store():
            pyro.param(name).unconstrained().grad = None
    elbo.loss_and_grads(model, guide, x)
    return torch.cat([pyro.param(name).unconstrained().grad.reshape(-1).clone() for name in names])


@pytest.fixture
def store():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield pyro.get_param_store()
    pyro.clear_param_store()


def test_stl_guide_gradient_is_exactly_zero_at_the_exact_posterior_while_trace_elbos_is_not(store):
    x = torch.randn(1, 3) * 2
    guide_params = ["a", "c", "tril"]
    for seed in range(5):  # sample by sample: each single-draw estimate
        pyro.set_rng_seed(seed)
        stl = gradients(STL_ELBO(1), linear_model, linear_guide, x, guide_params)
        pyro.set_rng_seed(seed)
        trace = gradients(Trace_ELBO(), linear_model, linear_guide, x, guide_params)
        assert stl.abs().max() < 1e-4, stl
        assert trace.abs().max() > 1e-2, trace
    # away from the posterior STL's guide gradient is not zero
    store["c"] = store["c"].detach() + 0.5
    assert gradients(STL_ELBO(1), linear_model, linear_guide, x, guide_params).abs().max() > 1e-2


def test_stl_bound_is_the_elbo_of_the_same_draws(store):
    x = torch.randn(4, 3)
    pyro.set_rng_seed(3)
    stl = STL_ELBO(num_particles=7).loss(linear_model, linear_guide, x)
    pyro.set_rng_seed(3)
    trace = Trace_ELBO(num_particles=7, vectorize_particles=True, max_plate_nesting=1).loss(
        linear_model, linear_guide, x)
    assert stl == pytest.approx(trace, rel=1e-5)


def wrong_guide(x):
    a0, c0, l0 = exact_posterior_parameters()
    a = pyro.param("a", a0 * 0.7)
    c = pyro.param("c", c0 + 0.4)
    tril = pyro.param("tril", l0 * 1.5, constraint=constraints.lower_cholesky)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.MultivariateNormal(x @ a + c, scale_tril=tril))


def repeated(elbo, x, names, repeats):
    """Per-call gradients of the batch of copies of one point, divided by the copies: each row a mean of
    independent estimates."""
    return torch.stack([gradients(elbo, linear_model, wrong_guide, x, names) / x.shape[0] for _ in range(repeats)])


def test_dreg_has_iwaes_expected_gradient_with_less_variance(store):
    x = (torch.randn(1, 3) * 1.5).expand(200, 3)
    names = ["a", "c", "tril", "w"]
    iwae = repeated(IWAE_ELBO(5), x, names, 60)
    dreg = repeated(DReG_ELBO(5), x, names, 60)
    difference = (dreg.mean(0) - iwae.mean(0)).abs()
    standard_error = ((dreg.var(0) + iwae.var(0)) / 60).sqrt()
    assert (difference < 4.5 * standard_error + 1e-6).all(), (difference / standard_error).max()
    guide = slice(0, 6 + 2 + 4)  # a (3 x 2), c (2), tril (4 unconstrained numbers)
    assert dreg[:, guide].var(0).sum() < 0.5 * iwae[:, guide].var(0).sum()
    # the model's gradient is IWAE's, draw for draw
    pyro.set_rng_seed(11)
    model_iwae = gradients(IWAE_ELBO(5), linear_model, wrong_guide, x, ["w"])
    pyro.set_rng_seed(11)
    model_dreg = gradients(DReG_ELBO(5), linear_model, wrong_guide, x, ["w"])
    assert torch.allclose(model_iwae, model_dreg, atol=1e-4)


def test_renyi_is_the_iwae_bound_at_alpha_0_and_the_elbo_as_alpha_goes_to_1(store):
    x = torch.randn(6, 3)
    pyro.set_rng_seed(5)
    iwae = IWAE_ELBO(10).loss(linear_model, wrong_guide, x)
    pyro.set_rng_seed(5)
    renyi0 = make_elbo("renyi", num_particles=10, alpha=0.0, max_plate_nesting=1).loss(linear_model, wrong_guide, x)
    assert renyi0 == pytest.approx(iwae, rel=1e-5)
    pyro.set_rng_seed(5)
    elbo = STL_ELBO(10).loss(linear_model, wrong_guide, x)
    pyro.set_rng_seed(5)
    near_one = RenyiELBO(alpha=1 - 1e-5, num_particles=10, vectorize_particles=True, max_plate_nesting=1).loss(
        linear_model, wrong_guide, x)
    assert near_one == pytest.approx(elbo, abs=1e-2)
    assert iwae < elbo  # the IWAE bound is the tighter: its loss is lower


def test_miwae_ciwae_and_piwae_bounds_are_their_formulas_on_the_same_draws(store):
    x = torch.randn(5, 3)

    class Record(Messenger):
        def _pyro_post_sample(self, msg):
            if msg["name"] == "z":
                self.z = msg["value"].detach()

    def log_w(z):
        a, c, tril = pyro.param("a"), pyro.param("c"), pyro.param("tril")
        log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(z @ W.T + B, NOISE).log_prob(x).sum(-1)
        return (log_p - dist.MultivariateNormal(x @ a + c, scale_tril=tril).log_prob(z)).detach()

    for elbo, formula in (
            (MIWAE_ELBO(4, outer_particles=3),
             lambda lw: (lw.reshape(3, 4, -1).logsumexp(1) - math.log(4)).mean(0).sum()),
            (CIWAE_ELBO(6, beta=0.25),
             lambda lw: (0.25 * lw.mean(0) + 0.75 * (lw.logsumexp(0) - math.log(6))).sum()),
            (PIWAE_ELBO(4, outer_particles=3), lambda lw: (lw.logsumexp(0) - math.log(12)).sum())):
        record = Record()
        loss = elbo.loss(linear_model, record(wrong_guide), x)
        assert loss == pytest.approx(-float(formula(log_w(record.z))), rel=1e-5), type(elbo).__name__


def test_piwae_gives_the_guide_miwaes_gradient_and_the_model_iwaes(store):
    x = torch.randn(5, 3)
    guide_names, model_names = ["a", "c", "tril"], ["w"]
    pyro.set_rng_seed(2)
    piwae = gradients(PIWAE_ELBO(4, outer_particles=3), linear_model, wrong_guide, x, guide_names + model_names)
    pyro.set_rng_seed(2)
    miwae = gradients(MIWAE_ELBO(4, outer_particles=3), linear_model, wrong_guide, x, guide_names + model_names)
    pyro.set_rng_seed(2)
    iwae = gradients(IWAE_ELBO(12), linear_model, wrong_guide, x, guide_names + model_names)
    guide = slice(0, 12)
    assert torch.allclose(piwae[guide], miwae[guide], atol=1e-5)
    assert torch.allclose(piwae[12:], iwae[12:], atol=1e-5)
    assert not torch.allclose(miwae[12:], iwae[12:], atol=1e-3)


def test_rws_wake_phase_gradients_are_the_self_normalized_estimates_written_by_hand(store):
    x = torch.randn(3, 3)
    draws = {}

    class Record(Messenger):
        def _pyro_post_sample(self, msg):
            if msg["name"] == "z":
                draws["z"] = msg["value"].detach()

    names = ["a", "c", "tril", "w"]
    rws = gradients(RWS_ELBO(6), linear_model, Record()(wrong_guide), x, names)
    z = draws["z"]  # (K, batch, 2)
    params = [pyro.param(name).unconstrained() for name in names]
    a, c, tril, w = pyro.param("a"), pyro.param("c"), pyro.param("tril"), pyro.param("w")
    log_p = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(z @ w.T + B, NOISE).log_prob(x).sum(-1)
    log_q = dist.MultivariateNormal(x @ a + c, scale_tril=tril).log_prob(z)
    log_w = log_p - log_q.detach()
    weights = torch.softmax(log_w.detach(), 0)
    wake_theta = -(log_w.logsumexp(0) - math.log(6)).sum()
    wake_phi = -(weights * log_q).sum()
    by_hand = torch.autograd.grad(wake_theta + wake_phi, params)
    assert torch.allclose(rws, torch.cat([g.reshape(-1) for g in by_hand]), atol=1e-5)
    assert by_hand[3].abs().max() > 1e-3


# a discrete model: c ~ Categorical(softmax(pi)), x | c ~ N(mu_c, 1); q(c | x) = Categorical(logits = x a + b)
def discrete_model(x):
    pi = pyro.param("pi", torch.tensor([0.2, -0.3, 0.1]))
    mu = pyro.param("mu", torch.tensor([-1.5, 0.0, 2.0]))
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Categorical(logits=pi))
        pyro.sample("x", dist.Normal(mu[c], 1.0), obs=x)


def discrete_guide(x):
    a = pyro.param("a", torch.tensor([-0.8, 0.1, 0.9]))
    b = pyro.param("b", torch.tensor([0.3, 0.0, -0.2]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.Categorical(logits=x[:, None] * a + b), infer={"enumerate": "parallel"})


def exact_iwae_gradient(x0: float, k: int, names: list) -> torch.Tensor:
    """d/dparams of E[log (1/K) sum_k w_k] for one point, the expectation summed over all 3^K draws."""
    pi, mu, a, b = (pyro.param(name) for name in ("pi", "mu", "a", "b"))
    x = torch.tensor(x0)
    log_q = torch.log_softmax(x * a + b, -1)
    log_w = torch.log_softmax(pi, -1) + dist.Normal(mu, 1.0).log_prob(x) - log_q
    expectation = 0.0
    for draw in itertools.product(range(3), repeat=k):
        index = torch.tensor(draw)
        expectation = expectation + log_q[index].sum().exp() * (log_w[index].logsumexp(0) - math.log(k))
    grads = torch.autograd.grad(expectation, [pyro.param(name) for name in names])
    return torch.cat([g.reshape(-1) for g in grads])


def test_vimco_expected_gradient_is_the_exact_gradient_summed_over_every_draw(store):
    names = ["pi", "mu", "a", "b"]
    x = torch.full((400,), 0.7)
    samples = torch.stack([gradients(VIMCO_ELBO(3), discrete_model, discrete_guide, x, names) / 400
                           for _ in range(80)])
    exact = -exact_iwae_gradient(0.7, 3, names)  # the loss is minus the bound
    standard_error = samples.std(0) / math.sqrt(80)
    assert ((samples.mean(0) - exact).abs() < 4.5 * standard_error + 1e-6).all(), \
        ((samples.mean(0) - exact).abs() / standard_error)
    assert exact[6:].abs().max() > 1e-2  # the guide's gradient is not trivially zero


def test_leave_one_out_replaces_each_log_weight_by_the_mean_of_the_others():
    log_w = torch.tensor([[0.0], [1.0], [3.0]])
    expected = [math.log((math.exp(2) + math.exp(1) + math.exp(3)) / 3),  # log w_0 -> (1 + 3) / 2
                math.log((1 + math.exp(1.5) + math.exp(3)) / 3),  # log w_1 -> (0 + 3) / 2
                math.log((1 + math.exp(1) + math.exp(0.5)) / 3)]  # log w_2 -> (0 + 1) / 2
    assert leave_one_out(log_w).squeeze(-1).tolist() == pytest.approx(expected)


def test_tmc_is_the_iwae_bound_for_one_latent_site(store):
    x = torch.randn(8, 3)
    pyro.set_rng_seed(4)
    iwae = IWAE_ELBO(20).loss(linear_model, wrong_guide, x)
    pyro.set_rng_seed(4)
    tmc = TMC_ELBO(20).loss(linear_model, wrong_guide, x)
    assert tmc == pytest.approx(iwae, rel=1e-4)


@pytest.mark.parametrize("make, message", [
    (lambda: VIMCO_ELBO(1), "at least 2 particles"),
    (lambda: MIWAE_ELBO(2, outer_particles=0), "outer particles M must be positive"),
    (lambda: CIWAE_ELBO(2, beta=1.5), "lies in [0, 1]"),
    (lambda: STL_ELBO(0), "must be positive"),
])
def test_bad_parameters_are_one_sentence(make, message):
    with pytest.raises(PyroVAEError, match=re.escape(message)):
        make()
