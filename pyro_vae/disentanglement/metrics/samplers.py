"""The sampler-based scores, which render images of chosen factors: the BetaVAE and FactorVAE scores."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pyro_vae.disentanglement.metrics._common import (Represent, SampleFactors, _ROWS_PER_CALL, _as_codes, _as_factors,
                                                      _check_factor_sizes, _fit_quietly, _logistic_regression,
                                                      _require_two_dims, _require_two_factors, _to_numpy, _varying)
from pyro_vae.errors import PyroVAEError


# --------------------------------------------------------------------------------------------------------------
# Metrics of the generative process (sampler-based)
# --------------------------------------------------------------------------------------------------------------

class _Sampler:
    """Checked access to ``sample_factors`` and ``represent``."""

    def __init__(self, sample_factors: SampleFactors, represent: Represent, factor_sizes, rng):
        if not callable(sample_factors) or not callable(represent):
            raise PyroVAEError("sample_factors and represent must both be callables.")
        if not isinstance(rng, np.random.Generator):
            raise PyroVAEError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.")
        if factor_sizes is None or not hasattr(factor_sizes, "__len__"):
            raise PyroVAEError(f"the sampler-based scores need factor_sizes as a sequence of ints, "
                               f"got {factor_sizes!r}.")
        self.sizes = _check_factor_sizes(factor_sizes, len(factor_sizes))
        self.varying = _varying(self.sizes, len(self.sizes))
        _require_two_factors(len(self.varying))
        self.sample_factors, self.represent, self.rng = sample_factors, represent, rng
        self.num_dims: int | None = None

    def factors(self, num: int) -> np.ndarray:
        factors = _to_numpy(self.sample_factors(num, self.rng), "sample_factors' output")
        if factors.shape != (num, len(self.sizes)):
            raise PyroVAEError(f"sample_factors({num}, rng) returned shape {factors.shape}, "
                               f"expected ({num}, {len(self.sizes)}).")
        return _as_factors(factors, self.sizes, "sample_factors' output")

    def codes(self, factors: np.ndarray) -> np.ndarray:
        codes = _as_codes(self.represent(factors.copy()), "represent's output")
        if codes.shape[0] != factors.shape[0]:
            raise PyroVAEError(f"represent returned {codes.shape[0]} codes for {factors.shape[0]} factor rows.")
        if self.num_dims is None:
            self.num_dims = codes.shape[1]
            _require_two_dims(self.num_dims)
        elif codes.shape[1] != self.num_dims:
            raise PyroVAEError(f"represent returned {codes.shape[1]} code dimensions after {self.num_dims}.")
        return codes

    def fixed_factor(self, num: int) -> np.ndarray:
        """``num`` indices (into all factors) of the factor to hold fixed, uniform over the varying ones."""
        return self.varying[self.rng.integers(len(self.varying), size=num)]


def _check_size(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise PyroVAEError(f"{name} must be an int of at least {minimum}, got {value!r}.")
    return int(value)


def _chunks(total: int, per_chunk: int):
    for start in range(0, total, per_chunk):
        yield min(per_chunk, total - start)


def _beta_vae_points(sampler: _Sampler, batch_size: int, num_points: int):
    """beta_vae._generate_training_batch: per point, a fixed factor (the label) and the mean absolute difference
    of the codes of two batches that share that factor's value (the feature vector)."""
    labels, features = [], []
    per_call = max(1, _ROWS_PER_CALL // (2 * batch_size))
    for num in _chunks(num_points, per_call):
        index = sampler.fixed_factor(num)
        factors1 = sampler.factors(num * batch_size).reshape(num, batch_size, -1)
        factors2 = sampler.factors(num * batch_size).reshape(num, batch_size, -1)
        rows = np.arange(num)
        factors2[rows, :, index] = factors1[rows, :, index]
        k = factors1.shape[-1]
        codes = sampler.codes(np.concatenate([factors1.reshape(-1, k), factors2.reshape(-1, k)]))
        codes1 = codes[:num * batch_size].reshape(num, batch_size, -1)
        codes2 = codes[num * batch_size:].reshape(num, batch_size, -1)
        labels.append(index)
        features.append(np.mean(np.abs(codes1 - codes2), axis=1))
    return np.concatenate(features), np.concatenate(labels)


def beta_vae_score(sample_factors: SampleFactors, represent: Represent, factor_sizes: Sequence[int],
                   rng: np.random.Generator, *, batch_size: int = 64, num_train: int = 10000,
                   num_eval: int = 5000) -> dict[str, float]:
    """BetaVAE score: accuracy of a linear classifier that tells which factor two batches share from the mean
    absolute difference of their codes.

    Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework"
    (ICLR), as disentanglement_lib computes it in ``evaluation/metrics/beta_vae.py`` (``beta_vae_sklearn``) with
    its study's sizes: each of ``num_train`` = 10,000 training and ``num_eval`` = 5,000 evaluation points picks a
    factor uniformly, draws two batches of ``batch_size`` = 64 factor vectors, copies the picked factor's values
    from the first batch to the second, and takes the mean over the batch of |code1 - code2|; a logistic
    regression (one-vs-rest liblinear, C = 1, the library's scikit-learn default) predicts the picked factor.
    Chance is 1 / (number of varying factors).

    ``sample_factors(num, rng)`` returns (num, k) factor value indices; ``represent(factors)`` returns the
    (num, d) codes of the images of those factors (the encoder's mean). ``represent`` is called with whole pairs
    of batches, up to about 4,096 rows at a time.

    Deliberate differences: the picked factor is drawn among the factors of more than one value (the library's
    datasets expose only those); randomness comes from a ``numpy.random.Generator`` and is drawn in chunks, so
    the streams differ from the library's ``RandomState`` ones. Invariant to shifting and permuting the code
    dimensions, not exactly to rescaling them (the regression is regularised), as in the library.

    Returns ``{"train_accuracy", "eval_accuracy"}``. Costs 2 x batch_size x (num_train + num_eval) = 1.92 million
    represented images at the defaults; the classifier itself takes well under a second.
    """
    batch_size = _check_size("batch_size", batch_size, 1)
    num_train = _check_size("num_train", num_train, 2)
    num_eval = _check_size("num_eval", num_eval, 1)
    sampler = _Sampler(sample_factors, represent, factor_sizes, rng)

    train_points, train_labels = _beta_vae_points(sampler, batch_size, num_train)
    if len(np.unique(train_labels)) < 2:
        raise PyroVAEError(f"num_train = {num_train} points drew a single factor; the classifier needs at "
                           "least two, so use more training points.")
    model = _fit_quietly(_logistic_regression(0), train_points, train_labels)
    train_accuracy = np.mean(model.predict(train_points) == train_labels)
    eval_points, eval_labels = _beta_vae_points(sampler, batch_size, num_eval)
    eval_accuracy = np.mean(model.predict(eval_points) == eval_labels)
    return {"train_accuracy": float(train_accuracy), "eval_accuracy": float(eval_accuracy)}


def _factor_vae_votes(sampler: _Sampler, batch_size: int, num_points: int, global_variances: np.ndarray,
                      active_dims: np.ndarray) -> np.ndarray:
    """factor_vae._generate_training_batch: (varying factors, code dims) votes; per point, a batch with one
    factor held at one value votes for the active dimension of least variance relative to its global variance."""
    votes = np.zeros((len(sampler.varying), global_variances.shape[0]), dtype=np.int64)
    per_call = max(1, _ROWS_PER_CALL // batch_size)
    label_of = {factor: label for label, factor in enumerate(sampler.varying)}
    for num in _chunks(num_points, per_call):
        index = sampler.fixed_factor(num)
        factors = sampler.factors(num * batch_size).reshape(num, batch_size, -1)
        rows = np.arange(num)
        factors[rows, :, index] = factors[rows, 0, index][:, None]
        codes = sampler.codes(factors.reshape(num * batch_size, -1)).reshape(num, batch_size, -1)
        local_variances = np.var(codes, axis=1, ddof=1)
        argmin = np.argmin(local_variances[:, active_dims] / global_variances[active_dims], axis=1)
        for factor, dim in zip(index, argmin):
            votes[label_of[int(factor)], dim] += 1
    return votes


def factor_vae_score(sample_factors: SampleFactors, represent: Represent, factor_sizes: Sequence[int],
                     rng: np.random.Generator, *, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000,
                     prune_threshold: float = 0.05) -> dict[str, float]:
    """FactorVAE score: accuracy of a majority-vote classifier that tells which factor a batch holds fixed from
    the code dimension of least normalised variance.

    Kim & Mnih 2018, "Disentangling by Factorising" (ICML), as disentanglement_lib computes it in
    ``evaluation/metrics/factor_vae.py`` with its study's sizes: the global variance of each code dimension is
    estimated (ddof = 1) from ``num_variance_estimate`` = 10,000 samples; dimensions whose global standard
    deviation is below ``prune_threshold`` = 0.05 are pruned (the library's ``_prune_dims``: an absolute
    threshold on sqrt(variance), for dimensions collapsed to the prior); each of ``num_train`` = 10,000 and
    ``num_eval`` = 5,000 points picks a factor uniformly, draws a batch of ``batch_size`` = 64 factor vectors with
    that factor set to the first vector's value, and votes for the active dimension whose variance over the batch,
    divided by its global variance, is least. The classifier maps each dimension to the factor with the most
    training votes; accuracies are the shares of votes it gets right. Chance is 1 / (number of varying factors).

    ``sample_factors`` and ``represent`` are as for :func:`beta_vae_score`; ``represent`` is called with whole
    batches, up to about 4,096 rows at a time.

    Deliberate differences: the picked factor is drawn among the factors of more than one value; randomness
    comes from a ``numpy.random.Generator`` drawn in chunks; ``num_active_dims`` is the number of active
    dimensions (the library returns ``len`` of the boolean mask, i.e. all dimensions). With no active dimension
    the accuracies are 0, as in the library. The score is invariant to permuting, shifting and rescaling the code
    dimensions, except that pruning uses an absolute threshold.

    Returns ``{"train_accuracy", "eval_accuracy", "num_active_dims"}``. Costs batch_size x (num_train +
    num_eval) + num_variance_estimate = 970,000 represented images at the defaults; the votes take a second.
    """
    batch_size = _check_size("batch_size", batch_size, 2)
    num_train = _check_size("num_train", num_train, 1)
    num_eval = _check_size("num_eval", num_eval, 1)
    num_variance_estimate = _check_size("num_variance_estimate", num_variance_estimate, 2)
    sampler = _Sampler(sample_factors, represent, factor_sizes, rng)

    codes = np.concatenate([sampler.codes(sampler.factors(num))
                            for num in _chunks(num_variance_estimate, _ROWS_PER_CALL)])
    global_variances = np.var(codes, axis=0, ddof=1)
    active_dims = np.sqrt(global_variances) >= prune_threshold
    if not active_dims.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0}

    train_votes = _factor_vae_votes(sampler, batch_size, num_train, global_variances, active_dims)
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(train_votes.shape[1])
    train_accuracy = np.sum(train_votes[classifier, columns]) / np.sum(train_votes)
    eval_votes = _factor_vae_votes(sampler, batch_size, num_eval, global_variances, active_dims)
    eval_accuracy = np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)
    return {"train_accuracy": float(train_accuracy), "eval_accuracy": float(eval_accuracy),
            "num_active_dims": float(np.sum(active_dims))}
