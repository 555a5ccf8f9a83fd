"""Batches: shuffled, sharded across processes, redrawn (dynamic binarization, dequantization), and the labelled
batches of semi-supervised training among the others."""
from __future__ import annotations

from typing import Iterator, Optional

import torch

from pyro_vae.data.types import Split
from pyro_vae.distributed import shard_of
from pyro_vae.errors import PyroVAEError
from pyro_vae.pixels import dequantize


def redraw(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A training batch as ``Dataset.binarize`` says: Bernoulli draws of its pixels ("dynamic"), uniformly
    dequantized ("dequantize"), or as it is ("none")."""
    if mode == "dynamic":
        return torch.bernoulli(x, generator=generator)
    if mode == "dequantize":
    
        return dequantize(x, generator)
    return x


def semi_supervised_batches(unlabelled: Split, labelled: Split, batch_size: int, *, generator: torch.Generator,
                            binarize: str = "none", shard: tuple[int, int] = (0, 1),
                            labelled_every: Optional[int] = None) -> Iterator[tuple]:
    """One epoch over both parts: the ``(x,)`` batches of the unlabelled images with ``(x, y)`` batches of the
    labelled ones, both shuffled.

    By default each labelled image comes once, its batches spread evenly among the others (as in Pyro's
    ``ss_vae_M2`` example: with 100 labels and 50,000 other images, one labelled batch in 251). With
    ``labelled_every=K`` a labelled batch of ``min(batch_size, len(labelled))`` images follows every K-th
    unlabelled batch, the labelled images cycled in a new order at each pass (:func:`labelled_batch_count`).
    """
    unlabelled_batches = iterate_batches(unlabelled, batch_size, shuffle=True, generator=generator, binarize=binarize,
                                         shard=shard)
    if labelled_every is not None:
        cycled = cycled_batches(labelled, min(batch_size, len(labelled)), generator=generator, binarize=binarize,
                                shard=shard)
        for k, batch in enumerate(unlabelled_batches, start=1):
            yield batch
            if k % labelled_every == 0:
                yield next(cycled)
        return
    labelled_batches = iterate_batches(labelled, batch_size, shuffle=True, generator=generator, binarize=binarize,
                                       with_labels=True, shard=shard)
    nu, nl = num_batches(len(unlabelled), batch_size), num_batches(len(labelled), batch_size)
    order = sorted([(k / nu, 0) for k in range(nu)] + [((j + 0.5) / nl, 1) for j in range(nl)])
    for _, is_labelled in order:
        yield next(labelled_batches if is_labelled else unlabelled_batches)


def cycled_batches(split: Split, batch_size: int, *, generator: torch.Generator, binarize: str = "none",
                   shard: tuple[int, int] = (0, 1)) -> Iterator[tuple]:
    """Endless ``(x, y)`` batches of ``batch_size`` images: the split's images in one shuffled order after another,
    cut into batches across the passes' borders (so that every batch is full)."""
    pending = torch.empty(0, dtype=torch.long)
    rank, processes = shard
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(len(split), generator=generator)])
        index, pending = pending[:batch_size], pending[batch_size:]
        if processes > 1:
            index = shard_of(index, rank, processes)
        index = index.to(split.images.device)
        yield redraw(split.images[index], binarize), split.labels[index]


def labelled_batch_count(num_unlabelled: int, num_labelled: int, batch_size: int,
                         labelled_every: Optional[int] = None) -> tuple[int, int]:
    """The labelled batches of an epoch of :func:`semi_supervised_batches` and the labelled images they hold."""
    if labelled_every is None:
        return num_batches(num_labelled, batch_size), num_labelled
    count = num_batches(num_unlabelled, batch_size) // labelled_every
    return count, count * min(batch_size, num_labelled)


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: Optional[torch.Generator] = None,
    binarize: str = "none",
    with_labels: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple]:
    """Yield ``(x,)`` or ``(x, y)`` batches by indexing the tensors held in memory.

    Shuffling draws from ``generator`` (kept on the CPU so runs are reproducible on any device);
    dynamic binarization and dequantization (``binarize``, see :func:`redraw`) draw from torch's global
    generator, whose state checkpoints save. ``shard=(rank, processes)`` yields process ``rank``'s part of each
    batch (:func:`pyro_vae.distributed.shard_of`), for data-parallel training.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.images.device)
    rank, processes = shard
    for index in order.split(batch_size):
        if processes > 1:
            index = shard_of(index, rank, processes)
        x = redraw(split.images[index], binarize)
        if with_labels:
            if split.labels is None:
                raise PyroVAEError("this split has no labels, but the model needs them")
            yield x, split.labels[index]
        else:
            yield (x,)


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
