"""Gradient estimators for discrete latents: the exact gradient by hand, unbiased score functions, the
relaxation's bias, estimators that do not apply, and the command line."""
import json
import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

from conftest import assert_one_sentence_error
from pyro_vae import VAE
from pyro_vae.errors import PyroVAEError
from pyro_vae.studies.comparison import gradient_table
from pyro_vae.studies.discrete import error_statistics, estimator_errors, exact_gradient
from pyro_vae.studies.estimators import Estimator, EstimatorNotApplicable, applicability, parameter_groups
from pyro_vae.studies.gradients import sample_gradients
from pyro_vae.models import GMVAE, BernoulliMixture

X_DIM, COMPONENTS = 12, 3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mixture():
    pyro.set_rng_seed(3)
    return BernoulliMixture(x_dim=X_DIM, hidden_dims=(8,), num_components=COMPONENTS)


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    return (torch.bernoulli(torch.full((6, X_DIM), 0.4), generator=generator),)


def elbo_by_hand(mixture: BernoulliMixture, x: torch.Tensor) -> torch.Tensor:
    """sum_b sum_c q(c | x_b) [log pi_c + log p(x_b | c) - log q(c | x_b)], the sum over components written out."""
    log_q = torch.log_softmax(mixture.encoder(x), -1)
    log_pi = torch.log_softmax(mixture.prior.logits, -1)
    component_logits = mixture.components(torch.eye(COMPONENTS))  # row c: the pixel logits of component c
    log_px = dist.Bernoulli(logits=component_logits).log_prob(x.unsqueeze(-2)).sum(-1)
    return (log_q.exp() * (log_pi + log_px - log_q)).sum()


def test_enumeration_is_the_exact_gradient_by_hand(mixture, batch):
    exact = exact_gradient(mixture.model, mixture.guide, batch)
    groups = parameter_groups(mixture.model, mixture.guide, batch)
    params = [p for group in groups.values() for p in group.values()]
    by_hand = torch.autograd.grad(-elbo_by_hand(mixture, batch[0]), params)
    offset = 0
    for group, named in groups.items():
        size = sum(p.numel() for p in named.values())
        expected = torch.cat([g.reshape(-1) for g in by_hand[offset:offset + len(named)]])
        torch.testing.assert_close(exact[group], expected, rtol=1e-5, atol=1e-6)
        offset += len(named)
        assert size == exact[group].numel() > 0


def test_the_exact_gradient_needs_every_site_enumerated(small_data):
    gmvae = GMVAE(z_dim=2, hidden_dims=(8,), num_components=3)
    with pytest.raises(PyroVAEError, match="site 'z' is sampled"):
        exact_gradient(gmvae.model, gmvae.guide, (small_data.train.images[:4],))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["score", "score-avg-baseline", "score-nn-baseline"])
def test_score_function_means_converge_to_the_exact_gradient(mixture, batch, name):
    exact = exact_gradient(mixture.model, mixture.guide, batch)
    with pyro.get_param_store().scope():
        estimator = Estimator(name, mixture.model, mixture.guide, batch, num_particles=4, vectorize_particles=True)
        samples = sample_gradients(estimator, batch, 200, baseline_warmup=30).samples
    # Project on 3 fixed random directions per group: the mean of R estimates must be within 4 standard errors
    # of the exact value (18 comparisons over the parametrization at 6e-5 each).
    generator = torch.Generator().manual_seed(0)
    for group, estimates in samples.items():
        directions = torch.randn(estimates.shape[1], 3, generator=generator)
        projected, target = estimates @ directions, exact[group] @ directions
        standard_error = projected.std(0) / math.sqrt(projected.shape[0])
        assert ((projected.mean(0) - target).abs() < 4 * standard_error).all(), (group, projected.mean(0), target)


@pytest.mark.slow
def test_concrete_bias_shrinks_as_the_temperature_falls(mixture, batch):
    exact = exact_gradient(mixture.model, mixture.guide, batch)
    stats = {}
    for temperature in ("1", "0.5", "0.1"):
        with pyro.get_param_store().scope():
            estimator = Estimator(f"concrete-{temperature}", mixture.model, mixture.guide, batch, num_particles=4000,
                                  vectorize_particles=True)
            samples = sample_gradients(estimator, batch, 10).samples
        stats[temperature] = {group: error_statistics(samples[group], exact[group]) for group in samples}
    # A measured bias is off by about its noise floor sqrt(variance / R) (of 4000-sample estimates); 3 floors
    # of each leave the comparisons no room for chance.
    for group in ("guide", "model"):
        for high, low in (("1", "0.5"), ("0.5", "0.1")):
            high_stats, low_stats = stats[high][group], stats[low][group]
            margin = 3 * (high_stats["bias_floor"] + low_stats["bias_floor"])
            assert low_stats["bias"] + margin < high_stats["bias"], (group, stats)
        assert stats["1"][group]["bias"] > 10 * stats["1"][group]["bias_floor"]  # biased, clearly: not noise


def test_error_statistics_known_answer():
    exact = torch.tensor([1.0, 0.0])
    samples = torch.tensor([[2.0, 1.0], [2.0, -1.0]])  # mean (2, 0): bias 1; variances 0 and 2
    stats = error_statistics(samples, exact)
    assert stats["bias"] == pytest.approx(1.0)
    assert stats["total_variance"] == pytest.approx(2.0)
    assert stats["mse"] == pytest.approx(2.0)  # each estimate is sqrt(2) from the exact value
    assert stats["bias_floor"] == pytest.approx(1.0)


def test_estimator_errors_rows(mixture, batch):
    rows = estimator_errors(mixture.model, mixture.guide, batch, ["enum", "score", "reparam", "concrete-0.5"],
                            [1, 3], num_repeats=3, baseline_warmup=0)
    assert [(row["estimator"], row.get("num_samples")) for row in rows] == [
        ("enum", 1), ("score", 1), ("score", 3), ("reparam", None), ("concrete-0.5", 1), ("concrete-0.5", 3)]
    assert rows[0]["guide_mse"] == 0 and rows[0]["model_total_variance"] == 0
    assert "no pathwise gradient" in rows[3]["not_applicable"]
    for row in rows[1:3] + rows[4:]:
        assert row["guide_mse"] == pytest.approx(row["guide_bias"] ** 2 + row["guide_total_variance"] * 2 / 3)


# ---------------------------------------------------------------- what applies where


def categorical_model(x):
    weights = pyro.param("weights", torch.zeros(3, x.shape[1]))
    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3)))
        pyro.sample("x", dist.Bernoulli(logits=weights[c]).to_event(1), obs=x)


def categorical_guide(x):
    logits = pyro.param("logits", torch.zeros(x.shape[0], 3))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})


@pytest.mark.parametrize("name, fragment", [
    ("reparam", "site 'c' (OneHotCategorical) has no pathwise gradient, and Trace_ELBO would silently use the "
                "score function"),
    ("meanfield", "TraceMeanField_ELBO refuses it"),
    ("iwae", "RenyiELBO drops the score-function term"),
])
def test_pathwise_estimators_do_not_apply_to_the_mixture(mixture, batch, name, fragment):
    assert fragment in applicability(name, mixture.model, mixture.guide, batch)
    with pytest.raises(EstimatorNotApplicable, match=f"the estimator {name} does not apply here"):
        Estimator(name, mixture.model, mixture.guide, batch)


@pytest.mark.parametrize("model, guide, name, fragment", [
    ("vae", None, "enum", "nothing to sum out"),
    ("vae", None, "concrete-0.5", "no discrete latent site to relax"),
    (categorical_model, categorical_guide, "concrete-1", "site 'c' (Categorical) of the guide is not one-hot"),
])
def test_enumeration_and_relaxation_say_where_they_do_not_apply(batch, model, guide, name, fragment):
    if model == "vae":
        vae = VAE(x_dim=X_DIM, z_dim=2, hidden_dims=(8,))
        model, guide = vae.model, vae.guide
    assert fragment in applicability(name, model, guide, batch)
    for applies in ("score", "score-avg-baseline"):
        assert applicability(applies, model, guide, batch) is None


def test_gradient_table_lists_what_does_not_apply(mixture, batch):
    rows = gradient_table(mixture.model, mixture.guide, batch, ["reparam", "score", "iwae", "enum", "concrete-0.5"],
                          num_repeats=2, baseline_warmup=0)
    not_applicable = {row["estimator"]: row["not_applicable"] for row in rows if "not_applicable" in row}
    assert set(not_applicable) == {"reparam", "iwae"}
    for row in rows:
        if row["estimator"] not in not_applicable:
            assert math.isfinite(row["guide_mean_grad_norm"]) and math.isfinite(row["model_total_variance"])
    enum = next(row for row in rows if row["estimator"] == "enum")
    assert enum["guide_total_variance"] == enum["model_total_variance"] == 0  # exact: the same every time


def test_score_function_samples_sites_marked_for_enumeration_without_warnings(mixture, batch):
    estimator = Estimator("score-avg-baseline", mixture.model, mixture.guide, batch)
    site = poutine.trace(estimator.guide).get_trace(*batch).nodes["c"]
    assert "enumerate" not in site["infer"] and "baseline" in site["infer"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator.elbo.loss_and_grads(estimator.model, estimator.guide, *batch)


# ---------------------------------------------------------------- command line

TINY_MODEL = ["--subset", 200, "--hidden-dims", 16, "--batch-size", 20, "--no-progress"]


@pytest.mark.slow
def test_compare_estimators_on_the_mixture(cli, tmp_path):
    code, out, err = cli("compare-estimators", "--model", "bernoulli-mixture", "--train-epochs", 1, "--repeats", 3,
                         "--baseline-warmup", 2, "--train-steps", 2, "--eval-every", 2, "--out", tmp_path, *TINY_MODEL)
    assert code == 0, err
    assert "Traceback" not in err
    result = json.loads((tmp_path / "comparison.json").read_text())
    for rows in (result["gradients"], result["training"]):
        reasons = {row["estimator"]: row.get("not_applicable") for row in rows}
        assert all("no pathwise gradient" in reasons[name] for name in ("reparam", "meanfield", "iwae"))
        assert all(reasons[name] is None for name in ("enum", "score", "score-nn-baseline", "concrete-0.1"))
    assert "not applicable because" in out
    for name in ("gradient_statistics.png", "training_curves.png", "training_curves.csv"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.slow
def test_discrete_estimators_command(cli, tmp_path):
    code, out, err = cli("discrete-estimators", "--train-epochs", 0, "--repeats", 3, "--sample-sizes", "1,2",
                         "--temperatures", "1,0.1", "--baseline-warmup", 2, "--out", tmp_path, *TINY_MODEL)
    assert code == 0, err
    rows = json.loads((tmp_path / "discrete_estimators.json").read_text())["rows"]
    assert [(row["estimator"], row["num_samples"]) for row in rows] == [
        ("enum", 1), *((name, n) for name in ("score", "score-avg-baseline", "score-nn-baseline", "concrete-1",
                                              "concrete-0.1") for n in (1, 2))]
    assert "| concrete-0.1 | 2 |" in out
    for name in ("discrete_estimators.csv", "discrete_estimators.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "gmvae"], "site 'z' is sampled"),
    (["--repeats", 1], "at least 2 repeated gradient estimates"),
    (["--batch-size", 500], "larger than the 200 training images"),
    (["--model", "nonexistent"], "unknown model 'nonexistent'"),
])
def test_discrete_estimators_refuses_bad_input(cli, tmp_path, argv, fragment):
    code, _, err = cli("discrete-estimators", *TINY_MODEL, "--train-epochs", 0, *argv, "--out", tmp_path)
    assert_one_sentence_error(code, err, fragment)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, fragment", [
    (["--temperatures", "1,0"], "expected positive numbers"),
    (["--sample-sizes", "0"], "expected positive whole numbers"),
    (["--estimators", "score,concrete-hot"], "unknown estimator 'concrete-hot'"),
])
def test_discrete_estimators_refuses_bad_options(cli, tmp_path, argv, fragment):
    code, _, err = cli("discrete-estimators", *argv, "--out", tmp_path)
    assert code == 2 and fragment in err and "Traceback" not in err
