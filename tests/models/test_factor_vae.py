"""FactorVAE: a discriminator that learns the total correlation, its two training terms and their gradients, and
measurements of the generative model alone (issue 12)."""
import math

import pytest
import torch
from pyro import poutine

from conftest import assert_measured_alike, trace_losses
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference import make_elbo
from pyro_vae.models import VAE, FactorVAE, build_model
from pyro_vae.models.factor_vae import shuffle_dimensions


def _same_weights(gamma):
    torch.manual_seed(0)
    factor = FactorVAE(z_dim=3, hidden_dims=[16], gamma=gamma, discriminator_dims=[8, 8])
    vae = VAE(z_dim=3, hidden_dims=[16])
    vae.load_state_dict({k: v for k, v in factor.state_dict().items() if not k.startswith("discriminator")})
    return factor, vae


def test_shuffling_permutes_each_dimension_of_the_batch_on_its_own():
    z = torch.arange(40.0).reshape(2, 10, 2)  # two particles of a batch of 10 codes
    shuffled = shuffle_dimensions(z, torch.Generator().manual_seed(0))
    for j in range(2):
        assert sorted(shuffled[0, :, j].tolist()) == z[0, :, j].tolist()  # a permutation of the batch's values
    assert not torch.equal(shuffled[0, :, 0].argsort(), shuffled[0, :, 1].argsort())  # not the same one
    assert torch.equal(shuffled[1] - 20, shuffled[0])  # the same for every particle


@pytest.mark.slow
@pytest.mark.parametrize("rho", [0.0, 0.8, 0.95])
def test_the_discriminator_learns_the_total_correlation_of_a_correlated_gaussian(rho):
    """Trained on its own term, the discriminator's mean logit over q(z) is the density-ratio estimate of
    KL(q(z) || q(z_1) q(z_2)), which for a Gaussian of correlation rho is -log(1 - rho^2) / 2 (0, 0.51 and 1.16
    nats here; over seeds 0 to 4 the estimates stayed within 0.06 of them)."""
    torch.manual_seed(0)
    structure = FactorVAE(z_dim=2, hidden_dims=[8], discriminator_dims=[64])
    optimizer = torch.optim.Adam(structure.discriminator.parameters(), lr=5e-3)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    for _ in range(400):
        z = torch.randn(512, 2) @ chol.T
        loss = -structure.discriminator_log_likelihood(z).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        estimate = structure.total_correlation(torch.randn(20000, 2) @ chol.T).mean().item()
    assert estimate == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.08)


def test_the_penalty_trains_the_encoder_and_the_classification_trains_the_discriminator():
    factor, _ = _same_weights(gamma=10.0)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    guide = poutine.trace(factor.guide).get_trace(x)
    model = poutine.trace(poutine.replay(factor.model, trace=guide)).get_trace(x)
    encoder = list(factor.encoder.parameters())
    discriminator = list(factor.discriminator.parameters())
    penalty, classification = (model.nodes[name]["fn"].log_factor.sum()
                               for name in ("total_correlation", "discriminator"))
    grads = torch.autograd.grad(penalty, encoder + discriminator, allow_unused=True, retain_graph=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads[:len(encoder)])
    assert all(g is None or g.abs().sum() == 0 for g in grads[len(encoder):])
    grads = torch.autograd.grad(classification, encoder + discriminator, allow_unused=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads[:len(encoder)])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[len(encoder):])


def test_the_training_objective_is_the_elbo_minus_gamma_tc_plus_the_classification_log_likelihood():
    factor, vae = _same_weights(gamma=10.0)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = trace_losses(x, {"factor": factor, "vae": vae}, seed=1)
    torch.manual_seed(1)
    z = poutine.trace(factor.guide).get_trace(x).nodes["z"]["value"]
    tc = factor.total_correlation(z).sum().item()
    classification = factor.discriminator_log_likelihood(z).sum().item()
    assert loss["factor"] == pytest.approx(loss["vae"] + 10.0 * tc - classification, rel=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_kl_warmup_scales_the_tc_term_with_the_kl_and_leaves_the_discriminator_its_whole_weight(weight):
    factor, vae = _same_weights(gamma=10.0)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = trace_losses(x, {"factor": factor, "vae": vae}, seed=1, kl_weight=weight)
    torch.manual_seed(1)
    z = poutine.trace(factor.guide).get_trace(x).nodes["z"]["value"]
    tc = factor.total_correlation(z).sum().item()
    classification = factor.discriminator_log_likelihood(z).sum().item()
    assert loss["factor"] == pytest.approx(loss["vae"] + weight * 10.0 * tc - classification, rel=1e-5)


def test_the_reported_elbo_and_likelihood_are_those_of_the_generative_model_alone():
    factor, vae = _same_weights(gamma=40.0)
    assert_measured_alike(factor, vae)


@pytest.mark.slow
def test_trains_from_the_command_line_and_refuses_a_negative_gamma(cli, tmp_path):
    from conftest import TINY, assert_one_sentence_error

    run = tmp_path / "run"
    code, out, err = cli("train", "--model", "factor-vae", "--model-option", "gamma=10",
                         "--model-option", "discriminator_dims=[16]", "--run-dir", run, *TINY)
    assert code == 0, err
    assert "test NLL" in out
    with pytest.raises(PyroVAEError, match="gamma of FactorVAE must be a finite number >= 0"):
        build_model("factor-vae", gamma=-1.0)
    code, _, err = cli("train", "--model", "factor-vae", "--model-option", "gamma=-2", "--run-dir", tmp_path / "bad",
                       *TINY)
    assert_one_sentence_error(code, err, "gamma of FactorVAE must be a finite number >= 0")


def test_under_the_iwae_objective_the_discriminator_term_still_leaves_the_encoder_alone():
    """The training terms join the IWAE bound outside its log-mean-exp: inside, the discriminator's term would
    reweight the particles and so move the encoder."""
    factor, _ = _same_weights(gamma=0.0)
    x = torch.bernoulli(torch.full((5, 784), 0.3), generator=torch.Generator().manual_seed(0))
    grads = []
    for bias in (0.0, 3.0):
        with torch.no_grad():
            factor.discriminator.net[-1].bias.fill_(bias)
        factor.zero_grad()
        torch.manual_seed(3)
        make_elbo("iwae", num_particles=4).differentiable_loss(factor.model, factor.guide, x).backward()
        grads.append([p.grad.clone() for p in factor.encoder.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_measurements_skip_the_discriminator(monkeypatch):
    from pyro_vae.evaluation import elbo_per_datapoint, negative_log_likelihood, rate_distortion
    from pyro_vae.models.factor_vae import Discriminator

    factor, _ = _same_weights(gamma=10.0)
    calls = []
    forward = Discriminator.forward
    monkeypatch.setattr(Discriminator, "forward", lambda self, z, **kw: calls.append(1) or forward(self, z, **kw))
    batches = [(torch.bernoulli(torch.full((4, 784), 0.3)),)]
    elbo_per_datapoint(factor.model, factor.guide, batches)
    negative_log_likelihood(factor.model, factor.guide, batches, num_samples=10)
    rate_distortion(factor.model, factor.guide, batches)  # what beta-sweep measures
    assert calls == []
    make_elbo("trace").loss(factor.model, factor.guide, *batches[0])  # training runs it: the held and the free
    assert len(calls) == 3
