"""Disentanglement of a trained structure, measured on data with known generating factors (dSprites).

:func:`measure` encodes ``num_samples`` training images of the run's data set (the guide's mean of the code
site), computes every metric of :mod:`pyro_vae.disentanglement.metrics` from those (codes, factors), and,
where images of any factor combination can be made (the procedural dSprites), the BetaVAE and FactorVAE
scores from fresh pairs rendered on demand. :func:`mutual_information_matrix` gives the normalised mutual
information between every latent and every factor, the picture MIG summarises.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_vae.catalog import FACTOR_DATASETS
from pyro_vae.config import check_positive
from pyro_vae.data import Dataset
from pyro_vae.data.dsprites import render, sample_factors
from pyro_vae.disentanglement import metrics
from pyro_vae.errors import PyroVAEError
from pyro_vae.limits import FLOAT_BYTES, SampleProgress, check_fits

#: disentanglement_lib's number of points for MIG, DCI, SAP and modularity
NUM_SAMPLES = 10_000
#: the fewest points taken: modularity bins the two thirds it fits on into MIG's 20 histogram bins
MIN_NUM_SAMPLES = 30
ENCODE_BATCH = 1_000


def check_has_factors(dataset: Dataset, what: str = "the run") -> None:
    """One sentence if ``dataset`` has no ground-truth factors to measure against."""
    if dataset.factor_sizes is None or dataset.train.factors is None:
        raise PyroVAEError(f"{what} was trained on {dataset.name}, which has no ground-truth factors; the "
                           f"disentanglement metrics need data with known factors: --dataset "
                           f"{' or '.join(FACTOR_DATASETS)}")


@torch.no_grad()
def encode(model, images: torch.Tensor) -> np.ndarray:
    """The guide's mean of the code site for every image, in batches, as float64 numpy (N, d)."""
    device = model.device
    codes = [model.encode(images[i:i + ENCODE_BATCH].to(device)).cpu() for i in range(0, len(images), ENCODE_BATCH)]
    return torch.cat(codes).double().numpy()


def sampler_of(model, dataset: Dataset) -> tuple[Optional[Callable], Optional[Callable]]:
    """(sample_factors, represent) for the BetaVAE and FactorVAE scores, which need images of factor values
    chosen on the spot: rendered for the procedural dSprites; (None, None) for data that cannot make them."""
    if not dataset.name.startswith("dsprites-procedural"):
        return None, None
    resolution = dataset.image_shape[-1]

    def draw(num: int, rng: np.random.Generator) -> np.ndarray:
        return sample_factors(num, rng).numpy()

    def represent(factors: np.ndarray) -> np.ndarray:
        return encode(model, render(factors, resolution))

    return draw, represent


def mutual_information_matrix(codes, factors, factor_sizes, *, num_bins: int = 20) -> np.ndarray:
    """(d, k) mutual information between each latent (discretised into ``num_bins`` equal-width bins, as MIG
    does) and each factor that varies (factors with one value are left out, as the metrics do), divided by the
    factor's entropy: 1 where a latent determines a factor."""
    codes, factors = metrics._prepare(codes, factors, factor_sizes)
    discretized = metrics._histogram_discretize(codes, num_bins)
    mutual_info = metrics._discrete_mutual_info(discretized, factors)
    entropy = metrics._discrete_entropy(factors)
    return np.divide(mutual_info, entropy, out=np.zeros_like(mutual_info), where=entropy > 0)


#: the fewest --score-points taken: the BetaVAE score's classifier needs training points of at least two of the five
#: varying dSprites factors, each point's factor drawn uniformly; N points all draw one factor with probability
#: 5^(1 - N), 20 % at N = 2 and 5e-7 at N = 10 (metrics.beta_vae_score refuses such a draw)
MIN_SCORE_POINTS = 10


def check_score_points(points, option: str = "--score-points") -> None:
    """One sentence, before any work, for a number of BetaVAE / FactorVAE training points that cannot work."""
    check_positive(points, option)
    if points < MIN_SCORE_POINTS:
        raise PyroVAEError(f"{option} must be at least {MIN_SCORE_POINTS}, got {points}: the BetaVAE score's "
                           "classifier needs training points of at least two factors, and fewer points can all draw "
                           "the same one")


def sampler_sizes(points: int) -> dict:
    """The sizes of the BetaVAE and FactorVAE scores for ``points`` training points: ``points`` to train,
    half as many to evaluate, ``points`` images for FactorVAE's variance estimate (disentanglement_lib: 10,000)."""
    return {"num_train": points, "num_eval": max(1, points // 2), "num_variance_estimate": points}


def represented_images(sizes: Optional[dict] = None) -> int:
    """How many images the BetaVAE and FactorVAE scores render and encode at ``sizes`` (over
    ``metrics.DEFAULT_SIZES``): two batches per BetaVAE point, one per FactorVAE point, and FactorVAE's variance
    estimate; 2,890,000 at disentanglement_lib's sizes (fewer when every code dimension collapsed: FactorVAE then
    casts no votes)."""
    chosen = {**metrics.DEFAULT_SIZES, **(sizes or {})}
    return 3 * chosen["batch_size"] * (chosen["num_train"] + chosen["num_eval"]) + chosen["num_variance_estimate"]


def check_scores_fit(sizes: Optional[dict], code_dims: int, device: str = "cpu") -> None:
    """One sentence, before any work, when the BetaVAE score's points (a feature vector of ``code_dims`` float64
    and a label each, training and evaluation points held together, twice while the classifier copies them)
    cannot fit in the memory available; the images are rendered and encoded a few thousand at a time."""
    chosen = {**metrics.DEFAULT_SIZES, **(sizes or {})}
    points = chosen["num_train"] + chosen["num_eval"]
    need = 2 * points * (code_dims + 1) * 8 + chosen["num_variance_estimate"] * code_dims * 8 \
        + 4 * chosen["batch_size"] * 64 * 64 * FLOAT_BYTES * code_dims  # a chunk of images and activations
    check_fits(need, f"the BetaVAE and FactorVAE scores with {chosen['num_train']:,} training points",
               "use fewer --score-points", device)


def measure(model, dataset: Dataset, *, num_samples: int = NUM_SAMPLES, seed: int = 0,
            sizes: Optional[dict] = None, dci_trees: str = "gbt", show_progress: bool = True,
            say: Callable[[str], None] = tqdm.write) -> dict:
    """Every metric of ``model`` on ``num_samples`` training images of ``dataset`` (drawn with ``seed``), plus the
    sampler-based scores where the data can render any factor combination; returns a flat dict with the
    settings (``num_samples``, ``seed``, ``dci_trees``, ``sampler_scores``) and ``seconds``, and the (d, k)
    normalised mutual-information matrix under ``mutual_information``.

    The sampler-based scores show a bar over the images they render (on a terminal, ``show_progress``), and ``say``
    hears how long they will take once their first seconds show the pace, if that is more than a minute."""
    check_has_factors(dataset)
    check_positive(num_samples, "the number of samples")
    metrics.check_dci_trees(dci_trees)
    train = dataset.train
    if num_samples > len(train):
        raise PyroVAEError(f"{num_samples:,} samples were asked for, but the training split of {dataset.name} holds "
                           f"{len(train):,} images; ask for fewer")
    start = time.perf_counter()
    index = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num_samples]
    picked = train.take(index)
    codes, factors = encode(model, picked.images), picked.factors.numpy()
    draw, represent = sampler_of(model, dataset)
    if represent is not None:
        check_scores_fit(sizes, codes.shape[1], str(model.device))
    total = represented_images(sizes) if represent is not None else 0
    with tqdm(total=total, desc="BetaVAE and FactorVAE scores", unit="image", unit_scale=True,
              disable=None if show_progress and total else True, leave=False) as bar:
        pace = SampleProgress(total, bar, say=say, what="the BetaVAE and FactorVAE scores",
                              unit="images to render and encode")

        def counted(factors: np.ndarray) -> np.ndarray:
            codes = represent(factors)
            pace(len(factors))
            return codes

        result = metrics.compute_all(codes, factors, dataset.factor_sizes, sample_factors=draw,
                                     represent=counted if represent is not None else None,
                                     rng=np.random.default_rng(seed), sizes=sizes, dci_trees=dci_trees)
    result = {key: float(value) for key, value in result.items()}
    matrix = mutual_information_matrix(codes, factors, dataset.factor_sizes)
    varying = [name for name, size in zip(dataset.factor_names, dataset.factor_sizes) if size > 1]
    return {**result, "num_samples": num_samples, "seed": seed, "dci_trees": dci_trees,
            "sampler_scores": draw is not None, "sampler_sizes": {**metrics.DEFAULT_SIZES, **(sizes or {})},
            "factor_names": varying,
            "mutual_information": matrix.tolist(),
            "seconds": round(time.perf_counter() - start, 1)}
