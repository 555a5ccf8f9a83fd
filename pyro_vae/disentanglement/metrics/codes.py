"""The metrics of codes and factors: MIG, DCI, SAP, modularity and explicitness."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.svm import LinearSVC

from pyro_vae.catalog import DCI_TREES
from pyro_vae.disentanglement.metrics._common import (_checked_inputs, _discrete_entropy, _discrete_mutual_info,
                                                      _few_samples_per_class_allowed, _fit_quietly,
                                                      _histogram_discretize, _logistic_regression, _prepare,
                                                      _require_bins, _split)
from pyro_vae.errors import PyroVAEError


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
        with _checked_inputs():
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
    with threadpool_limits(1, "openmp"), _few_samples_per_class_allowed(), _checked_inputs():
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
