"""One suite over every registered latent structure, then what is special about each."""
import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import PyroVAEError
from pyro_vae.errors import InvalidDataError
from pyro_vae.evaluation import elbo_per_datapoint, log_likelihood_iwae, rate_distortion
from pyro_vae.inference import make_elbo
from pyro_vae.models import MODELS, build_model
from pyro_vae.training import TrainConfig, Trainer, load_trained_model

SMALL = {"z_dim": 3, "hidden_dims": [24]}
#: smaller than the structures' defaults where those are large; the flows with 2 steps of small hypernets instead of
#: 4 of 100 units, which JIT compiling took most of their short training's time for (planar 1.9 s -> 1.0 s of CPU)
FLOW = {"num_flows": 2, "flow_hidden_dims": [16], "context_dim": 8}
SMALLER = {"factor-vae": {"discriminator_dims": [24]}, "planar-vae": FLOW, "sylvester-vae": FLOW, "iaf-vae": FLOW}


def make(name, **options):
    return build_model(name, **SMALL, **{**SMALLER.get(name, {}), **options})


def conditioning_for(model, n):
    return (torch.arange(n) % 10,) if model.needs_labels else ()


#: the structures over images; those over sequences meet the same checks in tests/models/test_sequence_structures.py
IMAGE_MODELS = sorted(name for name, cls in MODELS.items() if cls.data_kind == "images")


@pytest.fixture(params=IMAGE_MODELS)
def structure(request):
    return make(request.param)


def compiled_and_plain_losses(structure, batch, elbo: str, draws: int = 100, **options):
    """``elbo`` compiled (traced on 50 images) and plain, each evaluated ``draws`` times on 7 images (the last,
    smaller batch of an epoch), from torch seed 0. The model and guide are held, as SVI holds them: Pyro keys
    its compiled graphs on their ids."""
    model, guide = structure.model, structure.guide
    jit = make_elbo(elbo, jit=True, **options)
    jit.loss_and_grads(model, guide, batch, *conditioning_for(structure, 50))
    small = (batch[:7], *conditioning_for(structure, 7))
    plain = make_elbo(elbo, **options)
    torch.manual_seed(0)
    compiled = torch.tensor([jit.loss_and_grads(model, guide, *small) for _ in range(draws)])
    return compiled, torch.tensor([plain.loss(model, guide, *small) for _ in range(draws)])


def assert_same_mean(compiled, plain):
    """The two independent samples' means within 4 standard errors of their difference."""
    standard_error = (compiled.var() / len(compiled) + plain.var() / len(plain)).sqrt()
    assert abs(compiled.mean() - plain.mean()) < 4 * standard_error


def test_shapes_generation_and_reconstruction(structure, batch):
    cond = conditioning_for(structure, 50)
    assert structure.reconstruct(batch, *cond).shape == (50, 784)
    samples = structure.generate(6, *conditioning_for(structure, 6))
    assert samples.shape == (6, 784) and ((samples >= 0) & (samples <= 1)).all()
    codes = structure.encode(batch, *cond)
    assert codes.shape[0] == 50
    assert structure.decode(codes, *cond).shape == (50, 784)


def test_elbo_is_finite_and_importance_sampling_bounds_it(structure, batch):
    cond = conditioning_for(structure, 50)
    # 20 particles and K = 100 (50 and 200 took 3.4 s over the structures, the enumerated ones most): the bound
    # stays 0.6 to 6 nats above the ELBO, as it was
    elbo = elbo_per_datapoint(structure.model, structure.guide, [(batch, *cond)], num_particles=20)
    assert torch.isfinite(torch.tensor(elbo))
    bound = log_likelihood_iwae(structure.model, structure.guide, (batch, *cond), num_samples=100).mean().item()
    assert bound >= elbo


@pytest.mark.slow
def test_the_jit_compiled_elbo_agrees_with_trace_elbo_at_another_batch_size(structure, batch):
    """Training compiles every built-in structure's ELBO by default: traced on 50 images, it must give the
    plain Trace_ELBO's value on 7 (the last, smaller batch of an epoch) on average. (The compiled graph draws
    its noise otherwise, so the same seed gives other draws: measured, relative differences of 1e-4 to 8e-3.)
    100 draws each: a batch size or a constant baked into the graph moves the mean by far more than 4 standard
    errors (0.04% to 0.3% of the loss here)."""
    assert_same_mean(*compiled_and_plain_losses(structure, batch, "trace"))


def test_short_training_lowers_the_loss_and_checkpoints_round_trip(structure, tmp_path):
    name = next(key for key, cls in MODELS.items() if type(structure) is cls)
    dataset = "binarized-mnist-labelled" if structure.needs_labels else "binarized-mnist"
    labelled = {"num_labelled": 50} if structure.semi_supervised else {}
    config = TrainConfig(model=name, dataset=dataset, subset=300, batch_size=50, epochs=2, **labelled, **SMALL,
                         model_options=SMALLER.get(name, {}))
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda _: None)
    history = trainer.fit()
    assert history[-1]["valid_elbo"] > history[0]["valid_elbo"]
    loaded, loaded_config, _ = load_trained_model(tmp_path / "run")
    assert type(loaded) is type(trainer.model) and loaded_config == trainer.config
    for (key, a), (_, b) in zip(trainer.model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), key


def test_cvae_samples_depend_on_the_label():
    cvae = make("cvae")
    z = torch.randn(5, 3)
    as_three = cvae.decode(z, torch.full((5,), 3))
    as_eight = cvae.decode(z, torch.full((5,), 8))
    assert not torch.allclose(as_three, as_eight)
    assert torch.allclose(as_three, cvae.decode(z, torch.full((5,), 3)))


@pytest.mark.parametrize("labels, message", [(None, "needs a label y"), (torch.tensor([0, 10]), "from 0 to 9"),
                                             (torch.tensor([-1, 2]), "from 0 to 9"),
                                             (torch.tensor([1, 2, 3]), "expected 2 labels")])
def test_cvae_refuses_missing_or_bad_labels(labels, message):
    cvae = make("cvae")
    with pytest.raises(InvalidDataError, match=message):
        cvae.model(torch.zeros(2, 784), labels)


def test_cvae_on_data_without_training_labels_is_refused(tmp_path):
    config = TrainConfig(model="cvae", subset=100, **SMALL)
    with pytest.raises(PyroVAEError, match="needs labelled images"):
        Trainer(config, tmp_path / "run", progress=False)


def test_beta_one_reproduces_the_vae_loss_exactly_and_beta_scales_the_kl_exactly(batch):
    vae = make("vae")
    losses = {}
    for beta in (0.0, 1.0, 4.0):  # 0: the KL term dropped (Pyro's poutine.scale refuses a scale of 0)
        beta_vae = make("beta-vae", beta=beta)
        beta_vae.load_state_dict(vae.state_dict())
        pyro.set_rng_seed(5)
        losses[beta] = make_elbo("trace").loss(beta_vae.model, beta_vae.guide, batch)
    pyro.set_rng_seed(5)
    vae_loss = make_elbo("trace").loss(vae.model, vae.guide, batch)
    assert losses[1.0] == vae_loss
    # with the same z, -ELBO_beta = distortion + beta * rate
    pyro.set_rng_seed(5)
    parts = rate_distortion(vae.model, vae.guide, [(batch,)])
    n = batch.shape[0]
    assert losses[1.0] == pytest.approx(n * (parts["distortion"] + parts["rate"]), rel=1e-5)
    assert losses[4.0] == pytest.approx(n * (parts["distortion"] + 4.0 * parts["rate"]), rel=1e-5)
    assert losses[0.0] == pytest.approx(n * parts["distortion"], rel=1e-5)


def test_negative_beta_is_refused():
    with pytest.raises(PyroVAEError, match="beta of BetaVAE must be a finite number >= 0"):
        make("beta-vae", beta=-1.0)


def test_hierarchical_elbo_decomposes_into_its_three_terms(batch):
    hvae = make("hierarchical-vae", z1_dim=5, top_hidden_dims=[8])
    pyro.set_rng_seed(2)
    guide_trace = poutine.trace(hvae.guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(hvae.model, trace=guide_trace)).get_trace(batch)

    def log_p(trace, site):
        return trace.nodes[site]["fn"].log_prob(trace.nodes[site]["value"]).sum().item()

    reconstruction = log_p(model_trace, "x")
    kl_z1 = log_p(guide_trace, "z1") - log_p(model_trace, "z1")
    kl_z2 = log_p(guide_trace, "z2") - log_p(model_trace, "z2")
    pyro.set_rng_seed(2)
    loss = make_elbo("trace").loss(hvae.model, hvae.guide, batch)
    assert loss == pytest.approx(-(reconstruction - kl_z1 - kl_z2), rel=1e-5)
    assert guide_trace.nodes["z1"]["value"].shape == (50, 5) and guide_trace.nodes["z2"]["value"].shape == (50, 3)


def test_mixture_prior_is_learned_model_code(batch):
    model = make("mixture-prior-vae", num_components=4)
    trace = poutine.trace(model.model).get_trace(batch)
    prior_params = [name for name, site in trace.nodes.items() if site["type"] == "param" and name.startswith("prior$$$")]
    assert len(prior_params) == 3
    make_elbo("trace").differentiable_loss(model.model, model.guide, batch).backward()
    assert model.prior.locs.grad.abs().sum() > 0


def test_unknown_model_options_are_refused():
    with pytest.raises(PyroVAEError, match="has no option 'beta'"):
        build_model("vae", beta=2.0)


def test_kl_warmup_scales_the_latent_sites_from_zero(tmp_path):
    config = TrainConfig(subset=300, batch_size=50, epochs=2, kl_warmup=2, **SMALL)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert trainer.kl_weight() == 0.0
    trainer.step = 3
    assert trainer.kl_weight() == pytest.approx(3 / 12)
    trainer.step = 0
    history = trainer.fit()
    assert trainer.kl_weight() == 1.0 and len(history) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vae", "hierarchical-vae", "cvae", "vampprior"])
def test_the_jit_compiled_meanfield_elbo_is_compiled_once_and_agrees_with_trace_mean_field_elbo(name, batch,
                                                                                                 monkeypatch):
    """--elbo meanfield trains compiled by default: traced once (Pyro's JitTraceMeanField_ELBO traced the
    programs again at every step) on 50 images, on 7 it gives TraceMeanField_ELBO's value on average: the
    closed-form KL of two normals (vae, cvae, the hierarchical VAE's levels) or its Monte Carlo estimate where
    Pyro has none (VampPrior's mixture)."""
    traces = []
    jit_trace = torch.jit.trace
    monkeypatch.setattr(torch.jit, "trace", lambda *args, **kwargs: traces.append(1) or jit_trace(*args, **kwargs))
    compiled, plain = compiled_and_plain_losses(make(name), batch, "meanfield")
    assert len(traces) == 1  # over 101 calls
    assert_same_mean(compiled, plain)


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_kl_warmup_weight_stays_live_in_the_jit_compiled_elbo(tmp_path, elbo):
    """The weight is an argument of the traced ELBO, so the loss is linear in it rather than frozen at 0."""
    trainer = Trainer(TrainConfig(subset=300, batch_size=50, kl_warmup=2, elbo=elbo, **SMALL), tmp_path / "run",
                      progress=False, log=lambda _: None)
    assert trainer.jit
    (x,) = next(iter(trainer.batches("train")))
    trainer.compile((x,))
    losses = {}
    for weight in (0.0, 0.5, 1.0):
        torch.manual_seed(0)  # the same z for every weight
        losses[weight] = trainer.elbo.loss_and_grads(trainer.svi.model, trainer.svi.guide, x, torch.tensor(weight))
    assert losses[1.0] - losses[0.0] > 1.0  # the KL part of a fresh VAE's loss
    assert losses[0.5] == pytest.approx((losses[0.0] + losses[1.0]) / 2, rel=1e-6)


def test_beta_sweep_refuses_repeated_betas_before_training(tmp_path):
    from pyro_vae.sweeps import beta_sweep

    with pytest.raises(PyroVAEError, match="each beta may appear once"):
        beta_sweep([1.0, 1.0], TrainConfig(subset=100, **SMALL), tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in IMAGE_MODELS if MODELS[name].default_elbo == "enum"])
def test_the_jit_compiled_enumerated_elbo_agrees_with_trace_enum_elbo_at_another_batch_size(name, batch):
    """The discrete structures train JitTraceEnum_ELBO by default: traced on 50 images, on 7 it must give
    TraceEnum_ELBO's value (exactly where everything is enumerated, on average where z is sampled too)."""
    draws = 1 if name == "bernoulli-mixture" else 100  # nothing is drawn there: one evaluation is the value
    compiled, eager = compiled_and_plain_losses(make(name), batch, "enum", draws, max_plate_nesting=1)
    if name == "bernoulli-mixture":
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=0)
    else:
        assert_same_mean(compiled, eager)


def test_a_penalty_given_as_a_function_is_trained_on_and_never_computed_while_measured():
    """A structure of one's own writes penalty(name, lambda: ...): SVI's loss includes the term, every
    measurement neither counts nor computes it."""
    import pyro.distributions as dist

    from pyro_vae.scaling import penalty
    from pyro_vae.models import VAE

    calls = []

    class Penalized(VAE):
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                self.observe(self.decoder(z), x)
                penalty("norm", lambda: calls.append(1) or -z.pow(2).sum(-1))

    torch.manual_seed(0)
    penalized = Penalized(**SMALL)
    plain = VAE(**SMALL)
    plain.load_state_dict(penalized.state_dict())
    x = torch.bernoulli(torch.full((6, 784), 0.4))
    batches = [(x,)]
    for measure in (lambda m: elbo_per_datapoint(m.model, m.guide, batches),
                    lambda m: rate_distortion(m.model, m.guide, batches)):
        torch.manual_seed(1)
        measured = measure(penalized)
        torch.manual_seed(1)
        assert measured == pytest.approx(measure(plain))
    torch.manual_seed(1)
    log_p = log_likelihood_iwae(penalized.model, penalized.guide, (x,), num_samples=5)
    torch.manual_seed(1)
    assert torch.allclose(log_p, log_likelihood_iwae(plain.model, plain.guide, (x,), num_samples=5))
    assert calls == []
    from conftest import trace_losses

    losses = trace_losses(x, {"penalized": penalized, "plain": plain}, seed=2)
    torch.manual_seed(2)
    z = poutine.trace(penalized.guide).get_trace(x).nodes["z"]["value"]
    assert len(calls) == 1
    assert losses["penalized"] == pytest.approx(losses["plain"] + z.pow(2).sum().item(), rel=1e-5)
