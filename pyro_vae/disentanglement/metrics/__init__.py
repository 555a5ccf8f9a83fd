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

from typing import Mapping, Sequence

import numpy as np

from pyro_vae.catalog import DCI_TREES
from pyro_vae.disentanglement.metrics._common import (DEFAULT_SIZES, Represent, SampleFactors,  # noqa: F401
                                                      _discrete_entropy, _discrete_mutual_info, _histogram_discretize,
                                                      _prepare)
from pyro_vae.disentanglement.metrics.codes import (_dci_completeness, _dci_disentanglement, _split_gains,  # noqa: F401
                                                    check_dci_trees, dci, mig, modularity_explicitness, sap_score)
from pyro_vae.disentanglement.metrics.samplers import beta_vae_score, factor_vae_score  # noqa: F401
from pyro_vae.errors import PyroVAEError

__all__ = ["mig", "dci", "sap_score", "modularity_explicitness", "beta_vae_score", "factor_vae_score",
           "compute_all", "DEFAULT_SIZES", "DCI_TREES"]


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
