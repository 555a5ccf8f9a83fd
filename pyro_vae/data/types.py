"""What a data set is: splits of flat images, vectors or sequences with their labels (or lengths) and factors,
checked on the way in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.markov import step_mask
from pyro_vae.pixels import is_binary


IMAGE_SHAPE = (28, 28)
X_DIM = 28 * 28
MNIST_SHAPE = (1, 28, 28)
#: what the rows of a data set are (:attr:`Dataset.kind`): images (C, H, W) with values in [0, 1]; vectors or
#: tables (D,) of any finite values, the likelihood deciding their support; sequences (T, D) of variable length
KINDS = ("images", "vectors", "sequences")


def evenly_spaced(count: int, n: int) -> torch.Tensor:
    """The indices of ``n`` of ``count`` rows spread evenly from the first to the last (what ``--subset`` keeps)."""
    return torch.linspace(0, count - 1, n).round().long()


@dataclass
class Split:
    """One split: images as a float tensor (N, C * H * W) in [0, 1], labels (N,) when known, and for data with
    known generating factors (dSprites) their values' indices (N, num_factors), int64.

    Vectors and tables are (N, D) in the same tensor. Sequences of up to T steps of D features are (N, T * D), step
    t of sequence n at columns t * D to (t + 1) * D, the steps after its end zeros; for them ``labels`` holds each
    sequence's LENGTH, int64 from 1 to T (every sequence has one, even when all are T), which structures over
    sequences take as their second argument, ``model(x, lengths)``."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    factors: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: Optional[int]) -> "Split":
        """``n`` evenly spaced images, so that a split stored sorted by class keeps every class."""
        if n is None or n >= len(self):
            return self
        return self.take(evenly_spaced(len(self), n))

    def take(self, index: torch.Tensor) -> "Split":
        """The images at ``index``, with their labels and factors."""
        labels = None if self.labels is None else self.labels[index.to(self.labels.device)]
        factors = None if self.factors is None else self.factors[index.to(self.factors.device)]
        return Split(self.images[index.to(self.images.device)], labels, factors)

    def to(self, device) -> "Split":
        labels = None if self.labels is None else self.labels.to(device)
        return Split(self.images.to(device), labels, self.factors)


@dataclass
class Dataset:
    """Train / valid / test splits of one data set, the shape of its images, and how training batches are
    redrawn at every pass (``binarize``): "none", "dynamic" (a Bernoulli draw of each grey pixel) or
    "dequantize" (uniform dequantization of 8-bit pixels, :func:`dequantize_dataset`)."""

    name: str
    train: Split
    valid: Split
    test: Split
    binarize: str = "none"
    #: for semi-supervised structures: the few labelled training images (``train`` then holds the unlabelled ones)
    labelled: Optional[Split] = None
    #: for semi-supervised structures: labelled validation images, disjoint from ``labelled`` and ``test``, on which
    #: each epoch's classification accuracy is measured (and the best epoch chosen, never on the test images)
    labelled_valid: Optional[Split] = None
    image_shape: tuple = MNIST_SHAPE
    #: whether the pixels are 8-bit values k / 255 (and not all 0 or 1): bits per dimension are then reported
    eight_bit: bool = False
    #: whether valid and test were dequantized (their NLL is that of a density; bits/dim add log2 256 = 8)
    dequantized: bool = False
    #: one line saying what was read, for data sets from a path
    description: Optional[str] = None
    #: data with known generating factors: their names and numbers of values (``Split.factors`` holds indices)
    factor_names: Optional[tuple] = None
    factor_sizes: Optional[tuple] = None
    #: what a row is (:data:`KINDS`): "images" (``image_shape`` (C, H, W)), "vectors" (``image_shape`` (D,)) or
    #: "sequences" (``image_shape`` (T, D), the lengths in ``Split.labels``)
    kind: str = "images"

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise PyroVAEError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)

    @property
    def item(self) -> str:
        """What one row is called in messages: "image", "vector" or "sequence"."""
        return self.kind[:-1]

    @property
    def is_binary(self) -> bool:
        """Whether every image the structure sees is binary: binarized (drawn, or once), or binary as stored;
        dequantized 8-bit pixels are not."""
        if self.binarize == "dequantize":
            return False
        return self.binarize != "none" or all(is_binary(s.images) for s in (self.train, self.valid, self.test))


def check_images(images: torch.Tensor, what: str = "data", image_shape: tuple = MNIST_SHAPE) -> None:
    """Refuse images that are not (N, C * H * W) for ``image_shape`` or that hold NaN/Inf or values outside [0, 1]."""
    check_values(images, what, image_shape, rows="images")
    if not ((images >= 0) & (images <= 1)).all():
        raise InvalidDataError(f"{what} has values outside [0, 1]; scale pixel intensities to [0, 1]")


def check_values(values: torch.Tensor, what: str, shape: tuple, rows: str = "rows") -> None:
    """Refuse ``rows`` (vectors, sequences, images) that are not (N, prod(shape)) or that hold NaN/Inf; the range
    of vectors and sequences is the likelihood's to judge."""
    width = math.prod(shape)
    if values.dim() != 2 or values.shape[1] != width:
        raise InvalidDataError(f"{what} has shape {tuple(values.shape)}; expected (N, {width}) flattened "
                               f"{' x '.join(map(str, shape))} {rows}")
    if len(values) == 0:
        raise InvalidDataError(f"{what} is empty")
    if not torch.isfinite(values).all():
        raise InvalidDataError(f"{what} contains NaN or Inf values; clean the data before training")


def check_lengths(lengths: Optional[torch.Tensor], count: int, num_steps: int, what: str) -> None:
    """Refuse sequence lengths that are missing, not one whole number from 1 to ``num_steps`` per sequence."""
    if lengths is None:
        raise InvalidDataError(f"{what} has no sequence lengths (Split.labels holds them for sequences)")
    if lengths.dim() != 1 or len(lengths) != count:
        raise InvalidDataError(f"{what} has {tuple(lengths.shape)} lengths for {count} sequences; expected one each")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise InvalidDataError(f"{what} has lengths of type {lengths.dtype}; expected whole numbers (int64)")
    if count and (lengths.min() < 1 or lengths.max() > num_steps):
        raise InvalidDataError(f"{what} has sequence lengths from {lengths.min().item()} to {lengths.max().item()}; "
                               f"each must be from 1 to the {num_steps} steps of the data")


def check_dataset(dataset: Dataset) -> None:
    """Each split against the data set's kind: images in [0, 1]; vectors and sequences finite; sequences with a
    length from 1 to T each, and zeros after their end."""
    if dataset.kind not in KINDS:
        raise PyroVAEError(f"unknown kind of data {dataset.kind!r}; choose one of {', '.join(KINDS)}")
    for split_name in ("train", "valid", "test"):
        split, what = dataset.split(split_name), f"the {split_name} split of {dataset.name}"
        if dataset.kind == "images":
            check_images(split.images, what, dataset.image_shape)
            continue
        check_values(split.images, what, dataset.image_shape)
        if dataset.kind == "sequences":
            num_steps = dataset.image_shape[0]
            check_lengths(split.labels, len(split), num_steps, what)
            padding = ~step_mask(split.labels.to(split.images.device), num_steps)
            if (split.images.reshape(len(split), num_steps, -1)[padding] != 0).any():
                raise InvalidDataError(f"{what} has values other than zero after the end of some sequences; the "
                                       "steps past each sequence's length must be zeros")
