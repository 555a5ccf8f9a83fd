"""Labelled images among unlabelled ones: the semi-supervised split of a data set, and the labelled parts that
clustering accuracy is matched and measured on."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from pyro_vae.data.sources import load_binarized_mnist, split_labelled
from pyro_vae.data.types import Dataset, Split
from pyro_vae.errors import PyroVAEError


def _labelled_release(dataset: Dataset) -> Dataset:
    """``binarized-mnist-labelled`` (the binarized test split, shuffled once, with its labels) for a run on
    ``binarized-mnist``: its valid and test splits kept no larger than the run's own (``--subset``), every split on
    the run's device."""
    release = split_labelled("binarized-mnist-labelled", load_binarized_mnist().test)
    device = dataset.test.images.device
    return dataclasses.replace(release, train=release.train.to(device),
                               valid=release.valid.subset(min(len(dataset.valid), len(release.valid))).to(device),
                               test=release.test.subset(min(len(dataset.test), len(release.test))).to(device))


def semi_supervised(dataset: Dataset, num_labelled: int, *, seed: int = 0) -> Dataset:
    """Split the training images into ``num_labelled`` labelled ones, the same number of each class drawn
    with ``seed``, and the unlabelled rest, for semi-supervised structures (``dataset.labelled``).

    ``binarized-mnist`` has no training labels, so its labelled images come from the 7,000 training images
    of ``binarized-mnist-labelled`` (its binarized test split, shuffled once), its 50,000 training images are
    the unlabelled ones, the test split becomes the 2,000 held-out labelled images, which no model has seen,
    and the 1,000 validation images of ``binarized-mnist-labelled`` are the labelled validation set
    (``labelled_valid``). Data sets with training labels keep their splits (their validation split, labelled, is
    ``labelled_valid``); the labelled images leave the unlabelled set.
    """
    if dataset.name == "binarized-mnist":
        release = _labelled_release(dataset)
        pool, unlabelled, test, labelled_valid = release.train, dataset.train, release.test, release.valid
    elif dataset.train.labels is None:
        raise PyroVAEError(f"{dataset.name} has no training labels to draw --num-labelled images from")
    elif dataset.kind == "sequences":
        raise PyroVAEError(f"{dataset.name} holds sequences, whose labels are their lengths, not classes to draw "
                           "--num-labelled examples of")
    else:
        pool, unlabelled, test = dataset.train, None, dataset.test
        labelled_valid = dataset.valid if dataset.valid.labels is not None else None
    classes = pool.labels.unique()
    if num_labelled < 1 or num_labelled % len(classes):
        raise PyroVAEError(f"--num-labelled must be a positive multiple of the {len(classes)} classes (the same "
                           f"number of each), got {num_labelled}")
    per_class = num_labelled // len(classes)
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in classes.tolist():
        members = (pool.labels == label).nonzero().squeeze(-1).cpu()
        if len(members) < per_class:
            raise PyroVAEError(f"--num-labelled {num_labelled} needs {per_class} images of class {label}, but the "
                               f"labelled training images of {dataset.name} hold only {len(members)}")
        picked.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(picked).to(pool.images.device)
    labelled = Split(pool.images[index], pool.labels[index])
    if unlabelled is None:
        keep = torch.ones(len(pool), dtype=torch.bool, device=pool.images.device)
        keep[index] = False
        unlabelled = Split(pool.images[keep])
    return dataclasses.replace(dataset, train=Split(unlabelled.images), test=test, labelled=labelled,
                               labelled_valid=labelled_valid)


def clustering_splits(dataset: Dataset) -> Optional[tuple[Split, Split]]:
    """Labelled images to map clusters to labels on, and held-out labelled images to measure clustering accuracy on;
    None where the data set has no such labels.

    ``binarized-mnist`` trains without labels: the 7,000 training and the 2,000 held-out images of
    ``binarized-mnist-labelled`` (its test split, shuffled once; the images on which ``ss-vae`` is measured).
    A data set whose validation and test splits are labelled: those two.
    """
    if dataset.name == "binarized-mnist":
        release = _labelled_release(dataset)
        return release.train.subset(min(len(dataset.train), len(release.train))), release.test
    if dataset.valid.labels is not None and dataset.test.labels is not None:
        return dataset.valid, dataset.test
    return None
