"""Known-answer checks of the ELBO and the importance-sampled log-likelihood."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import VAE, PyroVAEError
from pyro_vae.evaluation import elbo_per_datapoint, log_likelihood_iwae, negative_log_likelihood
from pyro_vae.models import LatentStructure


class LinearGaussian(LatentStructure):
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_3): log p(x) = log N(x; b, W W^T + s^2 I) in closed form.

    With ``exact_guide`` the guide is the true posterior, so every importance weight equals p(x).
    """

    def __init__(self, exact_guide: bool):
        super().__init__(x_dim=3)
        self.W = torch.tensor([[1.0, -0.5], [0.3, 2.0], [-1.2, 0.7]])
        self.b = torch.tensor([0.2, -0.1, 0.5])
        self.noise = 0.6
        self.exact_guide = exact_guide

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.noise).to_event(1), obs=x)

    def posterior(self, x):
        precision = torch.eye(2) + self.W.T @ self.W / self.noise ** 2
        cov = torch.linalg.inv(precision)
        loc = (x - self.b) @ self.W @ cov.T / self.noise ** 2
        return loc, cov

    def guide(self, x):
        loc, cov = self.posterior(x)
        if not self.exact_guide:  # a deliberately wrong, mean-field guide
            cov = torch.eye(2) * 0.5
            loc = loc + 0.3
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(loc, cov))

    def log_marginal(self, x):
        cov = self.W @ self.W.T + self.noise ** 2 * torch.eye(3)
        return dist.MultivariateNormal(self.b, cov).log_prob(x)


@pytest.fixture
def points():
    return torch.randn(40, 3) * 2.0


def test_exact_posterior_guide_makes_elbo_and_importance_sampling_exact(points):
    lg = LinearGaussian(exact_guide=True)
    truth = lg.log_marginal(points)
    estimate = log_likelihood_iwae(lg.model, lg.guide, (points,), num_samples=7)
    assert torch.allclose(estimate, truth, atol=1e-4)
    elbo = elbo_per_datapoint(lg.model, lg.guide, [(points,)])
    assert elbo == pytest.approx(truth.mean().item(), abs=1e-4)


def test_importance_sampling_converges_to_the_closed_form_with_a_wrong_guide(points):
    lg = LinearGaussian(exact_guide=False)
    truth = lg.log_marginal(points).mean().item()
    elbo = elbo_per_datapoint(lg.model, lg.guide, [(points,)], num_particles=2000)
    # max_rows forces many chunks, so chunked accumulation is exercised too
    estimate = -negative_log_likelihood(lg.model, lg.guide, [(points[:20],), (points[20:],)], num_samples=5000)
    assert elbo < truth - 0.5  # the wrong guide leaves a real gap
    assert estimate == pytest.approx(truth, abs=0.05)
    chunked = log_likelihood_iwae(lg.model, lg.guide, (points,), num_samples=5000, max_rows=4000).mean().item()
    assert chunked == pytest.approx(truth, abs=0.05)


def test_iwae_bound_is_at_least_the_elbo_and_grows_with_k(batch):
    vae = VAE(z_dim=4, hidden_dims=(32,))
    elbo = elbo_per_datapoint(vae.model, vae.guide, [(batch,)], num_particles=200)
    bounds = [log_likelihood_iwae(vae.model, vae.guide, (batch,), num_samples=k).mean().item()
              for k in (1, 10, 100, 1000)]
    # K = 1 is an unbiased estimate of the ELBO itself
    assert bounds[0] == pytest.approx(elbo, abs=3.0)
    assert all(b >= elbo for b in bounds[1:])
    assert bounds[1] < bounds[2] < bounds[3]


def test_importance_sampling_refuses_sites_outside_the_data_plate():
    def model(x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    def guide(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(PyroVAEError, match="outside the 'data' plate"):
        log_likelihood_iwae(model, guide, (torch.zeros(5),), num_samples=3)
    with pytest.raises(PyroVAEError, match="must be positive"):
        log_likelihood_iwae(model, guide, (torch.zeros(5),), num_samples=0)


def test_the_negative_log_likelihood_keeps_no_autograd_graph(monkeypatch):
    """Regression: with gradients on, every chunk's graph stayed alive through the running log-sum-exp
    (10 GB for 500 images with K = 5000)."""
    from pyro_vae.evaluation import bounds as evaluation
    from pyro_vae.models import VAE

    seen = []
    original = evaluation._Chunks.__call__

    def spy(self, *args, **kwargs):
        seen.append(torch.is_grad_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(evaluation._Chunks, "__call__", spy)
    vae = VAE(x_dim=6, z_dim=2, hidden_dims=[4])
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    nll = evaluation.negative_log_likelihood(vae.model, vae.guide, [(x,)], num_samples=10)
    assert seen and not any(seen) and nll > 0


def test_a_model_and_guide_that_disagree_on_a_batch_are_refused_by_both_bounds():
    """A guide with a site the model lacks (or the reverse) makes the "ELBO" no bound on log p(x) (with only a
    warning from Pyro): both measures refuse it on the batch where it happens, with one sentence."""
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            if x.shape[0] == 3:  # on the second, smaller batch only
                pyro.sample("w", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    batches = [(torch.zeros(4),), (torch.zeros(3),)]
    assert elbo_per_datapoint(model, guide, batches[:1]) < 0  # the first batch alone is fine
    for measure in (lambda: elbo_per_datapoint(model, guide, batches),
                    lambda: negative_log_likelihood(model, guide, batches, num_samples=5)):
        with pytest.raises(PyroVAEError, match="disagree on a batch of 3 images: its guide samples 'w', which its "
                                               "model lacks, so its ELBO and log-likelihood would be no bounds"):
            measure()

    def model_with_w(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("w", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(PyroVAEError, match="its model samples 'w', which its guide lacks"):
        negative_log_likelihood(model_with_w, guide, batches[:1], num_samples=5)


def test_the_importance_weights_refuse_programs_that_changed_since_the_sites_were_read():
    """Programs can change between two passes (the audit's guide gained a site after its third call, between the
    check of the sites and the weights): every call of log_weights compares them again."""
    from pyro_vae.inference.importance import log_weights

    calls = []

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        calls.append(1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            if len(calls) > 1:
                pyro.sample("w", dist.Normal(torch.zeros(x.shape[0]), 1.0))

    x = (torch.zeros(4),)
    assert log_weights(model, guide, x, 3, -2).shape == (1, 3, 4)
    with pytest.raises(PyroVAEError, match="disagree on a batch of 4 images: its guide samples 'w'"):
        log_weights(model, guide, x, 3, -2)
