"""The VampPrior VAE: its prior is the hand-written mixture of the encoder at the pseudo-inputs, one pseudo-input
gives one Gaussian, it trains, checkpoints and samples; and the gated hidden layers of its paper."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae.errors import PyroVAEError
from pyro_vae.models import MODELS, build_model
from pyro_vae.models.vampprior import UniformGaussianMixture, VampPriorVAE
from pyro_vae.networks import GatedDense, GaussianMLP, mlp
from pyro_vae.training import TrainConfig, Trainer, load_trained_model

TINY = {"z_dim": 3, "hidden_dims": [16]}


def hand_log_prior(model, z):
    """log (1/K) sum_k N(z; mu(u_k), sigma(u_k)), written out in float64, u_k = clamp(W^T, 0, 1)."""
    u = model.pseudo_inputs.linear.weight.detach().T.clamp(0, 1)
    loc, scale = (t.detach().double() for t in model.encoder(u))  # (K, D)
    z = z.double().unsqueeze(-2)  # (..., 1, D)
    log_normal = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return torch.logsumexp(log_normal, -1) - math.log(loc.shape[0])


def model_log_prior(model, x, z, particles=None):
    conditioned = poutine.condition(model.model, data={"z": z})
    if particles is None:
        trace = poutine.trace(conditioned).get_trace(x)
    else:  # as Pyro's vectorize_particles and evaluation.log_likelihood_iwae put them
        with pyro.plate("particles", particles, dim=-2):
            trace = poutine.trace(conditioned).get_trace(x)
    site = trace.nodes["z"]
    assert isinstance(site["fn"], UniformGaussianMixture)
    return site["fn"].log_prob(site["value"])


def test_log_prior_is_the_mixture_of_the_encoder_at_the_pseudo_inputs_with_and_without_particles(batch):
    model = build_model("vampprior", **TINY, num_pseudo_inputs=7)
    x = batch[:5]
    z = 3 * torch.randn(5, 3) + 1  # away from the origin too
    expected = hand_log_prior(model, z)
    torch.testing.assert_close(model_log_prior(model, x, z).double(), expected, rtol=1e-5, atol=1e-5)
    zs = torch.randn(4, 5, 3)
    got = model_log_prior(model, x, zs, particles=4)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got.double(), hand_log_prior(model, zs), rtol=1e-5, atol=1e-5)
    # and what Pyro's own mixture gives, broadcast the same way
    loc, scale = model.encoder(model.pseudo_inputs())
    reference = dist.MixtureSameFamily(dist.Categorical(logits=torch.zeros(7)), dist.Normal(loc, scale).to_event(1))
    torch.testing.assert_close(got, reference.expand((4, 5)).log_prob(zs), rtol=1e-5, atol=1e-5)


def test_vectorized_particles_give_the_elbo_of_single_particles(batch):
    model = build_model("vampprior", **TINY, num_pseudo_inputs=7)
    x = batch[:5]
    torch.manual_seed(1)
    vectorized = Trace_ELBO(num_particles=100, vectorize_particles=True, max_plate_nesting=1).loss(
        model.model, model.guide, x)
    with pyro.validation_enabled(False):
        single = torch.tensor([Trace_ELBO().loss(model.model, model.guide, x) for _ in range(100)])
    assert abs(vectorized - single.mean().item()) < 4 * 2 ** 0.5 * single.std() / 100 ** 0.5


def test_the_mixture_samples_each_component_equally_often():
    loc = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    scale = torch.full((3, 2), 0.1)
    draws = UniformGaussianMixture(loc, scale).expand((3000,)).sample((2,))
    assert draws.shape == (2, 3000, 2)
    distance, component = torch.cdist(draws.reshape(-1, 2), loc).min(1)
    assert (distance < 0.6).all()  # within 6 scales of a component
    counts = torch.bincount(component, minlength=3) / 6000
    assert ((counts - 1 / 3).abs() < 0.03).all(), counts  # 5 standard errors


def test_one_pseudo_input_is_a_single_gaussian(batch):
    model = build_model("vampprior", **TINY, num_pseudo_inputs=1)
    image = batch[0]
    with torch.no_grad():
        model.pseudo_inputs.linear.weight.copy_(image[:, None])
    u = model.pseudo_inputs()
    assert torch.equal(u, image[None])
    loc, scale = model.encoder(image[None])
    z = torch.randn(6, 3)
    torch.testing.assert_close(model_log_prior(model, batch[:6], z),
                               dist.Normal(loc[0], scale[0]).log_prob(z).sum(-1), rtol=1e-5, atol=1e-5)
    draws = model.prior().expand((20000,)).sample()
    torch.testing.assert_close(draws.mean(0), loc[0].detach(), atol=5 * scale.max().item() / 20000 ** 0.5, rtol=0)
    # pseudo-inputs stay pixels: hardtanh(0, 1)
    with torch.no_grad():
        model.pseudo_inputs.linear.weight.fill_(2.0)[:10] = -1.0
    assert torch.equal(model.pseudo_inputs()[0], torch.cat([torch.zeros(10), torch.ones(774)]))


def test_pseudo_input_initialisations(small_data):
    images = small_data.train.images
    random = build_model("vampprior", **TINY, num_pseudo_inputs=20)
    weights = random.pseudo_inputs.linear.weight.detach().clone()
    assert abs(weights.mean() - 0.05) < 0.002 and abs(weights.std() - 0.01) < 0.002  # the reference's N(0.05, 0.01)
    random.initialize(images, torch.Generator().manual_seed(0))
    assert torch.equal(random.pseudo_inputs.linear.weight, weights)
    data = build_model("vampprior", **TINY, num_pseudo_inputs=20, pseudo_input_init="data")
    data.initialize(images, torch.Generator().manual_seed(0))
    u = data.pseudo_inputs()
    nearest = torch.cdist(u, images).min(1)
    assert (nearest.values < 0.01 * 784 ** 0.5 * 1.5).all()  # each a training image plus N(0, 0.01) noise
    assert len(set(nearest.indices.tolist())) == 20  # different images
    with pytest.raises(PyroVAEError, match="pseudo_input_init"):
        build_model("vampprior", pseudo_input_init="kmeans")
    with pytest.raises(PyroVAEError, match="num_pseudo_inputs"):
        build_model("vampprior", num_pseudo_inputs=0)


def test_training_moves_the_pseudo_inputs_and_checkpoints_round_trip(tmp_path):
    options = {"num_pseudo_inputs": 10, "pseudo_input_init": "data"}
    config = TrainConfig(model="vampprior", subset=100, batch_size=50, epochs=2, z_dim=2, hidden_dims=[16], jit=False,
                         activation="gated", model_options=options, seed=3)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert isinstance(trainer.model, VampPriorVAE) and trainer.model.config()["pseudo_input_init"] == "data"
    initial = trainer.model.pseudo_inputs().detach().clone()
    assert torch.cdist(initial, trainer.dataset.train.images).min(1).values.max() < 0.5  # data-initialised
    history = trainer.fit()
    assert len(history) == 2 and all(math.isfinite(row["valid_elbo"]) for row in history)
    assert not torch.equal(trainer.model.pseudo_inputs(), initial)  # the prior is learned
    loaded, loaded_config, _ = load_trained_model(tmp_path / "run")
    assert isinstance(loaded, VampPriorVAE) and loaded_config == trainer.config
    assert loaded.config() == trainer.model.config()
    state, loaded_state = trainer.model.state_dict(), loaded.state_dict()
    assert list(state) == list(loaded_state) and "pseudo_inputs.linear.weight" in state
    for key in state:
        assert torch.equal(state[key], loaded_state[key]), key


def test_generate_samples_the_mixture_and_decodes_images():
    model = build_model("vampprior", **TINY, num_pseudo_inputs=5)
    images = model.generate(8)
    assert images.shape == (8, 784) and ((images >= 0) & (images <= 1)).all()
    trace = poutine.trace(poutine.uncondition(model.model)).get_trace(torch.zeros(8, 784))
    assert trace.nodes["z"]["value"].shape == (8, 3) and not trace.nodes["z"]["is_observed"]
    assert model.generate_per_value(2) is None  # the component is summed in the density, not a site


def test_a_gated_mlp_is_the_hand_formula():
    torch.manual_seed(0)
    net = mlp([5, 4, 6, 3], "gated")
    x = torch.randn(2, 5)
    h = x
    for layer in net[:2]:
        assert isinstance(layer, GatedDense)
        h = (h @ layer.h.weight.T + layer.h.bias) * torch.sigmoid(h @ layer.g.weight.T + layer.g.bias)
    last = net[2]
    torch.testing.assert_close(net(x), h @ last.weight.T + last.bias)
    encoder = GaussianMLP(5, [4], 2, "gated")
    gate = encoder.trunk[0]
    h = (x @ gate.h.weight.T + gate.h.bias) * torch.sigmoid(x @ gate.g.weight.T + gate.g.bias)
    loc, scale = encoder(x)
    torch.testing.assert_close(loc, h @ encoder.loc.weight.T + encoder.loc.bias)
    torch.testing.assert_close(scale, torch.nn.functional.softplus(h @ encoder.scale.weight.T + encoder.scale.bias)
                               + 1e-4)


def test_the_other_activations_keep_their_layers_and_checkpoint_layout():
    assert list(GaussianMLP(5, [4, 4], 2, "relu").state_dict()) == [
        "trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias",
        "loc.weight", "loc.bias", "scale.weight", "scale.bias"]
    assert [type(m).__name__ for m in mlp([5, 4, 3], "tanh")] == ["Linear", "Tanh", "Linear"]


@pytest.mark.parametrize("name", sorted(name for name, cls in MODELS.items() if cls.data_kind == "images"))
def test_every_structure_builds_and_runs_with_gated_layers(name, batch):
    model = build_model(name, **TINY, activation="gated")
    assert any(isinstance(m, GatedDense) for m in model.modules())
    conditioning = (torch.arange(10) % 10,) if model.needs_labels else ()
    assert model.reconstruct(batch[:10], *conditioning).shape == (10, 784)
