"""What a structure's discrete latent knows of the labels: classification accuracy, and the clustering accuracy of
clusters matched to labels on labelled images."""
from __future__ import annotations

from typing import Sequence

import torch

from pyro_vae.data import Split, iterate_batches
from pyro_vae.errors import PyroVAEError


@torch.no_grad()
def classification_accuracy(model, split: Split, batch_size: int = 1000) -> float:
    """The fraction of a labelled split that a structure's ``classify`` gets right."""
    if split.labels is None:
        raise PyroVAEError("classification accuracy needs labelled images, and this split has no labels")
    correct = sum(int((model.classify(x) == y).sum())
                  for x, y in iterate_batches(split, batch_size, with_labels=True))
    return correct / len(split)


def match_clusters(clusters: torch.Tensor, labels: torch.Tensor, num_clusters: int, num_classes: int) -> list[int]:
    """The label each cluster stands for, read off images whose labels are known: the one-to-one matching with the
    most images right (the Hungarian method on the cluster-by-label counts) when there are no more clusters than
    labels, else each cluster's most frequent label (several clusters may then share a label, as Dilokthanakul et
    al. 2016 map 16 clusters to 10 digits). A cluster left without a label (more labels than clusters: never;
    an empty cluster with more clusters than labels) gets -1, which no image matches."""
    from scipy.optimize import linear_sum_assignment

    counts = torch.zeros(num_clusters, num_classes, dtype=torch.long)
    counts.index_put_((clusters.long().cpu(), labels.long().cpu()), torch.ones(len(clusters), dtype=torch.long),
                      accumulate=True)
    mapping = [-1] * num_clusters
    if num_clusters <= num_classes:
        rows, cols = linear_sum_assignment(counts.numpy(), maximize=True)
        for cluster, label in zip(rows.tolist(), cols.tolist()):
            mapping[cluster] = label
    else:
        for cluster in range(num_clusters):
            if counts[cluster].sum() > 0:
                mapping[cluster] = int(counts[cluster].argmax())
    return mapping


def clustering_accuracy(clusters: torch.Tensor, labels: torch.Tensor, mapping: Sequence[int]) -> float:
    """The fraction of images whose cluster's label (``mapping``, from :func:`match_clusters`) is their own."""
    if len(clusters) == 0:
        raise PyroVAEError("clustering accuracy needs at least one labelled image")
    predicted = torch.tensor(list(mapping), dtype=torch.long)[clusters.long().cpu()]
    return int((predicted == labels.long().cpu()).sum()) / len(clusters)


@torch.no_grad()
def cluster_assignments(model, split: Split, batch_size: int = 1000) -> torch.Tensor:
    """Each image's most probable cluster under q (the structure's ``cluster``), on the CPU."""
    return torch.cat([model.cluster(x).cpu() for (x,) in iterate_batches(split, batch_size)])


def clustering_evaluation(model, matched_on: Split, held_out: Split) -> dict:
    """Unsupervised clustering accuracy of a structure whose discrete latent ranges over clusters: each cluster is
    mapped to a label on ``matched_on`` (:func:`match_clusters`), and the accuracy measured on ``held_out``, with the
    number of held-out images each cluster holds."""
    if matched_on.labels is None or held_out.labels is None:
        raise PyroVAEError("clustering accuracy needs labelled images to match clusters to labels and to measure on")
    num_clusters = model.num_components
    num_classes = int(max(matched_on.labels.max(), held_out.labels.max())) + 1
    mapping = match_clusters(cluster_assignments(model, matched_on), matched_on.labels, num_clusters, num_classes)
    clusters = cluster_assignments(model, held_out)
    return {"clustering_accuracy": clustering_accuracy(clusters, held_out.labels, mapping),
            "cluster_sizes": torch.bincount(clusters, minlength=num_clusters).tolist(),
            "cluster_labels": mapping,
            "matching": "hungarian" if num_clusters <= num_classes else "majority",
            "matched_on_images": len(matched_on), "held_out_images": len(held_out)}


def matched_clustering_accuracy(model, split: Split) -> dict:
    """The clustering accuracy on the images the clusters are matched on (matched and measured on ``split`` alike,
    so a little optimistic: the training curve of the clusters, never a result) and the smallest cluster's share
    of them: what ``train`` records every epoch for structures that cluster, on the images
    :func:`~pyro_vae.data.clustering_splits` matches on, never the held-out ones."""
    if split.labels is None:
        raise PyroVAEError("clustering accuracy needs labelled images, and this split has no labels")
    clusters = cluster_assignments(model, split)
    num_classes = int(split.labels.max()) + 1
    mapping = match_clusters(clusters, split.labels, model.num_components, num_classes)
    sizes = torch.bincount(clusters, minlength=model.num_components)
    return {"valid_clustering_accuracy": clustering_accuracy(clusters, split.labels, mapping),
            "valid_smallest_cluster": int(sizes.min()) / len(split)}
