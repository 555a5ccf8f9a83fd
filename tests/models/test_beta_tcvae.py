"""beta-TCVAE: the minibatch-weighted total-correlation estimate, the objective ELBO - (beta - 1) TC, and
measurements of the generative model alone (issue 12)."""
import math

import pytest
import torch
from pyro import poutine

from conftest import assert_measured_alike, trace_losses
from pyro_vae.scaling import scale_latents
from pyro_vae.models import VAE, BetaTCVAE, build_model
from pyro_vae.models.beta_tcvae import total_correlation
from pyro_vae.errors import PyroVAEError


def test_the_total_correlation_is_the_minibatch_weighted_estimate_written_out():
    torch.manual_seed(0)
    m, d, n = 5, 3, 1000
    loc, scale = torch.randn(m, d, dtype=torch.float64), torch.rand(m, d, dtype=torch.float64) + 0.5
    z = loc + scale * torch.randn(m, d, dtype=torch.float64)

    def normal(value, mu, sigma):
        return math.exp(-0.5 * ((value - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))

    expected = []
    for i in range(m):
        joint = sum(math.prod(normal(z[i, j], loc[k, j], scale[k, j]) for j in range(d)) for k in range(m))
        marginals = [sum(normal(z[i, j], loc[k, j], scale[k, j]) for k in range(m)) for j in range(d)]
        log_q = math.log(joint / (n * m))
        expected.append(log_q - sum(math.log(q / (n * m)) for q in marginals))
    got = total_correlation(z, loc, scale, n)
    assert got.tolist() == pytest.approx(expected, rel=1e-10)
    # leading (particle) dimensions are kept
    assert total_correlation(z.expand(4, m, d), loc, scale, n).shape == (4, m)


def _same_weights(beta):
    torch.manual_seed(0)
    tcvae = BetaTCVAE(z_dim=3, hidden_dims=[16], beta=beta)
    tcvae.dataset_size.fill_(500)
    vae = VAE(z_dim=3, hidden_dims=[16])
    vae.load_state_dict({k: v for k, v in tcvae.state_dict().items() if k != "dataset_size"})
    return tcvae, vae


def test_the_training_objective_is_the_elbo_minus_beta_minus_one_times_the_total_correlation():
    tcvae, vae = _same_weights(beta=4.0)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = trace_losses(x, {"tcvae": tcvae, "vae": vae}, seed=1)
    torch.manual_seed(1)
    guide = poutine.trace(tcvae.guide).get_trace(x)
    loc, scale = tcvae.encoder(x)
    tc = total_correlation(guide.nodes["z"]["value"], loc, scale, 500).sum().item()
    assert loss["tcvae"] == pytest.approx(loss["vae"] + 3.0 * tc, rel=1e-5)
    # beta = 1 is the VAE: no penalty site at all
    plain, vae = _same_weights(beta=1.0)
    assert "total_correlation" not in poutine.trace(plain.model).get_trace(x).nodes


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_kl_warmup_scales_the_penalty_with_the_kl_it_reweights(weight):
    # with the KL weighted by w, the objective is E log p(x | z) - w (KL + (beta - 1) TC): at w = 0 the
    # reconstruction alone, as for the VAE
    tcvae, vae = _same_weights(beta=4.0)
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    loss = trace_losses(x, {"tcvae": tcvae, "vae": vae}, seed=1, kl_weight=weight)
    torch.manual_seed(1)
    guide = poutine.trace(tcvae.guide).get_trace(x)
    loc, scale = tcvae.encoder(x)
    tc = total_correlation(guide.nodes["z"]["value"], loc, scale, 500).sum().item()
    assert loss["tcvae"] == pytest.approx(loss["vae"] + weight * 3.0 * tc, rel=1e-5)


def test_the_reported_elbo_and_likelihood_are_those_of_the_generative_model_alone():
    tcvae, vae = _same_weights(beta=6.0)
    assert_measured_alike(tcvae, vae)


def test_the_warmed_up_penalty_stays_live_in_the_jit_compiled_elbo(tmp_path):
    """The JIT-compiled ELBO takes the warm-up weight as an argument: at every weight its loss is the eager
    ELBO's under that weight, penalty included (not frozen at the weight it was traced with), and at weight 0
    it is the reconstruction term alone."""
    from pyro.infer import Trace_ELBO

    from pyro_vae.config import TrainConfig
    from pyro_vae.training import Trainer

    config = TrainConfig(model="beta-tcvae", subset=300, batch_size=50, kl_warmup=2, hidden_dims=[16], z_dim=3)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert trainer.jit
    (x,) = next(iter(trainer.batches("train")))
    trainer.compile((x,))
    structure = trainer.model
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        compiled = trainer.elbo.loss_and_grads(trainer.svi.model, trainer.svi.guide, x, torch.tensor(weight))
        torch.manual_seed(0)
        with scale_latents(torch.tensor(weight)):
            eager = Trace_ELBO().loss(structure.model, structure.guide, x)
        assert compiled == pytest.approx(eager, rel=1e-5)
        if weight == 0.0:
            torch.manual_seed(0)
            guide = poutine.trace(structure.guide).get_trace(x)
            model = poutine.trace(poutine.replay(structure.model, trace=guide)).get_trace(x)
            assert compiled == pytest.approx(-model.nodes["x"]["fn"].log_prob(x).sum().item(), rel=1e-5)


@pytest.mark.slow
def test_training_sets_the_data_set_size_and_resumes_with_it(tmp_path):
    from pyro_vae.config import TrainConfig
    from pyro_vae.training import Trainer

    config = TrainConfig(model="beta-tcvae", subset=120, epochs=1, hidden_dims=[16], z_dim=3, batch_size=40)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda s: None)
    trainer.fit()
    assert int(trainer.model.dataset_size) == 120
    assert trainer.model.config()["beta"] == 6.0
    resumed = Trainer(TrainConfig(**{**config.__dict__, "epochs": 2}), tmp_path / "run", resume=True, progress=False,
                      log=lambda s: None)
    assert int(resumed.model.dataset_size) == 120  # from the checkpoint: initialize() runs on fresh runs only
    with pytest.raises(PyroVAEError, match="beta of BetaTCVAE must be a finite number >= 0"):
        build_model("beta-tcvae", beta=-1.0)
