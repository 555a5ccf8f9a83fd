"""The VAE as a Pyro program: shapes, generation and reconstruction, the ELBO classes, bad batches."""
import pytest
import torch
from pyro import poutine

from pyro_vae import VAE, InvalidDataError, PyroVAEError, build_model
from pyro_vae.inference import make_elbo


@pytest.fixture
def vae():
    return VAE(z_dim=4, hidden_dims=(32,))


def test_model_and_guide_sites_have_the_expected_shapes(vae, batch):
    guide_trace = poutine.trace(vae.guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(batch)
    assert guide_trace.nodes["z"]["value"].shape == (50, 4)
    assert model_trace.nodes["z"]["fn"].event_shape == (4,)
    assert model_trace.nodes["x"]["fn"].batch_shape == (50,)
    assert model_trace.nodes["x"]["fn"].event_shape == (784,)
    assert torch.equal(model_trace.nodes["z"]["value"], guide_trace.nodes["z"]["value"])
    model_trace.compute_log_prob()
    assert torch.isfinite(model_trace.log_prob_sum())


def test_guide_sample_is_reparameterized_so_gradients_reach_the_encoder(vae, batch):
    loss = make_elbo("trace").differentiable_loss(vae.model, vae.guide, batch)
    loss.backward()
    for name, param in vae.encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_generate_reconstruct_encode_decode(vae, batch):
    samples = vae.generate(7)
    assert samples.shape == (7, 784) and ((samples >= 0) & (samples <= 1)).all()
    recon = vae.reconstruct(batch)
    assert recon.shape == batch.shape and torch.isfinite(recon).all()
    codes = vae.encode(batch)
    assert codes.shape == (50, 4)
    loc, _ = vae.encoder(batch)
    assert torch.allclose(codes, loc)
    decoded = vae.decode(codes)
    assert torch.allclose(decoded, torch.sigmoid(vae.decoder(codes)), atol=1e-6)


@pytest.mark.parametrize("bad", [torch.zeros(5, 783), torch.zeros(784), torch.zeros(2, 28, 28)])
def test_a_batch_of_the_wrong_shape_names_the_expected_shape(vae, bad):
    for program in (vae.model, vae.guide):
        with pytest.raises(ValueError, match=r"expected a batch of shape \(batch_size, 784\)"):
            program(bad)


@pytest.mark.slow
def test_trace_elbo_and_meanfield_elbo_agree_in_expectation(vae, batch):
    """TraceMeanField_ELBO replaces the Monte Carlo KL by the analytic one; both estimate the same ELBO."""
    repeats, particles = 200, 20
    estimates = {}
    for name in ("trace", "meanfield"):
        elbo = make_elbo(name, num_particles=particles)
        estimates[name] = torch.tensor([elbo.loss(vae.model, vae.guide, batch) for _ in range(repeats)])
    diff = estimates["trace"].mean() - estimates["meanfield"].mean()
    standard_error = (estimates["trace"].var() / repeats + estimates["meanfield"].var() / repeats).sqrt()
    assert abs(diff) < 4 * standard_error


def test_build_model_refuses_an_unknown_name():
    with pytest.raises(PyroVAEError, match="unknown model 'nope'; choose one of"):
        build_model("nope")


def test_the_bernoulli_likelihood_refuses_non_binary_data(vae):
    with pytest.raises(InvalidDataError, match="binary pixels"):
        vae.model(torch.full((3, 784), 0.5))


def test_check_images_refuses_nan_and_inf():
    from pyro_vae.data import check_images

    for value in (float("nan"), float("inf"), float("-inf")):
        images = torch.zeros(4, 784)
        images[1, 3] = value
        with pytest.raises(InvalidDataError, match="NaN or Inf"):
            check_images(images)
    for value in (2.0, -0.5):
        with pytest.raises(InvalidDataError, match="outside"):
            check_images(torch.full((2, 784), value))
    check_images(torch.tensor([[0.0, 1.0] * 392, [0.5] * 784]))  # the ends of [0, 1] and between: accepted
