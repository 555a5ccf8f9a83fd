"""The training recipe: learning-rate schedules, the best checkpoint, early stopping, the IWAE objective and the
decoder's output-bias initialisation."""
import json
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from conftest import REPO
from pyro_vae.data import load_dataset
from pyro_vae.errors import PyroVAEError
from pyro_vae.inference import make_elbo
from pyro_vae.inference.schedules import learning_rate
from pyro_vae.models import VAE, BernoulliMixture, BetaVAE
from pyro_vae.models.base import OUTPUT_BIAS_CLAMP, init_output_bias
from pyro_vae.training import (BEST_CHECKPOINT, CHECKPOINT, TrainConfig, Trainer, describe_checkpoint, load_checkpoint,
                               load_trained_model)


def tiny_config(**overrides):
    settings = dict(subset=300, z_dim=2, hidden_dims=[32], batch_size=50, epochs=2, seed=7)
    settings.update(overrides)
    return TrainConfig(**settings)


def quiet(config, run, **kwargs):
    return Trainer(config, run, progress=False, log=lambda _: None, **kwargs)


# --- learning-rate schedules -------------------------------------------------------------------------------


def test_the_iwae_schedule_has_stages_of_3_to_the_i_epochs_at_lr_times_10_to_the_minus_i_over_7():
    stage_of = {1: 0, 2: 1, 4: 1, 5: 2, 13: 2, 14: 3, 40: 3, 41: 4, 121: 4, 122: 5, 364: 5, 365: 6, 1093: 6,
                1094: 7, 3280: 7, 5000: 7}
    for epoch, stage in stage_of.items():
        assert learning_rate("iwae", 1e-3, epoch) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-12), epoch
    assert sum(3 ** i for i in range(8)) == 3280


def test_step_and_exponential_schedules_follow_their_closed_forms():
    for epoch in (1, 2, 10, 11, 25):
        assert learning_rate("step", 0.1, epoch, gamma=0.3, step=10) == pytest.approx(0.1 * 0.3 ** ((epoch - 1) // 10))
        assert learning_rate("exponential", 0.1, epoch, gamma=0.9) == pytest.approx(0.1 * 0.9 ** (epoch - 1))
        assert learning_rate("constant", 0.1, epoch) == 0.1
    assert learning_rate("exponential", 0.1, 3) == pytest.approx(0.1 * 0.99 ** 2)  # the default factor


def test_plateau_halves_the_rate_once_the_elbo_stalls_for_patience_epochs():
    elbos = [-10, -9, -8, -8.5, -8.2, -8.1, -7, -7.5, -7.6]
    rates = [learning_rate("plateau", 1.0, epoch, gamma=0.5, patience=2, valid_elbos=elbos)
             for epoch in range(1, len(elbos) + 2)]
    # best -8 at epoch 3; epochs 4 and 5 stall (patience 2), the third stall (epoch 6) halves the rate for epoch 7
    assert rates == [1.0] * 6 + [0.5] * 4


def test_bad_schedule_settings_get_a_sentence():
    with pytest.raises(PyroVAEError, match="lr-gamma"):
        tiny_config(lr_schedule="step", lr_gamma=1.5).validate()
    with pytest.raises(PyroVAEError, match="unknown learning-rate schedule"):
        tiny_config(lr_schedule="cosine").validate()
    with pytest.raises(PyroVAEError, match="patience"):
        tiny_config(patience=0).validate()
    with pytest.raises(PyroVAEError, match="adam-eps"):
        tiny_config(adam_eps=0).validate()


def test_training_uses_the_scheduled_rate_in_each_epoch(tmp_path):
    trainer = quiet(tiny_config(epochs=3, lr=0.01, lr_schedule="exponential", lr_gamma=0.5), tmp_path / "run")
    history = trainer.fit()
    assert [row["lr"] for row in history] == [0.01, 0.005, 0.0025]
    assert all(group["lr"] == 0.0025 for group in trainer.optimizer.optimizer.param_groups)


# --- best checkpoint and early stopping ----------------------------------------------------------------------


def scripted_validation(monkeypatch, values):
    """Make every Trainer report these validation ELBOs, epoch after epoch (to test the bookkeeping)."""
    def validation_elbo(self, split="valid"):
        return values[self.epoch - 1]  # validation runs once self.epoch counts the epoch just trained

    monkeypatch.setattr(Trainer, "validation_elbo", validation_elbo)


def test_the_best_checkpoint_holds_the_epoch_with_the_highest_validation_elbo(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [-5.0, -3.0, -4.0, -6.0])
    quiet(tiny_config(epochs=4), tmp_path / "run").fit()
    best = load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)
    assert best["epoch"] == 2 and best["valid_elbo"] == -3.0
    # the same weights as a run stopped after epoch 2
    pyro.clear_param_store()
    quiet(tiny_config(epochs=2), tmp_path / "two").fit()
    two = load_checkpoint(tmp_path / "two" / CHECKPOINT)
    for name, value in two["model_state"].items():
        assert torch.equal(best["model_state"][name], value), name
    model, _, checkpoint = load_trained_model(tmp_path / "run", which="best")
    assert checkpoint["kind"] == "best" and checkpoint["epoch"] == 2
    assert load_trained_model(tmp_path / "run", which="last")[2]["epoch"] == 4


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [-5.0, -3.0, -4.0, -3.5, -3.2, -1.0, -0.5])
    messages = []
    trainer = Trainer(tiny_config(epochs=7, patience=3), tmp_path / "run", progress=False, log=messages.append)
    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert "has not improved for 3 epochs (best -3.00 at epoch 2)" in messages[-1]


@pytest.mark.slow
def test_resume_with_a_schedule_and_early_stopping_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    # plateau reads the validation ELBOs, early stopping too: both must be recomputed on resume
    scripted_validation(monkeypatch, [-5.0, -3.0, -4.0, -3.5, -3.2, -3.1, -1.0])
    config = dict(epochs=7, lr=0.02, lr_schedule="plateau", lr_patience=1, patience=4)
    whole = quiet(tiny_config(**config), tmp_path / "whole")
    whole.fit()
    pyro.clear_param_store()
    quiet(tiny_config(**{**config, "epochs": 3}), tmp_path / "split").fit()
    pyro.clear_param_store()
    resumed = quiet(tiny_config(**config), tmp_path / "split", resume=True)
    resumed.fit()
    assert [row["epoch"] for row in whole.history] == [1, 2, 3, 4, 5, 6]  # stopped: no gain for 4 epochs
    # torch's rule, patience 1: the second epoch without a gain (epoch 4) lowers the rate for epoch 5
    assert [row["lr"] for row in whole.history] == [0.02, 0.02, 0.02, 0.02, 0.01, 0.01]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in whole.history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history]
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert (load_checkpoint(tmp_path / "whole" / BEST_CHECKPOINT)["epoch"]
            == load_checkpoint(tmp_path / "split" / BEST_CHECKPOINT)["epoch"] == 2)


# --- the IWAE objective ----------------------------------------------------------------------------------------


@pytest.fixture
def small_vae():
    torch.manual_seed(0)
    return VAE(x_dim=6, z_dim=2, hidden_dims=[5]), torch.bernoulli(torch.full((4, 6), 0.4))


def hand_log_weights(vae, x, eps):
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    normal = torch.distributions.Normal
    return (normal(0.0, 1.0).log_prob(z).sum(-1) - normal(loc, scale).log_prob(z).sum(-1)
            + torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(x).sum(-1))


def test_the_iwae_loss_is_minus_the_log_mean_exp_of_the_importance_weights(small_vae):
    vae, x = small_vae
    pyro.set_rng_seed(1)
    loss = make_elbo("iwae", num_particles=7).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(1)  # the same draw, by hand: eps of shape (particles, batch, z)
    log_w = hand_log_weights(vae, x, torch.randn(7, 4, 2))
    assert loss == pytest.approx(-(log_w.logsumexp(0) - math.log(7)).sum().item(), rel=1e-6)


def test_the_iwae_loss_with_one_particle_is_the_elbo(small_vae):
    vae, x = small_vae
    pyro.set_rng_seed(3)
    iwae = make_elbo("iwae", num_particles=1).loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    assert iwae == pytest.approx(Trace_ELBO().loss(vae.model, vae.guide, x), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_the_iwae_bound_is_above_the_elbo_and_its_gradient_matches_the_hand_written_one(small_vae, jit):
    vae, x = small_vae
    iwae, elbo = make_elbo("iwae", num_particles=20, jit=jit), Trace_ELBO(num_particles=20, vectorize_particles=True)
    bound = sum(-iwae.loss(vae.model, vae.guide, x) for _ in range(200)) / 200
    lower = sum(-elbo.loss(vae.model, vae.guide, x) for _ in range(200)) / 200
    assert bound > lower + 0.05  # Jensen: strictly above for a guide that is not the posterior
    # the gradient on one draw equals autograd through the hand-written bound on the same draw (eager only:
    # the compiled graph draws its noise with another kernel)
    if not jit:
        vae.zero_grad()
        pyro.set_rng_seed(5)
        iwae.loss_and_grads(vae.model, vae.guide, x)
        grads = [p.grad.clone() for p in vae.parameters()]
        vae.zero_grad()
        pyro.set_rng_seed(5)
        log_w = hand_log_weights(vae, x, torch.randn(20, 4, 2))
        (-(log_w.logsumexp(0) - math.log(20)).sum()).backward()
        for a, p in zip(grads, vae.parameters()):
            assert torch.allclose(a, p.grad, atol=1e-5)


def test_the_iwae_bound_of_a_structure_with_only_enumerated_latents_is_the_exact_log_likelihood():
    mixture = BernoulliMixture(x_dim=6, num_components=3)
    x = torch.bernoulli(torch.full((5, 6), 0.3))
    loss = make_elbo("iwae", num_particles=4, max_plate_nesting=1).loss(mixture.model, mixture.guide, x)
    assert loss == pytest.approx(-mixture.log_marginal(x).sum().item(), rel=1e-5)


def test_iwae_applies_the_beta_of_a_beta_vae(small_vae):
    vae, x = small_vae
    beta = BetaVAE(x_dim=6, z_dim=2, hidden_dims=[5], beta=1.0)
    beta.load_state_dict(vae.state_dict())
    heavy = BetaVAE(x_dim=6, z_dim=2, hidden_dims=[5], beta=4.0)
    heavy.load_state_dict(vae.state_dict())
    losses = []
    for model in (vae, beta, heavy):
        pyro.set_rng_seed(2)
        losses.append(make_elbo("iwae", num_particles=3).loss(model.model, model.guide, x))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[2] != pytest.approx(losses[0], rel=1e-3)


def test_training_with_iwae_names_the_bound_in_the_metrics(tmp_path):
    history = quiet(tiny_config(elbo="iwae", num_particles=3), tmp_path / "run").fit()
    assert {row["objective"] for row in history} == {"iwae-3"}
    assert history[-1]["valid_elbo"] > history[0]["valid_elbo"]
    with pytest.raises(PyroVAEError, match="kl-warmup"):
        tiny_config(elbo="iwae", kl_warmup=2).validate()


@pytest.mark.slow
def test_iwae_training_picks_its_best_epoch_and_stops_early_by_the_validation_iwae_bound(tmp_path, monkeypatch):
    real = quiet(tiny_config(elbo="iwae", num_particles=3, epochs=1), tmp_path / "real").fit()
    assert real[0]["valid_bound"] > real[0]["valid_elbo"]  # K = 3 is a tighter bound than the ELBO
    assert "valid_bound" not in quiet(tiny_config(epochs=1), tmp_path / "elbo").fit()[0]
    # the ELBO falls while the bound rises to epoch 2, as IWAE training can do
    scripted_validation(monkeypatch, [-3.0, -4.0, -5.0, -6.0, -7.0, -8.0])
    monkeypatch.setattr(Trainer, "validation_bound", lambda self: [-9.0, -2.0, -4.0, -3.0, -1.0, -1.0][self.epoch - 1])
    logged = []
    trainer = Trainer(tiny_config(elbo="iwae", num_particles=3, epochs=6, patience=2), tmp_path / "run",
                      progress=False, log=logged.append)
    trainer.fit()
    assert [row["valid_bound"] for row in trainer.history] == [-9.0, -2.0, -4.0, -3.0]  # 2 epochs without a better one
    assert load_checkpoint(tmp_path / "run" / BEST_CHECKPOINT)["epoch"] == 2
    assert logged[-1] == ("stopped early after epoch 4: the validation IWAE bound (K=3) has not improved for 2 epochs "
                          "(best -2.00 at epoch 2)")
    assert "IWAE bound -2.00 nats/image (best)" in logged[1]
    _, _, best = load_trained_model(tmp_path / "run", which="best")
    assert describe_checkpoint(best) == ("the best checkpoint (epoch 2 of 4, validation ELBO -4.00, "
                                         "validation IWAE bound (K=3) -2.00)")


def test_iwae_trains_enumerated_structures_and_refuses_sampled_discrete_sites(tmp_path):
    from pyro_vae.inference.applicability import check_elbo_applies
    from pyro_vae.inference.sites import LatentSites

    history = quiet(tiny_config(model="gmvae", elbo="iwae", num_particles=2, epochs=1,
                                model_options={"num_components": 2}), tmp_path / "run").fit()
    assert math.isfinite(history[0]["train_loss"])
    sampled = LatentSites(score_function=["c"], distributions={"c": "OneHotCategorical"})
    with pytest.raises(PyroVAEError, match="iwae needs every latent reparameterized or summed out"):
        check_elbo_applies("iwae", sampled)


# --- output bias ---------------------------------------------------------------------------------------------


def test_the_output_bias_starts_at_the_logit_of_the_pixel_means(tmp_path):
    trainer = quiet(tiny_config(epochs=1, init_output_bias=True), tmp_path / "run")
    images = load_dataset(subset=300).train.images
    means = images.double().mean(0).clamp(OUTPUT_BIAS_CLAMP, 1 - OUTPUT_BIAS_CLAMP)
    bias = trainer.model.decoder.output_layer.bias
    assert torch.allclose(bias.double(), torch.log(means / (1 - means)), atol=1e-5)
    assert bias.min().item() == pytest.approx(math.log(OUTPUT_BIAS_CLAMP / (1 - OUTPUT_BIAS_CLAMP)), rel=1e-5)
    off = quiet(tiny_config(epochs=1), tmp_path / "off")  # off by default
    assert not torch.allclose(off.model.decoder.output_layer.bias, bias)
    assert init_output_bias(BernoulliMixture(x_dim=784), images) == 0  # no decoder network: nothing to set


# --- starting from another run's weights ----------------------------------------------------------------------


@pytest.mark.slow
def test_init_from_starts_from_the_other_runs_best_weights_and_resumes_like_an_uninterrupted_run(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [-5.0, -3.0, -4.0])
    quiet(tiny_config(epochs=3), tmp_path / "vae").fit()  # best epoch 2 of 3
    best, _, _ = load_trained_model(tmp_path / "vae", which="best")
    last, _, _ = load_trained_model(tmp_path / "vae", which="last")
    monkeypatch.undo()
    pyro.clear_param_store()
    logged = []
    fine = Trainer(tiny_config(epochs=2, elbo="iwae", num_particles=3, init_from=str(tmp_path / "vae")),
                   tmp_path / "iwae", progress=False, log=logged.append)
    assert logged == [f"starting from the weights of the best checkpoint (epoch 2 of 3, validation ELBO -3.00) of "
                      f"{tmp_path / 'vae'}"]
    for (name, ours), (_, theirs) in zip(fine.model.state_dict().items(), best.state_dict().items()):
        assert torch.equal(ours, theirs), name
    assert not all(torch.equal(a, b) for a, b in zip(best.state_dict().values(), last.state_dict().values()))
    fine.fit()
    assert fine.epoch == 2 and fine.history[0]["objective"] == "iwae-3"
    assert json.loads((tmp_path / "iwae" / "config.json").read_text())["init_from"] == str(tmp_path / "vae")
    # resumed after epoch 1 (the other run gone by then: the weights are in this run's checkpoint)
    pyro.clear_param_store()
    quiet(tiny_config(epochs=1, elbo="iwae", num_particles=3, init_from=str(tmp_path / "vae")), tmp_path / "split").fit()
    (tmp_path / "vae").rename(tmp_path / "moved")
    pyro.clear_param_store()
    resumed = quiet(tiny_config(epochs=2, elbo="iwae", num_particles=3, init_from=str(tmp_path / "vae")),
                    tmp_path / "split", resume=True)
    resumed.fit()
    for (name, a), (_, b) in zip(fine.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_init_from_refuses_other_weights_or_a_folder_without_a_run_and_lets_a_beta_differ(tmp_path):
    quiet(tiny_config(epochs=1), tmp_path / "vae").fit()
    pyro.clear_param_store()
    with pytest.raises(PyroVAEError, match=r"holds another structure than this run builds: weight \S+ \(\d+, 2\) "
                                           r"against \(\d+, 3\) \(and \d+ more\); give the structure options"):
        quiet(tiny_config(z_dim=3, init_from=str(tmp_path / "vae")), tmp_path / "other")
    with pytest.raises(PyroVAEError, match=r"weight decoder.net.0.bias \(32\) against \(16\) \(and 6 more\)"):
        quiet(tiny_config(hidden_dims=[16], init_from=str(tmp_path / "vae")), tmp_path / "other")
    with pytest.raises(PyroVAEError, match=r"--init-from takes the run directory of an earlier 'pyro-vae train'; "
                                           r".*nowhere holds no checkpoint.pt"):
        quiet(tiny_config(init_from=str(tmp_path / "nowhere")), tmp_path / "other")
    with pytest.raises(PyroVAEError, match="drop --init-output-bias"):
        quiet(tiny_config(init_from=str(tmp_path / "vae"), init_output_bias=True), tmp_path / "other")
    assert not (tmp_path / "other").exists()
    # a beta-VAE has the VAE's weights: fine-tuning the VAE at beta 4 starts from them
    beta = quiet(tiny_config(model="beta-vae", model_options={"beta": 4.0}, init_from=str(tmp_path / "vae")),
                 tmp_path / "beta")
    best, _, _ = load_trained_model(tmp_path / "vae", which="best")
    assert all(torch.equal(a, b) for a, b in zip(beta.model.state_dict().values(), best.state_dict().values()))


def test_the_likelihood_curves_example_starts_a_fine_tuned_run_at_its_source_s_best_epoch(tmp_path, capsys):
    import importlib.util

    path = REPO / "examples" / "likelihood_curves.py"
    spec = importlib.util.spec_from_file_location("likelihood_curves", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = tmp_path / "results"
    results.mkdir()

    def write(name, rows, config):
        (results / f"{name}-metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (results / f"{name}-config.json").write_text(json.dumps(config))

    write("vae", [{"epoch": e, "valid_elbo": v} for e, v in [(1, -99.0), (2, -95.0), (3, -96.0)]], {"init_from": None})
    write("tuned", [{"epoch": e, "valid_elbo": -97.0, "valid_bound": -90.0} for e in (1, 2)], {"init_from": "runs/vae"})
    runs = example.curves(results)
    assert runs["vae"]["epochs"] == [1, 2, 3] and runs["vae"]["key"] == "valid_elbo"
    assert runs["tuned"]["epochs"] == [3, 4] and runs["tuned"]["key"] == "valid_bound"  # after the VAE's best, 2
    example.main(["--results", str(results), "--out", str(tmp_path / "curves.png")])
    assert (tmp_path / "curves.png").stat().st_size > 0


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_and_sample_say_which_checkpoint_they_use(cli, tmp_path, monkeypatch):
    from conftest import TINY

    scripted_validation(monkeypatch, [-5.0, -3.0, -4.0])
    run = tmp_path / "run"
    code, out, err = cli("train", "--run-dir", run, *TINY, "--epochs", 3, "--lr-schedule", "step", "--lr-step", 1)
    assert code == 0, err
    assert "evaluating the best epoch, 2 of 3" in out
    assert json.loads((run / "evaluation.json").read_text())["epoch"] == 2
    code, out, _ = cli("evaluate", run, "-K", 2)
    assert code == 0 and "the best checkpoint (epoch 2 of 3, validation ELBO -3.00)" in out
    assert json.loads((run / "evaluation-test-K2.json").read_text())["checkpoint"] == "best"
    code, out, _ = cli("evaluate", run, "-K", 2, "--checkpoint", "last")
    assert code == 0 and "the last checkpoint (epoch 3 of 3" in out and (run / "evaluation-test-K2-last.json").is_file()
    code, out, _ = cli("sample", run, "--num", 4)
    assert code == 0 and "sampling from the best checkpoint (epoch 2" in out
    lrs = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lrs == [1e-3, 5e-4, 2.5e-4]


@pytest.mark.parametrize("options, message", [
    (["--lr-schedule", "step", "--lr-gamma", "2"], "--lr-gamma is the factor"),
    (["--lr-step", "0"], "--lr-step is a number of epochs"),
    (["--patience", "0"], "--patience is a number of epochs"),
    (["--adam-eps", "-1"], "--adam-eps must be a positive, finite number"),
    (["--elbo", "iwae", "--kl-warmup", "3"], "drop --kl-warmup"),
    (["--init-from", "nowhere"], "nowhere holds no checkpoint.pt"),
])
def test_bad_recipe_options_get_one_sentence_before_training(cli, tmp_path, options, message):
    from conftest import TINY, assert_one_sentence_error

    code, _, err = cli("train", "--run-dir", tmp_path / "run", *TINY, *options)
    assert_one_sentence_error(code, err, message)
    assert not (tmp_path / "run").exists()
