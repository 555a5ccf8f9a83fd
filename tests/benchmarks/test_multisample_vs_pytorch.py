"""The multi-sample benchmark's hand-written estimators compute what the library's objectives compute."""
import importlib.util

import pyro
import pytest
import torch

from conftest import REPO
from pyro_vae import VAE
from pyro_vae.inference import make_elbo

spec = importlib.util.spec_from_file_location("multisample_vs_pytorch", REPO / "benchmarks" / "multisample_vs_pytorch.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def library_loss_and_grads(name, vae, x, draws):
    """The objective's loss and gradients, its draws being the first random numbers after seed 1."""
    options = benchmark.trainer_options(name, draws)
    elbo = make_elbo(options.pop("elbo"), max_plate_nesting=1, **options)
    params = list(vae.parameters())
    for param in params:
        param.grad = None
    torch.manual_seed(1)
    with pyro.validation_enabled(False):
        loss = elbo.loss_and_grads(vae.model, vae.guide, x)
    grads = [param.grad.clone() for param in params]
    for param in params:
        param.grad = None
    return loss, grads


@pytest.mark.parametrize("name", ["stl", "dreg", "miwae", "ciwae", "rws", "renyi", "tmc", "piwae"])
def test_the_hand_written_estimator_has_the_librarys_value_and_gradients_on_the_same_draw(name):
    torch.manual_seed(0)
    vae = VAE(z_dim=3, hidden_dims=[16])
    x = torch.bernoulli(torch.full((5, 784), 0.3))
    loss, grads = library_loss_and_grads(name, vae, x, 4)
    torch.manual_seed(1)
    eps = torch.randn(4, 5, 3)
    params = list(vae.parameters())
    if name == "piwae":
        _, log_p, log_q = benchmark._parts(vae, x, eps)
        log_w = log_p - log_q
        iwae = -benchmark._log_mean_exp(log_w).sum()
        miwae = -benchmark._log_mean_exp(log_w.reshape(2, -1, 5), 1).mean(0).sum()
        encoder, decoder = list(vae.encoder.parameters()), list(vae.decoder.parameters())
        expected_grads = [*torch.autograd.grad(miwae, encoder, retain_graph=True), *torch.autograd.grad(iwae, decoder)]
        expected_loss = iwae.item()
        params = encoder + decoder
        grads = [grad for param, grad in zip(vae.parameters(), grads)]  # vae.parameters() is encoder then decoder
    else:
        hand = benchmark.LOSSES[name](vae, x, eps)
        expected_grads = torch.autograd.grad(hand, params)
        expected_loss = hand.item()
    if name not in ("dreg", "rws", "stl"):  # their surrogates are not their bounds; the bounds are checked elsewhere
        assert loss == pytest.approx(expected_loss, rel=1e-5)
    # Pyro's TraceTMC_ELBO contracts its tensors in another order: the same numbers to about 1e-4
    rtol, atol = (1e-3, 1e-4) if name == "tmc" else (1e-4, 1e-5)
    for got, want in zip(grads, expected_grads):
        assert torch.allclose(got, want, rtol=rtol, atol=atol), name
