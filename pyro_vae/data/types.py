"""What a data set is: splits of flat images with their labels and factors, checked on the way in."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.pixels import is_binary


IMAGE_SHAPE = (28, 28)
X_DIM = 28 * 28
MNIST_SHAPE = (1, 28, 28)


@dataclass
class Split:
    """One split: images as a float tensor (N, C * H * W) in [0, 1], labels (N,) when known, and for data with
    known generating factors (dSprites) their values' indices (N, num_factors), int64."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    factors: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: Optional[int]) -> "Split":
        """``n`` evenly spaced images, so that a split stored sorted by class keeps every class."""
        if n is None or n >= len(self):
            return self
        index = torch.linspace(0, len(self) - 1, n).round().long()
        return self.take(index)

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

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise PyroVAEError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)

    @property
    def is_binary(self) -> bool:
        """Whether every image the structure sees is binary: binarized (drawn, or once), or binary as stored;
        dequantized 8-bit pixels are not."""
        if self.binarize == "dequantize":
            return False
        return self.binarize != "none" or all(is_binary(s.images) for s in (self.train, self.valid, self.test))


def check_images(images: torch.Tensor, what: str = "data", image_shape: tuple = MNIST_SHAPE) -> None:
    """Refuse images that are not (N, C * H * W) for ``image_shape`` or that hold NaN/Inf or values outside [0, 1]."""
    x_dim = math.prod(image_shape)
    if images.dim() != 2 or images.shape[1] != x_dim:
        raise InvalidDataError(f"{what} has shape {tuple(images.shape)}; expected (N, {x_dim}) flattened "
                               f"{' x '.join(map(str, image_shape))} images")
    if len(images) == 0:
        raise InvalidDataError(f"{what} is empty")
    if not ((images >= 0) & (images <= 1)).all():  # NaN and +-Inf fail it too, and are named below
        if not torch.isfinite(images).all():
            raise InvalidDataError(f"{what} contains NaN or Inf values; clean the data before training")
        raise InvalidDataError(f"{what} has values outside [0, 1]; scale pixel intensities to [0, 1]")


def check_dataset(dataset: Dataset) -> None:
    for split_name in ("train", "valid", "test"):
        check_images(dataset.split(split_name).images, f"the {split_name} split of {dataset.name}", dataset.image_shape)
