"""The disentanglement metrics on synthetic codes whose answer is known: codes equal to the factors score near 1,
noise near 0 or chance, mixing two factors lowers disentanglement but not informativeness, relabelling the code
dimensions changes nothing; bad input fails with one sentence."""

import math

import numpy as np
import pytest
import torch

from pyro_vae.disentanglement.metrics import (DEFAULT_SIZES, beta_vae_score, compute_all, dci, factor_vae_score,
                                              mig, modularity_explicitness, sap_score)
from pyro_vae.errors import PyroVAEError

FACTOR_SIZES = (3, 6, 10, 8, 8)
NUM = 900  # DCI trains 600 trees' worth of points per class and stage: the slow part of this file
PERMUTATION = [3, 0, 4, 1, 2]
SMALL = {"batch_size": 16, "num_train": 400, "num_eval": 400, "num_variance_estimate": 1000}


def uniform_factors(num, rng, sizes=FACTOR_SIZES):
    return np.stack([rng.integers(0, size, num) for size in sizes], axis=1)


@pytest.fixture(scope="module")
def factors():
    return uniform_factors(NUM, np.random.default_rng(0))


@pytest.fixture(scope="module")
def identity_codes(factors):
    """The factors themselves as codes, plus a little noise."""
    return factors + 0.05 * np.random.default_rng(1).standard_normal(factors.shape)


@pytest.fixture(scope="module")
def noise_codes(factors):
    return np.random.default_rng(2).standard_normal(factors.shape)


@pytest.fixture(scope="module")
def mixed_codes(identity_codes):
    """Codes 0 and 1 each mix factors 0 and 1 (sum and difference); the others stay as they are."""
    codes = identity_codes.copy()
    codes[:, 0] = identity_codes[:, 0] + identity_codes[:, 1]
    codes[:, 1] = identity_codes[:, 0] - identity_codes[:, 1]
    return codes


@pytest.fixture(scope="module")
def identity_dci(identity_codes, factors):
    return dci(identity_codes, factors, FACTOR_SIZES)


@pytest.fixture(scope="module")
def mixed_dci(mixed_codes, factors):
    """DCI of the mixed codes from the exact trees, which two tests read (seconds of boosting)."""
    return dci(mixed_codes, factors, FACTOR_SIZES)


def sampler(represent_kind, seed=3):
    """``sample_factors`` and a ``represent`` that returns the factors (with tiny noise) or pure noise."""
    noise_rng = np.random.default_rng(seed)

    def sample_factors(num, rng):
        return uniform_factors(num, rng)

    def represent(factor_values):
        if represent_kind == "identity":
            return factor_values + 1e-3 * noise_rng.standard_normal(factor_values.shape)
        return noise_rng.standard_normal(factor_values.shape)

    return sample_factors, represent


def transformed(represent):
    """The same representation with its dimensions permuted, rescaled by 2.5 and shifted by -7."""
    return lambda factor_values: 2.5 * represent(factor_values)[:, PERMUTATION] - 7.0


@pytest.mark.slow
def test_codes_equal_to_the_factors_score_near_one(identity_codes, factors, identity_dci):
    assert mig(identity_codes, factors, FACTOR_SIZES)["mig"] > 0.95
    assert identity_dci["disentanglement"] > 0.95
    assert identity_dci["completeness"] > 0.95
    assert identity_dci["informativeness_test"] > 0.95
    assert sap_score(identity_codes, factors, FACTOR_SIZES)["sap"] > 0.25
    scores = modularity_explicitness(identity_codes, factors, FACTOR_SIZES)
    assert scores["modularity"] > 0.95
    assert scores["explicitness_test"] > 0.9


def test_sampler_scores_of_the_factors_themselves_are_one():
    sample_factors, represent = sampler("identity")
    beta = beta_vae_score(sample_factors, represent, FACTOR_SIZES, np.random.default_rng(0), batch_size=16,
                          num_train=400, num_eval=400)
    assert beta["eval_accuracy"] > 0.95
    factor = factor_vae_score(sample_factors, represent, FACTOR_SIZES, np.random.default_rng(0), **SMALL)
    assert factor == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 5.0}


@pytest.mark.slow
def test_noise_codes_score_near_zero_or_chance(noise_codes, factors):
    assert mig(noise_codes, factors, FACTOR_SIZES)["mig"] < 0.02
    scores = dci(noise_codes, factors, FACTOR_SIZES)
    assert scores["disentanglement"] < 0.05
    assert scores["completeness"] < 0.05
    chance = np.mean([1 / size for size in FACTOR_SIZES])
    assert scores["informativeness_test"] == pytest.approx(chance, abs=0.05)
    assert sap_score(noise_codes, factors, FACTOR_SIZES)["sap"] < 0.03
    assert modularity_explicitness(noise_codes, factors, FACTOR_SIZES)["explicitness_test"] == pytest.approx(
        0.5, abs=0.05)


def test_sampler_scores_of_noise_are_at_chance():
    sample_factors, represent = sampler("noise")
    chance = 1 / len(FACTOR_SIZES)
    beta = beta_vae_score(sample_factors, represent, FACTOR_SIZES, np.random.default_rng(0), batch_size=16,
                          num_train=400, num_eval=400)
    assert beta["eval_accuracy"] == pytest.approx(chance, abs=0.08)
    factor = factor_vae_score(sample_factors, represent, FACTOR_SIZES, np.random.default_rng(0), **SMALL)
    assert factor["eval_accuracy"] == pytest.approx(chance, abs=0.08)


@pytest.mark.slow
def test_permuting_rescaling_and_shifting_the_codes_changes_nothing(identity_codes, factors, identity_dci):
    moved = 2.5 * identity_codes[:, PERMUTATION] - 7.0
    assert mig(moved, factors, FACTOR_SIZES) == pytest.approx(mig(identity_codes, factors, FACTOR_SIZES),
                                                              abs=1e-12)
    assert dci(moved, factors, FACTOR_SIZES) == pytest.approx(identity_dci, abs=1e-6)
    assert modularity_explicitness(moved, factors, FACTOR_SIZES) == pytest.approx(
        modularity_explicitness(identity_codes, factors, FACTOR_SIZES), abs=1e-6)
    # SAP's SVM regularises its weight and intercept (as in disentanglement_lib): only permutations are free.
    assert sap_score(identity_codes[:, PERMUTATION], factors, FACTOR_SIZES) == sap_score(
        identity_codes, factors, FACTOR_SIZES)


def test_sampler_scores_ignore_permutations_and_shifts():
    # Each score runs twice on the same random streams: once as is, once with the dimensions moved.
    sample_factors = sampler("noise")[0]
    factor = [factor_vae_score(sample_factors, rep, FACTOR_SIZES, np.random.default_rng(5), **SMALL)
              for rep in (sampler("noise")[1], transformed(sampler("noise")[1]))]
    assert factor[0] == pytest.approx(factor[1], abs=1e-12)
    shifted = sampler("noise")[1]
    beta = [beta_vae_score(sample_factors, rep, FACTOR_SIZES, np.random.default_rng(5), batch_size=16,
                           num_train=400, num_eval=400)
            for rep in (sampler("noise")[1], lambda values: shifted(values)[:, PERMUTATION] + 3.0)]
    assert beta[0] == pytest.approx(beta[1], abs=0.02)


@pytest.mark.slow
def test_mixing_two_factors_lowers_disentanglement_but_not_informativeness(
        identity_codes, mixed_codes, factors, identity_dci, mixed_dci):
    assert mig(mixed_codes, factors, FACTOR_SIZES)["mig"] < mig(identity_codes, factors, FACTOR_SIZES)["mig"] - 0.2
    mixed = mixed_dci
    assert mixed["disentanglement"] < identity_dci["disentanglement"] - 0.1
    assert mixed["informativeness_test"] > identity_dci["informativeness_test"] - 0.02


def test_mig_of_a_tiny_discrete_example_matches_the_hand_computation():
    # z0 = f0, z1 = f0 AND f1, z2 = f1 on the four value pairs; I(f0; z1) = I(f1; z1) = 3/4 ln(4/3) nats and
    # H(f0) = H(f1) = ln 2, so both gaps are 1 - (3/4) ln(4/3) / ln 2. Factor 2 has one value and is left out.
    f0, f1 = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    codes = np.stack([f0, f0 & f1, f1], axis=1).astype(float)
    factors = np.stack([f0, f1, np.zeros(4, dtype=int)], axis=1)
    expected = 1 - 0.75 * math.log(4 / 3) / math.log(2)
    assert mig(codes, factors, (2, 2, 1), num_bins=2)["mig"] == pytest.approx(expected, rel=1e-12)
    assert mig(torch.tensor(codes), torch.tensor(factors), (2, 2, 1), num_bins=2)["mig"] == pytest.approx(expected)


def one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message.endswith(".") and ". " not in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("metric", [mig, dci, sap_score, modularity_explicitness])
def test_bad_samples_fail_with_one_sentence(metric, identity_codes, factors):
    cases = [
        ((identity_codes[:-1], factors, FACTOR_SIZES), "samples"),
        ((identity_codes[:, 0], factors, FACTOR_SIZES), "2-D"),
        ((identity_codes, factors[:, 0], FACTOR_SIZES), "2-D"),
        ((np.where(np.eye(NUM, 5, dtype=bool), np.nan, identity_codes), factors, FACTOR_SIZES), "NaN"),
        ((identity_codes[:, :1], factors, FACTOR_SIZES), "two code dimensions"),
        ((identity_codes, factors, (3, 6, 10, 8)), "factor_sizes"),
        ((identity_codes, factors, (3, 6, 5, 8, 8)), "outside"),
        ((identity_codes, np.column_stack([factors, np.ones(NUM, int)]), None), "single value"),
        ((identity_codes[:2], np.array([[0, 0], [1, 1]]), None), "too few" if metric is not mig else "bins"),
    ]
    for arguments, words in cases:
        with pytest.raises(PyroVAEError) as error:
            metric(*arguments)
        assert words in one_sentence(error)


def test_a_factor_of_one_value_is_left_out_and_one_that_should_vary_is_an_error(identity_codes, factors):
    with_colour = np.column_stack([factors, np.zeros(NUM, int)])
    assert mig(identity_codes, with_colour, FACTOR_SIZES + (1,)) == mig(identity_codes, factors, FACTOR_SIZES)
    with pytest.raises(PyroVAEError) as error:
        mig(identity_codes, with_colour, FACTOR_SIZES + (2,))
    assert "factor 5 takes a single value" in one_sentence(error)


def test_bad_samplers_fail_with_one_sentence():
    sample_factors, represent = sampler("identity")
    cases = [
        ((sample_factors, lambda values: represent(values)[:-1], FACTOR_SIZES, np.random.default_rng(0)), "codes"),
        ((sample_factors, lambda values: represent(values)[:, 0], FACTOR_SIZES, np.random.default_rng(0)), "2-D"),
        ((sample_factors, lambda values: np.full(values.shape, np.nan), FACTOR_SIZES, np.random.default_rng(0)),
         "NaN"),
        ((lambda num, rng: uniform_factors(num, rng)[:, :4], represent, FACTOR_SIZES, np.random.default_rng(0)),
         "shape"),
        ((sample_factors, represent, FACTOR_SIZES, 0), "Generator"),
        ((sample_factors, represent, (3, 1, 1, 1, 1), np.random.default_rng(0)), "two factors"),
    ]
    for score in (beta_vae_score, factor_vae_score):
        for arguments, words in cases:
            with pytest.raises(PyroVAEError) as error:
                score(*arguments, batch_size=4, num_train=20, num_eval=10)
            assert words in one_sentence(error)


@pytest.mark.slow
def test_compute_all_returns_every_metric_as_a_flat_dict_of_floats():
    rng = np.random.default_rng(7)
    factors = uniform_factors(300, rng)
    codes = factors + 0.05 * rng.standard_normal(factors.shape)
    sample_factors, represent = sampler("identity")
    scores = compute_all(codes, factors, FACTOR_SIZES, sample_factors=sample_factors, represent=represent,
                         rng=np.random.default_rng(0), sizes=SMALL)
    assert set(scores) == {
        "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_train", "dci_informativeness_test",
        "sap", "modularity", "explicitness_train", "explicitness_test", "beta_vae_train_accuracy",
        "beta_vae_eval_accuracy", "factor_vae_train_accuracy", "factor_vae_eval_accuracy",
        "factor_vae_num_active_dims"}
    assert all(type(value) is float and np.isfinite(value) for value in scores.values())
    assert scores["factor_vae_eval_accuracy"] == 1.0
    assert DEFAULT_SIZES == {"batch_size": 64, "num_train": 10000, "num_eval": 5000, "num_variance_estimate": 10000}
    for kwargs, words in [({"represent": represent}, "both"), ({"sizes": {"batch": 3}}, "unknown")]:
        with pytest.raises(PyroVAEError) as error:
            compute_all(codes, factors, FACTOR_SIZES, **kwargs)
        assert words in one_sentence(error)


def test_dci_scores_of_a_known_importance_matrix():
    # Codes 0 and 1 each serve one factor, code 2 both equally: per-code disentanglement 1, 1, 0 (base-2 entropy)
    # with equal weights; each factor spreads (2/3, 0, 1/3) over the codes, so completeness is 1 - H_3(2/3, 1/3).
    from pyro_vae.disentanglement.metrics import _dci_completeness, _dci_disentanglement

    importance = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    spread = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(3)
    assert _dci_disentanglement(importance) == pytest.approx(2 / 3, abs=1e-8)
    assert _dci_completeness(importance) == pytest.approx(1 - spread, abs=1e-8)


@pytest.mark.slow
def test_dci_on_histogram_trees_gives_the_known_answers_and_nearly_the_exact_trees_numbers(
        identity_codes, noise_codes, mixed_codes, factors, mixed_dci):
    def fast(codes, sizes=FACTOR_SIZES, of=factors):
        return dci(codes, of, sizes, trees="histogram")

    identity = fast(identity_codes)
    assert identity["disentanglement"] > 0.95 and identity["completeness"] > 0.95
    assert identity["informativeness_test"] > 0.95
    noise = fast(noise_codes)
    assert noise["disentanglement"] < 0.05 and noise["completeness"] < 0.05
    assert noise["informativeness_test"] == pytest.approx(np.mean([1 / size for size in FACTOR_SIZES]), abs=0.05)
    mixed = fast(mixed_codes)
    assert mixed["disentanglement"] < identity["disentanglement"] - 0.1
    assert mixed["informativeness_test"] > identity["informativeness_test"] - 0.02
    # the codes binned into quantiles: a rescaling, a shift and a permutation change nothing but the bin edges'
    # rounding
    assert fast(2.5 * identity_codes[:, PERMUTATION] - 7.0) == pytest.approx(identity, abs=0.005)
    # where the exact trees' importances spread, the binned trees' spread nearly alike
    exact = mixed_dci
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert mixed[key] == pytest.approx(exact[key], abs=0.05), key
    # a factor of two values: one tree per stage instead of one per class
    binary = np.column_stack([factors[:, :2], factors[:, 2] % 2])
    assert fast(binary + 0.05 * noise_codes[:, :3], (3, 6, 2), binary)["informativeness_test"] > 0.95
    with pytest.raises(PyroVAEError) as error:
        dci(identity_codes, factors, FACTOR_SIZES, trees="forest")
    assert "must be one of gbt, histogram" in one_sentence(error)
    from pyro_vae.disentanglement.metrics import _split_gains

    with pytest.raises(PyroVAEError) as error:  # a scikit-learn that keeps its trees otherwise
        _split_gains(object(), 5)
    assert "use the exact trees" in one_sentence(error)
