"""Measures of a trained model/guide pair, generic over any latent structure.

Nothing here knows which model it runs: the ELBO comes from Pyro's ELBO classes, and the importance-
sampled log-likelihood from tracing the guide and replaying the model under a particle plate.
"""
from pyro_vae.evaluation.bounds import (MAX_ROWS, elbo_per_datapoint, evaluate_model, log_likelihood_iwae,  # noqa: F401
                                        negative_log_likelihood, rate_distortion)
from pyro_vae.evaluation.collapse import ACTIVE_THRESHOLD, collapse_diagnostics  # noqa: F401
from pyro_vae.evaluation.labels import (classification_accuracy, cluster_assignments, clustering_accuracy,  # noqa: F401
                                        clustering_evaluation, match_clusters,
                                        matched_clustering_accuracy)
from pyro_vae.evaluation.report import (EVAL_BATCH_SIZE, describe_evaluation, evaluate, evaluation_batches,  # noqa: F401
                                        evaluation_seconds)
