"""Gradient estimators: known answers on the toy problem, statistics on the VAE, errors, command line."""
import contextlib
import functools
import json
import math

import numpy.polynomial.polynomial as P
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI
from pyro.ops.provenance import detach_provenance
from pyro.poutine.messenger import Messenger

from conftest import assert_one_sentence_error
from pyro_vae import VAE
from pyro_vae.errors import PyroVAEError
from pyro_vae.studies import toy
from pyro_vae.studies.comparison import gradient_table, training_curves
from pyro_vae.studies.estimators import ESTIMATORS, Estimator, without_rsample
from pyro_vae.studies.gradients import gradient_statistics, sample_gradients


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are small: a second thread buys nothing and, on a 2-core machine shared with other
    jobs, makes every step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- the toy problem, exact and statistical


class RecordX(Messenger):
    """Keeps the values of every site named "x"; the last one is the model's replay of the sample that the
    ELBO differentiated."""

    def __init__(self):
        super().__init__()
        self.values = []

    def _pyro_post_sample(self, msg):
        if msg["name"] == "x":
            self.values.append(detach_provenance(msg["value"]).detach().clone())


@pytest.mark.parametrize("estimator, formula", [
    ("score", lambda x, theta: x ** 2 * (x - theta)),
    ("reparam", lambda x, theta: 2 * x),  # 2 (theta + eps), as x = theta + eps
])
@pytest.mark.parametrize("theta", [-1.5, 2.0])
def test_toy_estimates_are_exactly_the_formulas_per_sample(estimator, formula, theta):
    with RecordX() as record:
        estimates = toy.gradient_estimates(theta, estimator, num_samples=1, num_repeats=500)
    x = record.values[-1].reshape(-1)
    torch.testing.assert_close(estimates, formula(x, theta), rtol=1e-12, atol=1e-12)


def gaussian_moment(k: int) -> int:
    """E[eps^k] for eps ~ N(0, 1): (k - 1)!! for even k, 0 for odd k."""
    return 0 if k % 2 else math.prod(range(k - 1, 0, -2))


def central_moments(estimator: str, theta: float) -> tuple[float, float]:
    """Exact 2nd and 4th central moments of the one-sample estimate, written as a polynomial in eps."""
    centred = [0.0, 2.0] if estimator == "reparam" else [-2 * theta, theta ** 2, 2 * theta, 1.0]
    expect = lambda poly: sum(c * gaussian_moment(k) for k, c in enumerate(poly))  # noqa: E731
    return expect(P.polypow(centred, 2)), expect(P.polypow(centred, 4))


@pytest.mark.parametrize("estimator", toy.TOY_ESTIMATORS)
@pytest.mark.parametrize("theta", [-1.5, 0.5, 2.0])
def test_toy_analytic_variance_matches_the_moments(estimator, theta):
    assert toy.analytic_variance(estimator, theta) == pytest.approx(central_moments(estimator, theta)[0])
    assert toy.analytic_variance(estimator, theta, 10) == pytest.approx(central_moments(estimator, theta)[0] / 10)


@pytest.mark.parametrize("estimator", toy.TOY_ESTIMATORS)
@pytest.mark.parametrize("theta", [0.5, 2.0])
def test_toy_estimators_are_unbiased_with_the_analytic_variance(estimator, theta):
    n, r = 10, 4000
    estimates = toy.gradient_estimates(theta, estimator, num_samples=n, num_repeats=r)
    # The mean of R estimates has standard error sqrt(Var_N / R); 4 of them leave a false alarm of 6e-5.
    var_n = toy.analytic_variance(estimator, theta, n)
    assert abs(estimates.mean().item() - 2 * theta) < 4 * math.sqrt(var_n / r)
    # The sample variance of R values has variance (mu4 - sigma^4 (R-3)/(R-1)) / R, where mu4, the fourth
    # central moment of an N-sample average, is (mu4_1 + 3 (N-1) sigma_1^4) / N^3. The score function's
    # heavy tails (mu4_1 of thousands at theta = 2) make this tolerance wider than the Gaussian sqrt(2/R).
    sigma2, mu4 = central_moments(estimator, theta)
    mu4_n = (mu4 + 3 * (n - 1) * sigma2 ** 2) / n ** 3
    se_variance = math.sqrt((mu4_n - var_n ** 2 * (r - 3) / (r - 1)) / r)
    assert abs(estimates.var().item() - var_n) < 4 * se_variance


def test_toy_table_columns_and_ratio():
    rows = toy.toy_table(theta=2.0, num_repeats=200, sample_sizes=[10, 1000])
    assert [row["num_samples"] for row in rows] == [10, 1000]
    for row in rows:
        assert row["variance_ratio_analytic"] == pytest.approx(87 / 4)
        assert row["score_variance"] > row["reparam_variance"]
    assert rows[1]["reparam_variance"] < rows[0]["reparam_variance"] / 10


# ---------------------------------------------------------------- building blocks


def test_gradient_statistics_known_answer():
    mean, half_spread = torch.tensor([3.0, 0.0, -4.0]), torch.tensor([1.0, 0.0, 2.0])
    stats = gradient_statistics(torch.stack([mean + half_spread, mean - half_spread]))
    # Two rows m +- d: mean m, unbiased variance 2 d^2; the constant middle parameter has no SNR.
    assert stats["mean_grad_norm"] == pytest.approx(5.0)
    assert stats["total_variance"] == pytest.approx(2 * (1 + 4))
    assert stats["snr"] == pytest.approx((3 / math.sqrt(2) + 4 / (2 * math.sqrt(2))) / 2)
    # Debiased: the squared mean less s^2 / R = d^2 (3^2 - 1 and 4^2 - 4), over s = sqrt(2) d.
    debiased = gradient_statistics(torch.stack([mean + half_spread, mean - half_spread]), debias=True)
    assert debiased["snr"] == pytest.approx((math.sqrt(8) / math.sqrt(2) + math.sqrt(12) / (2 * math.sqrt(2))) / 2)


def test_debiased_snr_of_pure_noise_sits_far_below_the_naive_floor():
    noise = torch.randn(100, 5000, generator=torch.Generator().manual_seed(0))
    naive, debiased = gradient_statistics(noise)["snr"], gradient_statistics(noise, debias=True)["snr"]
    assert naive == pytest.approx(math.sqrt(2 / math.pi) / 10, rel=0.05)  # E|N(0, 1)| / sqrt(R)
    assert debiased < naive / 2


def test_without_rsample_copies_wrapped_distributions():
    fn = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    copy = without_rsample(fn)
    assert fn.has_rsample and not copy.has_rsample
    assert copy.sample().shape == (3,)


@pytest.fixture
def vae_batch(small_data):
    return (small_data.train.images[:20],)


@pytest.fixture
def tiny_vae():
    return VAE(z_dim=2, hidden_dims=(16,))


@pytest.mark.parametrize("name, reparameterized, baseline", [
    ("reparam", True, None), ("score", False, None), ("score-avg-baseline", False, {"use_decaying_avg_baseline"}),
    ("score-nn-baseline", False, {"use_decaying_avg_baseline", "nn_baseline", "nn_baseline_input"}),
])
def test_estimator_guides_change_only_how_latents_are_differentiated(tiny_vae, vae_batch, name, reparameterized,
                                                                     baseline):
    estimator = Estimator(name, tiny_vae.model, tiny_vae.guide, vae_batch)
    z = poutine.trace(estimator.guide).get_trace(*vae_batch).nodes["z"]
    assert z["fn"].has_rsample == reparameterized
    assert set(z["infer"].get("baseline", {})) == (baseline or set())


def test_svi_trains_the_neural_baseline_ten_times_faster(tiny_vae, vae_batch):
    estimator = Estimator("score-nn-baseline", tiny_vae.model, tiny_vae.guide, vae_batch)
    optimizer = estimator.optimizer(1e-3)
    SVI(estimator.model, estimator.guide, optimizer, loss=estimator.elbo).step(*vae_batch)
    baseline = set(estimator.baseline_nets.parameters())
    learning_rates = {(p in baseline, group["lr"]) for group in optimizer.optimizer.param_groups
                      for p in group["params"]}
    assert learning_rates == {(False, 1e-3), (True, 1e-2)}


# ---------------------------------------------------------------- a model/guide pair with a known gradient


def gaussian_model(x):
    m = pyro.param("m", torch.tensor(0.5))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(m, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def gaussian_guide(x):
    a, b = pyro.param("a", torch.tensor(0.3)), pyro.param("b", torch.tensor(-0.2))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(a * x + b, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["reparam", "score", "score-avg-baseline", "score-nn-baseline", "meanfield"])
def test_estimators_match_the_analytic_gradient_of_a_gaussian_pair(name):
    # -ELBO = sum_i [(mu_i - m)^2 + (x_i - mu_i)^2] / 2 + const with mu_i = a x_i + b, so with
    # r_i = (mu_i - m) + (mu_i - x_i):  d/da = sum x_i r_i,  d/db = sum r_i,  d/dm = -sum (mu_i - m).
    x = torch.linspace(-2.0, 2.0, 8)
    with pyro.get_param_store().scope():
        samples = sample_gradients(Estimator(name, gaussian_model, gaussian_guide, (x,)), (x,), 200,
                                   baseline_warmup=30).samples
    mu = 0.3 * x - 0.2
    r = (mu - 0.5) + (mu - x)
    expected = torch.tensor([(x * r).sum(), r.sum(), -(mu - 0.5).sum()])
    estimates = torch.cat([samples["guide"], samples["model"]], dim=1)
    standard_error = estimates.std(0) / math.sqrt(estimates.shape[0])
    # meanfield's gradient for m comes from the closed-form KL alone: no variance, so allow for rounding.
    assert ((estimates.mean(0) - expected).abs() < 4 * standard_error + 1e-5).all()


# ---------------------------------------------------------------- the VAE

SAME_OBJECTIVE = ("reparam", "score", "score-avg-baseline", "score-nn-baseline", "meanfield")  # iwae differs


@pytest.fixture(scope="module")
def vae_gradients(small_data):
    pyro.set_rng_seed(1)
    vae, batch = VAE(z_dim=2, hidden_dims=(16,)), (small_data.train.images[:20],)
    samples = {}
    for name in SAME_OBJECTIVE:
        with pyro.get_param_store().scope():
            estimator = Estimator(name, vae.model, vae.guide, batch)
            # 150 estimates each (300 took 12 s of the suite's CPU; the largest of the 24 differences below is 1.9
            # standard errors at either size, and the variance ratios stay 20 times and more inside their bounds)
            samples[name] = sample_gradients(estimator, batch, 150, baseline_warmup=30).samples
    return samples


@pytest.mark.slow
def test_vae_estimators_agree_in_expectation(vae_gradients):
    # Project each estimate on 3 fixed random directions per parameter group: a scalar whose mean must agree
    # with the reparameterized one within 4 standard errors of the difference of two independent means.
    # 4 estimators x 2 groups x 3 directions = 24 comparisons at 6e-5 each under the central limit theorem.
    generator = torch.Generator().manual_seed(0)
    reference = vae_gradients["reparam"]
    for group, ref in reference.items():
        directions = torch.randn(ref.shape[1], 3, generator=generator)
        ref_proj = ref @ directions
        for name in SAME_OBJECTIVE[1:]:
            proj = vae_gradients[name][group] @ directions
            se = (proj.var(0) / proj.shape[0] + ref_proj.var(0) / ref_proj.shape[0]).sqrt()
            assert ((proj.mean(0) - ref_proj.mean(0)).abs() < 4 * se).all(), (name, group)


@pytest.mark.slow  # its fixture samples 750 gradients: seconds
def test_vae_score_function_variance_is_larger_and_baselines_reduce_it(vae_gradients):
    variance = {name: samples["guide"].var(0).sum().item() for name, samples in vae_gradients.items()}
    assert variance["score"] > 10 * variance["reparam"]
    assert variance["score-avg-baseline"] < variance["score"] / 2
    assert variance["score-nn-baseline"] < variance["score"] / 2


@contextlib.contextmanager
def _announced_at_once():
    """Any work counts as long, and its pace is known after its first unit (normally: a minute, two seconds)."""
    import pyro_vae.limits as limits
    import pyro_vae.studies.comparison as comparison

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(limits, "ANNOUNCE_SECONDS", -1.0)
        patch.setattr(comparison, "SampleProgress", functools.partial(limits.SampleProgress, warmup=0.0))
        yield


def test_gradient_table_and_training_curves_on_every_estimator(tiny_vae, small_data, vae_batch):
    rows = gradient_table(tiny_vae.model, tiny_vae.guide, vae_batch, list(ESTIMATORS), num_repeats=3,
                          baseline_warmup=2)
    assert [row["estimator"] for row in rows] == list(ESTIMATORS)
    # A VAE has no discrete site: nothing to enumerate, relax or score with VIMCO, and these rows say so instead of
    # numbers.
    discrete_only = {"enum", "concrete-1", "concrete-0.5", "concrete-0.1", "vimco"}
    assert {row["estimator"] for row in rows if "not_applicable" in row} == discrete_only
    for row in rows:
        if row["estimator"] in discrete_only:
            assert set(row) == {"estimator", "not_applicable"}
            continue
        for key in ("guide_mean_grad_norm", "guide_total_variance", "guide_snr", "model_total_variance", "model_snr"):
            assert math.isfinite(row[key]) and row[key] >= 0, (row["estimator"], key)
        assert row["seconds_per_gradient"] > 0
    before = {k: v.clone() for k, v in tiny_vae.state_dict().items()}
    said = []
    with _announced_at_once():
        curves = training_curves(tiny_vae, small_data, ["reparam", "score-nn-baseline"], num_steps=4, batch_size=50,
                                 eval_every=2, say=said.append)
    # long training says its time first: here every step "counts as long", and the total is all the steps
    assert len(said) == 1 and said[0].startswith("training with 2 estimator(s) for 4 steps each: 8 SVI steps, about ")
    assert [(row["estimator"], row["step"]) for row in curves] == [
        ("reparam", 0), ("reparam", 2), ("reparam", 4), ("score-nn-baseline", 0), ("score-nn-baseline", 2),
        ("score-nn-baseline", 4)]
    assert curves[0]["valid_elbo"] == curves[3]["valid_elbo"]  # the same initialisation for both
    assert all(torch.equal(before[k], v) for k, v in tiny_vae.state_dict().items())


# ---------------------------------------------------------------- errors


def model_without_latents(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(0.5 * torch.ones_like(x)).to_event(1), obs=x)


def guide_without_latents(x):
    pass


@pytest.mark.parametrize("call, message", [
    (lambda: toy.gradient_estimates(2.0, "score", 0, 10), "number of samples N must be a positive"),
    (lambda: toy.gradient_estimates(2.0, "reparam", 10, -1), "number of repeats R must be a positive"),
    (lambda: toy.gradient_estimates(2.0, "pathwise", 10, 10), "unknown toy estimator 'pathwise'"),
    (lambda: Estimator("reinforce", model_without_latents, guide_without_latents, (torch.ones(2, 3),)),
     "unknown gradient estimator 'reinforce'"),
    (lambda: Estimator("score", model_without_latents, guide_without_latents, (torch.ones(2, 3),)),
     "no latent sample site"),
])
def test_bad_input_is_refused_with_a_clear_error(call, message):
    with pytest.raises(PyroVAEError, match=message):
        call()


def test_bad_number_of_repeats_is_refused(tiny_vae, vae_batch):
    estimator = Estimator("reparam", tiny_vae.model, tiny_vae.guide, vae_batch)
    with pytest.raises(PyroVAEError, match="repeated gradient estimates must be a positive"):
        sample_gradients(estimator, vae_batch, 0)


# ---------------------------------------------------------------- command line


def test_reparam_toy_command(cli, tmp_path):
    code, out, err = cli("reparam-toy", "--repeats", 100, "--sample-sizes", "10,100", "--out", tmp_path,
                         "--no-progress")
    assert code == 0, err
    assert "| 100 |" in out
    rows = json.loads((tmp_path / "reparam_toy.json").read_text())["rows"]
    assert [row["num_samples"] for row in rows] == [10, 100]
    assert (tmp_path / "reparam_toy.png").stat().st_size > 0
    code, _, err = cli("reparam-toy", "--repeats", 100, "--sample-sizes", "10", "--out", tmp_path, "--no-progress")
    assert_one_sentence_error(code, err, "already exists")


@pytest.mark.slow
def test_compare_estimators_command(cli, tmp_path):
    code, out, err = cli("compare-estimators", "--subset", 200, "--train-epochs", 1, "--hidden-dims", 16, "--z-dim", 2,
                         "--batch-size", 50, "--repeats", 3, "--baseline-warmup", 2, "--train-steps", 4,
                         "--eval-every", 2, "--estimators", "reparam,score-avg-baseline", "--out", tmp_path,
                         "--no-progress")
    assert code == 0, err
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert [(row["model"], row["estimator"]) for row in result["gradients"]] == [
        ("fresh", "reparam"), ("fresh", "score-avg-baseline"), ("trained", "reparam"),
        ("trained", "score-avg-baseline")]
    for name in ("gradient_statistics.csv", "training_curves.csv", "gradient_statistics.png", "training_curves.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("argv, fragment", [
    (["--repeats", 0], "repeated gradient estimates must be a positive"),
    (["--repeats", 1], "at least 2 repeated gradient estimates"),
    (["--train-epochs", 0], "--train-epochs must be a positive"),
])
def test_compare_estimators_refuses_bad_numbers(cli, tmp_path, argv, fragment):
    code, _, err = cli("compare-estimators", *argv, "--subset", 100, "--out", tmp_path, "--no-progress")
    assert_one_sentence_error(code, err, fragment)


def test_unknown_estimator_on_the_command_line(cli, tmp_path):
    code, _, err = cli("compare-estimators", "--estimators", "reparam,reinforce", "--out", tmp_path)
    assert code == 2 and "unknown estimator 'reinforce'" in err
