"""The standard disentanglement metrics, as disentanglement_lib defines them.

Each metric follows one file of google-research/disentanglement_lib (``disentanglement_lib/evaluation/metrics/``),
the code behind Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations" (ICML, arXiv:1811.12359), with the sizes of its ``config/unsupervised_study_v1/metric_configs``.

Conventions shared by every function:

* ``codes``: float array (N, d), numpy or torch, the representation (the encoder's mean); converted to float64.
* ``factors``: integer array (N, k) of ground-truth factor value indices.
* ``factor_sizes``: k positive ints, the number of values of each factor. A factor with a single value (dSprites'
  colour) is left out of every metric, as disentanglement_lib's datasets leave it out of their latent factors
  (its ``dsprites.py`` exposes only factors 1 to 5). Without ``factor_sizes`` every factor must vary in the sample.
* Every metric needs at least two code dimensions and two factors that vary: with fewer, its definition divides
  by zero (the base-k and base-d entropies of DCI, the k - 1 of modularity, the top-two gaps of MIG and SAP).
* Every metric returns a dict of floats and raises :class:`~pyro_vae.errors.PyroVAEError` with one sentence for
  input it cannot score.

The metrics of fixed samples (``mig``, ``dci``, ``sap_score``, ``modularity_explicitness``) are pure functions of
(codes, factors). Where disentanglement_lib draws a training and a test sample from the dataset, they split the
given samples instead, two thirds for training and one third for testing (its 10,000 / 5,000), after a seeded
shuffle. The BetaVAE and FactorVAE scores need pairs and batches that share a factor value, so they take a sampler
of the generative process instead: ``sample_factors(num, rng) -> (num, k) ints`` and ``represent(factors) ->
(num, d) codes`` (render images from the factor values, encode them).

Logistic regressions are one-vs-rest liblinear fits with C = 1: the ``LogisticRegression()`` default of the
scikit-learn (0.19 / 0.20) that disentanglement_lib's results were computed with; scikit-learn >= 0.22 defaults
to a multinomial lbfgs fit, which is not what the library ran.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC

from pyro_vae.catalog import DCI_TREES
from pyro_vae.errors import PyroVAEError

__all__ = ["mig", "dci", "sap_score", "modularity_explicitness", "beta_vae_score", "factor_vae_score",
           "compute_all", "DEFAULT_SIZES", "DCI_TREES"]

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


# --------------------------------------------------------------------------------------------------------------
# Metrics of fixed samples
# --------------------------------------------------------------------------------------------------------------

def mig(codes, factors, factor_sizes: Sequence[int] | None = None, *, num_bins: int = 20) -> dict[str, float]:
    """Mutual Information Gap: for each factor, the gap between the two code dimensions most informative about
    it, over the factor's entropy; averaged over factors.

    Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders" (arXiv:1802.04942), as
    disentanglement_lib computes it in ``evaluation/metrics/mig.py`` (``discrete_mig``): each code dimension is
    discretised into ``num_bins`` = 20 equal-width histogram bins (``utils._histogram_discretize``), mutual
    information and entropy are the plug-in estimates of ``sklearn.metrics.mutual_info_score`` (nats). The
    library draws 10,000 samples; here all the given samples are used.

    Deliberate difference: factors of size 1 are left out (their entropy is 0; the library never sees them).

    Returns ``{"mig": float}`` in [0, 1]. Takes milliseconds for 10,000 x 10 codes.
    """
    codes, factors = _prepare(codes, factors, factor_sizes)
    _require_bins(codes.shape[0], num_bins)
    mutual_info = _discrete_mutual_info(_histogram_discretize(codes, num_bins), factors)
    entropy = _discrete_entropy(factors)
    top = np.sort(mutual_info, axis=0)[::-1]
    return {"mig": float(np.mean((top[0] - top[1]) / entropy))}


def _importance_gbt(codes_train, factors_train, codes_test, factors_test, seed: int, n_jobs: int | None):
    """dci.compute_importance_gbt: one default GradientBoostingClassifier per factor, fitted in parallel threads."""
    from joblib import Parallel, delayed

    def fit(j):
        model = GradientBoostingClassifier(random_state=seed).fit(codes_train, factors_train[:, j])
        return (np.abs(model.feature_importances_),
                np.mean(model.predict(codes_train) == factors_train[:, j]),
                np.mean(model.predict(codes_test) == factors_test[:, j]))

    num_factors = factors_train.shape[1]
    if n_jobs is None:
        n_jobs = max(1, min(num_factors, os.cpu_count() or 1))
    with _few_samples_per_class_allowed():
        results = Parallel(n_jobs=n_jobs, backend="threading")(delayed(fit)(j) for j in range(num_factors))
    importance = np.stack([r[0] for r in results], axis=1)  # (num_codes, num_factors)
    return importance, float(np.mean([r[1] for r in results])), float(np.mean([r[2] for r in results]))


def _importance_histogram(codes_train, factors_train, codes_test, factors_test, seed: int):
    """The same boosting on histograms: scikit-learn's ``HistGradientBoostingClassifier`` with the settings of the
    default ``GradientBoostingClassifier`` (100 stages of depth-3 trees, learning rate 0.1, leaves of one sample
    or more, no regularisation, no early stopping), codes binned into 255 quantiles; a code's importance is the
    total gain of the splits on it (the loss decrease in the second-order expansion the trees are fitted to),
    where the exact trees sum the decrease of the residuals' variance. scikit-learn does not expose it, so it is
    read off the fitted trees' nodes."""
    from threadpoolctl import threadpool_limits

    num_factors, num_codes = factors_train.shape[1], codes_train.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_accuracy, test_accuracy = [], []
    # One OpenMP thread: scikit-learn's parallel histograms spin while they wait, and beside other busy processes
    # they took 366 s instead of 7.8 s here (10.3 s on one thread); threads per factor do not help either, the
    # boosting loop holds the GIL.
    with threadpool_limits(1, "openmp"), _few_samples_per_class_allowed():
        for j in range(num_factors):
            model = HistGradientBoostingClassifier(
                max_iter=100, learning_rate=0.1, max_depth=3, max_leaf_nodes=None, min_samples_leaf=1,
                l2_regularization=0.0, early_stopping=False, random_state=seed).fit(codes_train, factors_train[:, j])
            importance[:, j] = _split_gains(model, num_codes)
            train_accuracy.append(np.mean(model.predict(codes_train) == factors_train[:, j]))
            test_accuracy.append(np.mean(model.predict(codes_test) == factors_test[:, j]))
    total = importance.sum(axis=0, keepdims=True)
    importance = np.divide(importance, total, out=np.zeros_like(importance), where=total > 0)  # as GBT normalises
    return importance, float(np.mean(train_accuracy)), float(np.mean(test_accuracy))


def _split_gains(model: HistGradientBoostingClassifier, num_codes: int) -> np.ndarray:
    """The total gain of each code's splits over every tree of a fitted model (one tree per class, one in all
    for two classes, per stage), read off its private ``_predictors`` (as scikit-learn 1.9.1 keeps them); another
    form is one sentence."""
    gains = np.zeros(num_codes)
    try:
        for stage in model._predictors:
            for tree in stage:
                nodes = tree.nodes[~tree.nodes["is_leaf"].astype(bool)]
                np.add.at(gains, nodes["feature_idx"], nodes["gain"])
    except (AttributeError, KeyError, ValueError, IndexError):
        import sklearn

        raise PyroVAEError(f"scikit-learn {sklearn.__version__} keeps its histogram trees in another form than "
                           f"this code reads; use the exact trees (trees='gbt', --dci-trees gbt).") from None
    return gains


def check_dci_trees(trees: str) -> None:
    if trees not in DCI_TREES:
        raise PyroVAEError(f"DCI's trees must be one of {', '.join(DCI_TREES)}, got {trees!r}.")


def _dci_disentanglement(importance: np.ndarray) -> float:
    """dci.disentanglement: 1 - base-k entropy of each code's importances, weighted by the code's share."""
    per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    code_importance = importance.sum(axis=1) / importance.sum()
    return float(np.sum(per_code * code_importance))


def _dci_completeness(importance: np.ndarray) -> float:
    """dci.completeness: 1 - base-d entropy of each factor's importances, weighted by the factor's share."""
    per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
    if importance.sum() == 0.0:
        importance = np.ones_like(importance)
    factor_importance = importance.sum(axis=0) / importance.sum()
    return float(np.sum(per_factor * factor_importance))


def dci(codes, factors, factor_sizes: Sequence[int] | None = None, *, test_fraction: float = 1 / 3,
        seed: int = 0, n_jobs: int | None = None, trees: str = "gbt") -> dict[str, float]:
    """Disentanglement, completeness and informativeness from gradient-boosted-tree feature importances.

    Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled Representations"
    (ICLR), as disentanglement_lib computes it in ``evaluation/metrics/dci.py``: per factor a default
    ``sklearn.ensemble.GradientBoostingClassifier`` (100 stages of depth-3 trees) predicts the factor from all
    code dimensions; the absolute ``feature_importances_`` form the (d, k) importance matrix R. Disentanglement is
    sum_i rho_i (1 - H_k(R_i.)) with rho_i the share of code i, completeness sum_j rho_j (1 - H_d(R_.j)), both
    with the library's +1e-11 smoothing; ``informativeness_train`` / ``informativeness_test`` are the mean
    classification accuracies (not errors, despite the paper) on the training and test parts.

    Deliberate differences: the library draws 10,000 training and 5,000 test samples; here the given samples are
    split after a seeded shuffle, ``test_fraction`` = 1/3 for testing (15,000 samples reproduce its sizes). The
    trees get ``random_state=seed`` (the library leaves it unset; with all features considered at every split it
    only breaks ties). Factors of size 1 are left out (a classifier cannot be fitted to one class). The factors'
    classifiers are fitted in ``n_jobs`` threads (default: one per factor, up to the CPU count); the results do
    not depend on it (the exact trees only: the binned ones run one factor after another on one thread).

    Timing: gradient boosting is the slow part, one tree per class and stage (3,500 trees for factor sizes
    (3, 6, 10, 8, 8)), all of it in scikit-learn's tree builder, which releases the GIL. Measured on a shared
    2-core machine for 10 code dimensions: 47 s of CPU time for 10,000 samples (6,667 to train) and 74 s for
    15,000 (the library's 10,000 to train); the other metrics take under a second. The per-factor threads can
    bring the wall time to about half that on two free cores.

    ``trees="histogram"`` takes the importances from the same boosting on binned codes instead
    (:func:`_importance_histogram`): seconds instead of minutes, and not disentanglement_lib's numbers. On 10,000
    codes that are a noisy linear mix of the 64 x 64 dSprites factors (``benchmarks/disentanglement_metrics.py``)
    the exact and the binned trees gave disentanglement 0.283 and 0.335, completeness 0.236 and 0.275,
    informativeness (test) 0.462 and 0.481, in 116 s and 10.7 s on the idle 2-core machine; on codes that equal the
    factors both give 1. Quantile bins make it invariant to rescaling and permuting the codes only up to the
    bin edges' rounding (within 0.005 in the tests). Say which trees a results table used.

    Returns ``{"disentanglement", "completeness", "informativeness_train", "informativeness_test"}``.
    """
    codes, factors = _prepare(codes, factors, factor_sizes)
    check_dci_trees(trees)
    codes_train, factors_train, codes_test, factors_test = _split(codes, factors, test_fraction, seed)
    if trees == "gbt":
        importance, train_accuracy, test_accuracy = _importance_gbt(
            codes_train, factors_train, codes_test, factors_test, seed, n_jobs)
    else:
        importance, train_accuracy, test_accuracy = _importance_histogram(
            codes_train, factors_train, codes_test, factors_test, seed)
    return {"disentanglement": _dci_disentanglement(importance),
            "completeness": _dci_completeness(importance),
            "informativeness_train": train_accuracy,
            "informativeness_test": test_accuracy}


def sap_score(codes, factors, factor_sizes: Sequence[int] | None = None, *, test_fraction: float = 1 / 3,
              seed: int = 0) -> dict[str, float]:
    """Separated Attribute Predictability: for each factor, the gap between the two code dimensions that
    predict it best on their own; averaged over factors.

    Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from Unlabeled Observations"
    (ICLR), Section 3, as disentanglement_lib computes it in ``evaluation/metrics/sap_score.py`` with its study's
    ``continuous_factors=False``: the score of code dimension i for factor j is the test accuracy of a
    ``LinearSVC(C=0.01, class_weight="balanced")`` fitted on that single dimension (one-vs-rest thresholds);
    SAP is the mean over factors of the top score minus the second.

    Like the library it is invariant to permuting the code dimensions but not exactly to rescaling or shifting
    them (the SVM's weight and intercept are regularised).

    Deliberate differences: the given samples are split after a seeded shuffle, ``test_fraction`` = 1/3 for
    testing, where the library draws 10,000 training and 5,000 test samples; factors of size 1 are left out.
    LinearSVC solves the primal here (scikit-learn's ``dual="auto"``) where scikit-learn 0.20 solved the dual:
    the same strictly convex problem, so the same optimum up to the solver's tolerance.

    Returns ``{"sap": float}``. Takes about a second for 10,000 x 10 codes and 5 factors.
    """
    codes, factors = _prepare(codes, factors, factor_sizes)
    codes_train, factors_train, codes_test, factors_test = _split(codes, factors, test_fraction, seed)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            _fit_quietly(classifier, codes_train[:, i:i + 1], factors_train[:, j])
            scores[i, j] = np.mean(classifier.predict(codes_test[:, i:i + 1]) == factors_test[:, j])
    top = np.sort(scores, axis=0)
    return {"sap": float(np.mean(top[-1] - top[-2]))}


def _modularity(mutual_info: np.ndarray) -> float:
    """modularity_explicitness.modularity: 1 - (sum of the other squared MIs) / ((k - 1) max squared MI) per
    code dimension, 0 for a dimension with no information; averaged over code dimensions."""
    squared = np.square(mutual_info)
    max_squared = np.max(squared, axis=1)
    numerator = np.sum(squared, axis=1) - max_squared
    denominator = max_squared * (squared.shape[1] - 1.0)
    informative = max_squared > 0.0
    score = np.zeros(squared.shape[0])
    score[informative] = 1.0 - numerator[informative] / denominator[informative]
    return float(np.mean(score))


def _roc_auc(classes: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Macro ROC-AUC of one-vs-rest probabilities, over the classes with both positives and negatives."""
    indicator = labels[:, None] == classes[None, :]
    usable = indicator.any(axis=0) & ~indicator.all(axis=0)
    if not usable.any():
        return float("nan")
    return float(roc_auc_score(indicator[:, usable].astype(int), probabilities[:, usable], average="macro"))


def modularity_explicitness(codes, factors, factor_sizes: Sequence[int] | None = None, *, num_bins: int = 20,
                            test_fraction: float = 1 / 3, seed: int = 0) -> dict[str, float]:
    """Modularity (each code dimension informs about one factor at most) and explicitness (each factor is
    linearly decodable from the whole code).

    Ridgeway & Mozer 2018, "Learning Deep Disentangled Embeddings With the F-Statistic Loss" (NeurIPS), as
    disentanglement_lib computes it in ``evaluation/metrics/modularity_explicitness.py``: modularity from the
    mutual information of the training part, 20-bin histogram discretisation (``num_bins``) as in MIG;
    explicitness per factor is the macro ROC-AUC of a one-vs-rest logistic regression (liblinear, C = 1) on the
    codes standardised with the training part's mean and standard deviation, averaged over factors.

    Deliberate differences: the given samples are split after a seeded shuffle, ``test_fraction`` = 1/3 for
    testing (the library draws 10,000 / 5,000 samples); factors of size 1 are left out. A code dimension with
    zero spread is standardised by 1 instead of 0 (the library would produce NaN). The AUC is averaged over the
    classes the classifier knows that have both positives and negatives in the evaluated part (the library's
    MultiLabelBinarizer of the test labels fails when a class is missing from one part).

    Returns ``{"modularity", "explicitness_train", "explicitness_test"}``. Takes about a second for 10,000 x 10
    codes and 5 factors.
    """
    codes, factors = _prepare(codes, factors, factor_sizes)
    codes_train, factors_train, codes_test, factors_test = _split(codes, factors, test_fraction, seed)
    _require_bins(codes_train.shape[0], num_bins)
    mutual_info = _discrete_mutual_info(_histogram_discretize(codes_train, num_bins), factors_train)

    mean = codes_train.mean(axis=0)
    std = codes_train.std(axis=0)
    std[std == 0.0] = 1.0
    x_train, x_test = (codes_train - mean) / std, (codes_test - mean) / std
    auc_train, auc_test = [], []
    for j in range(factors.shape[1]):
        classifier = _fit_quietly(_logistic_regression(seed), x_train, factors_train[:, j])
        auc_train.append(_roc_auc(classifier.classes_, factors_train[:, j], classifier.predict_proba(x_train)))
        auc_test.append(_roc_auc(classifier.classes_, factors_test[:, j], classifier.predict_proba(x_test)))
    return {"modularity": _modularity(mutual_info),
            "explicitness_train": float(np.nanmean(auc_train)),
            "explicitness_test": float(np.nanmean(auc_test))}


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


# --------------------------------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------------------------------

def compute_all(codes, factors, factor_sizes: Sequence[int], *, sample_factors: SampleFactors | None = None,
                represent: Represent | None = None, rng: np.random.Generator | None = None,
                sizes: Mapping[str, int] | None = None, dci_trees: str = "gbt") -> dict[str, float]:
    """Every metric in one flat dict: those of the given (codes, factors) always, the BetaVAE and FactorVAE scores
    when ``sample_factors`` and ``represent`` are given.

    ``sizes`` overrides entries of :data:`DEFAULT_SIZES` (disentanglement_lib's ``batch_size`` 64, ``num_train``
    10,000, ``num_eval`` 5,000, ``num_variance_estimate`` 10,000) for the sampler-based scores, e.g. smaller ones
    for tests. ``rng`` drives the sampler-based scores (default ``numpy.random.default_rng(0)``).

    Keys: ``mig``; ``dci_disentanglement``, ``dci_completeness``, ``dci_informativeness_train``,
    ``dci_informativeness_test``; ``sap``; ``modularity``, ``explicitness_train``, ``explicitness_test``; and with a
    sampler ``beta_vae_train_accuracy``, ``beta_vae_eval_accuracy``, ``factor_vae_train_accuracy``,
    ``factor_vae_eval_accuracy``, ``factor_vae_num_active_dims``. Most of the time goes to DCI's gradient
    boosting (see :func:`dci`; ``dci_trees="histogram"`` makes it seconds).
    """
    if factor_sizes is None:
        raise PyroVAEError("compute_all needs factor_sizes.")
    if (sample_factors is None) != (represent is None):
        raise PyroVAEError("give both sample_factors and represent for the BetaVAE and FactorVAE scores, or neither.")
    chosen = dict(DEFAULT_SIZES)
    unknown = sorted(set(sizes or {}) - set(chosen))
    if unknown:
        raise PyroVAEError(f"sizes has unknown entries {unknown}; the known ones are {sorted(chosen)}.")
    chosen.update(sizes or {})

    results = dict(mig(codes, factors, factor_sizes))
    results.update({f"dci_{key}": value for key, value in dci(codes, factors, factor_sizes, trees=dci_trees).items()})
    results.update(sap_score(codes, factors, factor_sizes))
    results.update(modularity_explicitness(codes, factors, factor_sizes))
    if sample_factors is not None:
        rng = np.random.default_rng(0) if rng is None else rng
        beta = beta_vae_score(sample_factors, represent, factor_sizes, rng, batch_size=chosen["batch_size"],
                              num_train=chosen["num_train"], num_eval=chosen["num_eval"])
        factor = factor_vae_score(sample_factors, represent, factor_sizes, rng, **chosen)
        results.update({f"beta_vae_{key}": value for key, value in beta.items()})
        results.update({f"factor_vae_{key}": value for key, value in factor.items()})
    return results
