"""What ``pyro-vae evaluate`` reports, as the Python API gives it: :func:`evaluate` returns the dict it writes as
JSON, :func:`describe_evaluation` the lines it prints."""
from __future__ import annotations

import math
import time
from typing import Optional

import torch
from tqdm.auto import tqdm

from pyro_vae.data import Dataset, Split, clustering_splits, iterate_batches, redraw
from pyro_vae.data.sequences import NAME as HMM_SEQUENCES, generating_log_likelihood
from pyro_vae.likelihoods import bits_per_dim
from pyro_vae.limits import SampleProgress
from pyro_vae.models import MODELS
from pyro_vae.evaluation.bounds import chunk_shape, evaluate_model, negative_log_likelihood
from pyro_vae.inference.sites import latent_sites
from pyro_vae.evaluation.labels import classification_accuracy, clustering_evaluation

#: images per batch when a split is evaluated
EVAL_BATCH_SIZE = 1000
#: the most images :func:`evaluation_seconds` draws importance samples for (a chunk of more is timed on these)
PROBE_IMAGES = 100


def evaluation_batches(model, dataset: Dataset, split: str) -> list[tuple]:
    """The batches of ``split`` as an evaluation reads them: training images of a binarized (or dequantized) data
    set redrawn once with a seed of their own (valid and test were redrawn once at loading)."""
    data = dataset.split(split)
    if split == "train" and dataset.binarize != "none":
        generator = torch.Generator(data.images.device).manual_seed(0)
        data = Split(redraw(data.images, dataset.binarize, generator), data.labels)
    return list(iterate_batches(data, EVAL_BATCH_SIZE, with_labels=model.needs_labels))


def evaluate(model, dataset: Dataset, split: str = "test", num_samples: int = 5000, *, show_progress: bool = True,
             extra: Optional[dict] = None) -> dict:
    """Everything ``pyro-vae evaluate`` reports of a trained structure on ``split`` of ``dataset``, as the dict it
    writes to JSON: the ELBO and the importance-sampled NLL with ``num_samples`` samples per image (nats per image),
    bits per dimension on 8-bit data, classification accuracy for structures that classify, clustering accuracy and
    cluster sizes for those that cluster, and the seconds it took; ``extra`` is added as it is.

    Writes nothing. A bar over the importance samples shows on a terminal (``show_progress``), and an evaluation
    longer than a minute says how long once its first seconds show the pace (:class:`SampleProgress`).
    """
    batches = evaluation_batches(model, dataset, split)
    disable = None if show_progress else True  # None: tqdm shows the bar on a terminal only
    total = sum(batch[0].shape[0] for batch in batches) * num_samples
    start = time.perf_counter()
    with tqdm(total=total, desc=f"log-likelihood K={num_samples}", unit="sample", unit_scale=True,
              disable=disable, leave=False) as bar:
        counter = SampleProgress(total, bar, say=tqdm.write, what=f"importance sampling with K = {num_samples:,}")
        # Pyro's JIT records the programs once, so only for the built-in structures (as training's default JIT)
        result = {"split": split, **evaluate_model(model, batches, num_samples=num_samples, on_samples=counter,
                                                   jit=type(model) in MODELS.values())}
    if model.can_classify and dataset.split(split).labels is not None:
        result["accuracy"] = classification_accuracy(model, dataset.split(split))
    parts = clustering_splits(dataset) if model.can_cluster else None
    if parts is not None:
        result.update(clustering_evaluation(model, *parts))
    if dataset.kind == "sequences":
        result.update(per_step_figures(result, dataset, split))
    if dataset.eight_bit:
        result["bits_per_dim"] = bits_per_dim(result["nll"], math.prod(dataset.image_shape),
                                              dequantized=dataset.dequantized)
        result["bits_per_dim_from"] = ("the NLL of the density on uniformly dequantized pixels (k + u) / 256, "
                                       "+ log2 256 = 8 bits" if dataset.dequantized
                                       else "the NLL of a distribution over the 256 pixel values")
    result["seconds"] = round(time.perf_counter() - start, 1)
    result.update(extra or {})
    return result


def per_step_figures(result: dict, dataset: Dataset, split: str) -> dict:
    """For sequences: the ELBO and NLL per time step (the totals over the split's sequences divided by their steps,
    as the DMM paper and Pyro's example report them), and for a data set drawn from a known process
    (``hmm-sequences``) the NLL of that process on the same sequences, which no model can beat on average."""
    lengths = dataset.split(split).labels
    steps = int(lengths.sum())
    figures = {"steps": steps, "elbo_per_step": result["elbo"] * result["images"] / steps,
               "nll_per_step": result["nll"] * result["images"] / steps}
    if dataset.name == HMM_SEQUENCES:
        source = -generating_log_likelihood(dataset.split(split)).double()
        figures.update(source_nll=source.mean().item(), source_nll_per_step=source.sum().item() / steps)
    return figures


def evaluation_seconds(model, dataset: Dataset, split: str = "test", num_samples: int = 5000) -> float:
    """About how many seconds :func:`evaluate` will take on ``split`` with ``num_samples`` importance samples per
    image: the time of one chunk of samples of the shape the evaluation will draw (:func:`chunk_shape`, e.g. 2,500
    draws for one image at K = 5000; at most :data:`PROBE_IMAGES` of its images), timed after an untimed one,
    times the number of such chunks. Small probes mislead: at 100 images x 8 draws an IAF guide's per-sample cost
    was 3 to 10 times that of the evaluation's own chunks, which amortize Pyro's per-call work over thousands of
    rows. Without the JIT an evaluation uses for built-in structures, so rather more than less. A structure whose
    latents are all summed out has its exact log p(x) whatever K: one chunk per batch. The random state is left as
    it was, so a training that follows draws what it would have drawn. The model is probed in eval mode, as it is
    evaluated, and left in the mode it was in."""
    data = dataset.split(split)
    batch = next(iter(iterate_batches(data, EVAL_BATCH_SIZE, with_labels=model.needs_labels)))
    sites = latent_sites(model.model, model.guide, tuple(part[:1] for part in batch))
    exact = bool(sites.distributions) and not (sites.reparameterized or sites.score_function)
    batch_size = batch[0].shape[0]
    particles, points = (1, batch_size) if exact else chunk_shape(batch_size, num_samples, sites.enumerated_values)
    probe = tuple(part[:min(points, PROBE_IMAGES)] for part in batch)
    devices = [probe[0].device] if probe[0].is_cuda else []
    training = model.training
    try:
        model.eval()
        with torch.random.fork_rng(devices=devices):
            for _ in range(2):  # the first call pays one-off costs; the second is the one timed
                start = time.perf_counter()
                negative_log_likelihood(model.model, model.guide, [probe], num_samples=particles)
                seconds = time.perf_counter() - start
    finally:
        model.train(training)
    batches = math.ceil(len(data) / batch_size)
    per_batch = math.ceil(batch_size / points) * (1 if exact else math.ceil(num_samples / particles))
    return seconds * points / probe[0].shape[0] * batches * per_batch


def describe_evaluation(result: dict, count: bool = True) -> str:
    """An :func:`evaluate` result in words, as ``pyro-vae evaluate`` prints it: the ELBO and NLL line (``count``:
    with the number of images), bits per dimension and accuracy where measured, and a line on the clusters."""
    split = result["split"]
    item = "sequence" if "steps" in result else "image"
    text = (f"{split} ELBO {result['elbo']:.2f} nats/{item}; {split} NLL (K={result['num_samples']}) "
            f"{result['nll']:.2f} nats/{item}" + (f" over {result['images']} {item}s" if count else ""))
    if "steps" in result:
        text += (f" = {result['nll_per_step']:.4f} nats per step over {result['steps']} steps (ELBO "
                 f"{result['elbo_per_step']:.4f})")
    if "source_nll" in result:
        text += (f"; the process that drew the data: {result['source_nll']:.2f} nats/sequence = "
                 f"{result['source_nll_per_step']:.4f} per step (no model beats it on average)")
    if "bits_per_dim" in result:
        how = "dequantized, + 8" if "dequantized" in result["bits_per_dim_from"] else "discrete"
        text += f" = {result['bits_per_dim']:.4f} bits/dim ({how})"
    if "accuracy" in result:
        text += f"; classification accuracy {100 * result['accuracy']:.2f} % ({result['images']} labelled images)"
    if "clustering_accuracy" in result:
        text += (f"\nclustering accuracy {100 * result['clustering_accuracy']:.2f} % on {result['held_out_images']} "
                 f"held-out labelled images (each cluster given a label on {result['matched_on_images']} others, "
                 f"{result['matching']} matching); held-out images per cluster: "
                 + " ".join(map(str, result["cluster_sizes"])))
    return text
