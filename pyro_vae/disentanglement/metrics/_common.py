"""What the metrics share: input checks, discretization, mutual information, quiet classifiers."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.multiclass import OneVsRestClassifier

from pyro_vae.errors import PyroVAEError

#: disentanglement_lib's sizes for the sampler-based scores (beta_vae.gin and factor_vae.gin of the study).
DEFAULT_SIZES: Mapping[str, int] = {"batch_size": 64, "num_train": 10000, "num_eval": 5000,
                                    "num_variance_estimate": 10000}

#: How many rows ``represent`` is given at a time by the sampler-based scores (whole pairs / batches per call).
_ROWS_PER_CALL = 4096

SampleFactors = Callable[[int, np.random.Generator], np.ndarray]
Represent = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------

def _to_numpy(array, name: str) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # a torch tensor, without importing torch
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except (TypeError, ValueError) as error:
        raise PyroVAEError(f"{name} cannot be read as an array ({error}).") from None


def _as_codes(codes, name: str = "codes") -> np.ndarray:
    codes = _to_numpy(codes, name)
    if codes.ndim != 2:
        raise PyroVAEError(f"{name} must be a 2-D array (samples, code dimensions), got shape {codes.shape}.")
    if not (np.issubdtype(codes.dtype, np.number) or codes.dtype == bool):
        raise PyroVAEError(f"{name} must hold numbers, got dtype {codes.dtype}.")
    codes = codes.astype(np.float64)
    if not np.all(np.isfinite(codes)):
        raise PyroVAEError(f"{name} contains NaN or infinite values.")
    return codes


def _as_factors(factors, factor_sizes: Sequence[int] | None, name: str = "factors") -> np.ndarray:
    factors = _to_numpy(factors, name)
    if factors.ndim != 2:
        raise PyroVAEError(f"{name} must be a 2-D array (samples, factors), got shape {factors.shape}.")
    if not (np.issubdtype(factors.dtype, np.number) or factors.dtype == bool):
        raise PyroVAEError(f"{name} must hold integer factor value indices, got dtype {factors.dtype}.")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.all(np.isfinite(factors)) or np.any(factors != np.round(factors)):
            raise PyroVAEError(f"{name} must hold integer factor value indices, got non-integer values.")
    factors = factors.astype(np.int64)
    if factors.size and factors.min() < 0:
        raise PyroVAEError(f"{name} must hold non-negative factor value indices, got {factors.min()}.")
    if factor_sizes is not None:
        sizes = np.asarray(factor_sizes, dtype=np.int64)
        if factors.size and np.any(factors.max(axis=0) >= sizes):
            j = int(np.argmax(factors.max(axis=0) >= sizes))
            raise PyroVAEError(f"{name}[:, {j}] has the value {factors[:, j].max()}, outside the "
                               f"{sizes[j]} values that factor_sizes gives that factor.")
    return factors


def _check_factor_sizes(factor_sizes: Sequence[int] | None, num_factors: int) -> np.ndarray | None:
    if factor_sizes is None:
        return None
    try:
        sizes = [int(s) for s in factor_sizes]
    except (TypeError, ValueError):
        raise PyroVAEError(f"factor_sizes must be a sequence of ints, got {factor_sizes!r}.") from None
    if any(s != float(f) for s, f in zip(sizes, factor_sizes)) or any(s < 1 for s in sizes):
        raise PyroVAEError(f"factor_sizes must be positive ints, got {tuple(factor_sizes)}.")
    if len(sizes) != num_factors:
        raise PyroVAEError(f"factor_sizes has {len(sizes)} entries but factors has {num_factors} columns.")
    return np.asarray(sizes, dtype=np.int64)


def _varying(factor_sizes: np.ndarray | None, num_factors: int) -> np.ndarray:
    """Indices of the factors that the metrics score: all, or those of more than one value."""
    if factor_sizes is None:
        return np.arange(num_factors)
    return np.flatnonzero(factor_sizes > 1)


def _require_two_dims(num_dims: int) -> None:
    if num_dims < 2:
        raise PyroVAEError(f"the disentanglement metrics need at least two code dimensions, got {num_dims}.")


def _require_two_factors(num_varying: int) -> None:
    if num_varying < 2:
        raise PyroVAEError("the disentanglement metrics need at least two factors with more than one value, "
                           f"got {num_varying}.")


def _prepare(codes, factors, factor_sizes) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 codes (N, d) and the int64 columns of the varying factors (N, k')."""
    codes = _as_codes(codes)
    factors_array = _to_numpy(factors, "factors")
    if factors_array.ndim != 2:
        raise PyroVAEError(f"factors must be a 2-D array (samples, factors), got shape {factors_array.shape}.")
    sizes = _check_factor_sizes(factor_sizes, factors_array.shape[1])
    factors = _as_factors(factors_array, sizes)
    if codes.shape[0] != factors.shape[0]:
        raise PyroVAEError(f"codes has {codes.shape[0]} samples but factors has {factors.shape[0]}; "
                           "they must describe the same samples.")
    varying = _varying(sizes, factors.shape[1])
    _require_two_dims(codes.shape[1])
    _require_two_factors(len(varying))
    factors = factors[:, varying]
    _require_distinct(factors, varying, "the samples")
    return codes, factors


def _require_distinct(factors: np.ndarray, columns: np.ndarray, where: str) -> None:
    for position, column in enumerate(columns):
        if len(np.unique(factors[:, position])) < 2:
            raise PyroVAEError(f"factor {column} takes a single value in {where}; the metric needs at least two "
                               "(give it size 1 in factor_sizes to leave it out).")


def _require_bins(num_samples: int, num_bins: int) -> None:
    if int(num_bins) != num_bins or num_bins < 2:
        raise PyroVAEError(f"num_bins must be an int of at least 2, got {num_bins!r}.")
    if num_samples < num_bins:
        raise PyroVAEError(f"there are {num_samples} samples, fewer than the {num_bins} histogram bins.")


def _split(codes: np.ndarray, factors: np.ndarray, test_fraction: float, seed: int):
    """A seeded shuffle split into (codes_train, factors_train, codes_test, factors_test)."""
    if not 0.0 < test_fraction < 1.0:
        raise PyroVAEError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    num = codes.shape[0]
    num_test = int(round(num * test_fraction))
    if num_test < 1 or num - num_test < 2:
        raise PyroVAEError(f"{num} samples are too few for a train/test split with test_fraction "
                           f"{test_fraction:g} (need at least 2 training and 1 test sample).")
    order = np.random.default_rng(seed).permutation(num)
    train, test = order[num_test:], order[:num_test]
    _require_distinct(factors[train], np.arange(factors.shape[1]), "the training split")
    return codes[train], factors[train], codes[test], factors[test]


# --------------------------------------------------------------------------------------------------------------
# Shared pieces of disentanglement_lib's utils.py
# --------------------------------------------------------------------------------------------------------------

def _histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """utils._histogram_discretize: each code dimension into ``num_bins`` equal-width bins of its own range."""
    discretized = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        discretized[:, i] = np.digitize(codes[:, i], edges)
    return discretized


def _discrete_mutual_info(discretized: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """utils.discrete_mutual_info: the (d, k) matrix of mutual informations in nats."""
    matrix = np.zeros((discretized.shape[1], factors.shape[1]))
    for i in range(discretized.shape[1]):
        for j in range(factors.shape[1]):
            matrix[i, j] = mutual_info_score(factors[:, j], discretized[:, i])
    return matrix


def _discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """utils.discrete_entropy: the entropy in nats of each factor's empirical distribution."""
    return np.array([mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])


def _logistic_regression(seed: int) -> OneVsRestClassifier:
    """The ``LogisticRegression()`` disentanglement_lib ran: one-vs-rest liblinear, C = 1 (scikit-learn 0.20)."""
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=seed))


def _fit_quietly(model, x: np.ndarray, y: np.ndarray):
    """Fits, without the ConvergenceWarning that liblinear's capped iterations can raise."""
    with warnings.catch_warnings(), _few_samples_per_class_allowed():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def _checked_inputs():
    """A context in which scikit-learn trusts its inputs, for DCI's boosted trees: the codes were checked finite
    (:func:`_as_codes`) and the estimators' parameters are constants, so its checks of both, which it repeated
    for every tree of every boosting stage, are skipped (a quarter of DCI's time; the fitted models are the
    same). The setting is the calling thread's: enter it in each thread that fits."""
    import sklearn

    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


@contextlib.contextmanager
def _few_samples_per_class_allowed():
    """A context without scikit-learn's "number of unique classes is greater than 50% of the number of samples"
    warning: a factor of 32 values (dSprites' positions) measured on a hundred codes is a valid, if noisy, input
    here, not a regression target mistaken for classes. Entered in the calling thread, around any threads (the
    warning filters are the process's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%",
                                category=UserWarning)
        yield
