"""Data sets as tensors loaded once, and a batch iterator over them.

* ``binarized-mnist``: the statically binarized MNIST of Larochelle & Murray (2011), shipped with the
  package; only its test split carries labels.
* ``binarized-mnist-labelled``: that labelled test split, shuffled once and split 7000 / 1000 / 2000
  into train / valid / held-out test, for models that need labels (the conditional VAE) offline.
* ``mnist-test-release``: the official grey-scale MNIST test release (shipped), split the same way.
* ``mnist``: the full grey-scale MNIST read by torchvision from ``--data-dir`` (``--download`` fetches it).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from pyro_vae.errors import InvalidDataError, PyroVAEError

IMAGE_SHAPE = (28, 28)
X_DIM = 28 * 28
DATASETS = ("binarized-mnist", "binarized-mnist-labelled", "mnist-test-release", "mnist")
#: The labelled offline data sets are one labelled release split once, always the same way, into these parts.
LABELLED_SPLIT = (7000, 1000, 2000)
LABELLED_SPLIT_SEED = 20111111
BINARIZE_MODES = ("none", "dynamic", "static")


@dataclass
class Split:
    """One split: images as a float tensor (N, 784) in [0, 1], and labels (N,) when known."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: Optional[int]) -> "Split":
        """``n`` evenly spaced images, so that a split stored sorted by class keeps every class."""
        if n is None or n >= len(self):
            return self
        index = torch.linspace(0, len(self) - 1, n).round().long()
        labels = None if self.labels is None else self.labels[index]
        return Split(self.images[index], labels)

    def to(self, device) -> "Split":
        labels = None if self.labels is None else self.labels.to(device)
        return Split(self.images.to(device), labels)


@dataclass
class Dataset:
    """Train / valid / test splits of one data set, plus how batches are binarized."""

    name: str
    train: Split
    valid: Split
    test: Split
    binarize: str = "none"

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise PyroVAEError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)

    @property
    def is_binary(self) -> bool:
        return self.binarize != "none" or all(is_binary(s.images) for s in (self.train, self.valid, self.test))


def is_binary(images: torch.Tensor) -> bool:
    return bool(((images == 0) | (images == 1)).all())


def check_images(images: torch.Tensor, what: str = "data") -> None:
    """Refuse images that are not (N, 784) or that hold NaN/Inf or values outside [0, 1]."""
    if images.dim() != 2 or images.shape[1] != X_DIM:
        raise InvalidDataError(f"{what} has shape {tuple(images.shape)}; expected (N, {X_DIM}) flattened 28x28 images")
    if not torch.isfinite(images).all():
        raise InvalidDataError(f"{what} contains NaN or Inf values; clean the data before training")
    if images.min() < 0 or images.max() > 1:
        raise InvalidDataError(f"{what} has values outside [0, 1]; scale pixel intensities to [0, 1]")


def check_dataset(dataset: Dataset) -> None:
    for split_name in ("train", "valid", "test"):
        check_images(dataset.split(split_name).images, f"the {split_name} split of {dataset.name}")


def _package_file(name: str) -> Path:
    return Path(str(resources.files("pyro_vae.data").joinpath(name)))


def load_binarized_mnist() -> Dataset:
    arrays = np.load(_package_file("binarized_mnist.npz"))

    def unpack(key: str) -> torch.Tensor:
        bits = np.unpackbits(arrays[key], axis=1)[:, :X_DIM]
        return torch.from_numpy(bits.astype(np.float32))

    test_labels = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    return Dataset(
        "binarized-mnist",
        train=Split(unpack("train")),
        valid=Split(unpack("valid")),
        test=Split(unpack("test"), test_labels),
    )


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist_test_release() -> Split:
    """The official labelled MNIST test release shipped with the package (grey-scale, 10,000 digits)."""
    folder = _package_file("mnist")
    images = _read_idx(folder / "t10k-images-idx3-ubyte.gz").reshape(-1, X_DIM)
    labels = _read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    return Split(torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64)))


def split_labelled(name: str, release: Split) -> Dataset:
    """Shuffle a labelled release (with a fixed seed) into train / valid / held-out test parts."""
    order = torch.randperm(len(release), generator=torch.Generator().manual_seed(LABELLED_SPLIT_SEED))
    n_train, n_valid, _ = LABELLED_SPLIT
    parts = order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:]
    train, valid, test = (Split(release.images[i], release.labels[i]) for i in parts)
    return Dataset(name, train=train, valid=valid, test=test)


def load_mnist(data_dir: Optional[str], download: bool = False) -> Dataset:
    """Grey-scale MNIST through torchvision; the last sixth of the training digits (10,000) is the validation split."""
    if data_dir is None:
        raise PyroVAEError("the mnist data set needs --data-dir (where torchvision keeps MNIST); add --download to fetch it")
    from torchvision.datasets import MNIST

    try:
        train = MNIST(data_dir, train=True, download=download)
        test = MNIST(data_dir, train=False, download=download)
    except RuntimeError as err:
        hint = "" if download else "; add --download to fetch it (needs internet)"
        raise PyroVAEError(f"MNIST was not found in {data_dir!r}{hint} ({err})") from None
    except OSError as err:
        raise PyroVAEError(f"MNIST could not be downloaded into {data_dir!r}: {err}") from None

    def as_split(ds, rows=slice(None)) -> Split:
        images = ds.data[rows].reshape(-1, X_DIM).float() / 255.0
        return Split(images, ds.targets[rows].long())

    n = len(train)
    num_valid = n // 6
    return Dataset(
        "mnist",
        train=as_split(train, slice(0, n - num_valid)),
        valid=as_split(train, slice(n - num_valid, n)),
        test=as_split(test),
    )


def load_dataset(
    name: str = "binarized-mnist",
    *,
    data_dir: Optional[str] = None,
    download: bool = False,
    binarize: str = "none",
    subset: Optional[int] = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Dataset:
    """Load a data set once as tensors on ``device``.

    ``binarize="dynamic"`` re-samples every training batch as Bernoulli(pixel intensity) and samples the
    valid and test images once (with ``seed``); ``"static"`` samples every image once.
    ``subset`` keeps N evenly spaced images of each split, for quick runs.
    """
    if name not in DATASETS:
        raise PyroVAEError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if binarize not in BINARIZE_MODES:
        raise PyroVAEError(f"unknown binarization {binarize!r}; choose one of {', '.join(BINARIZE_MODES)}")
    if subset is not None and subset <= 0:
        raise PyroVAEError(f"--subset must be a positive number of images, got {subset}")
    if name == "binarized-mnist":
        dataset = load_binarized_mnist()
    elif name == "binarized-mnist-labelled":
        dataset = split_labelled(name, load_binarized_mnist().test)
    elif name == "mnist-test-release":
        dataset = split_labelled(name, load_mnist_test_release())
    else:
        dataset = load_mnist(data_dir, download)
    check_dataset(dataset)
    for split_name in ("train", "valid", "test"):
        split = dataset.split(split_name).subset(subset)
        # Dynamic binarization re-samples training batches; valid and test are sampled once, so that
        # every evaluation sees the same binary images.
        if binarize == "static" or (binarize == "dynamic" and split_name != "train"):
            generator = torch.Generator().manual_seed(seed)
            split = Split(torch.bernoulli(split.images, generator=generator), split.labels)
        setattr(dataset, split_name, split.to(device))
    dataset.binarize = "none" if binarize == "static" else binarize
    return dataset


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: Optional[torch.Generator] = None,
    binarize: str = "none",
    with_labels: bool = False,
) -> Iterator[tuple]:
    """Yield ``(x,)`` or ``(x, y)`` batches by indexing the tensors held in memory.

    Shuffling draws from ``generator`` (kept on the CPU so runs are reproducible on any device);
    dynamic binarization draws from torch's global generator, whose state checkpoints save.
    """
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(split.images.device)
    for index in order.split(batch_size):
        x = split.images[index]
        if binarize == "dynamic":
            x = torch.bernoulli(x)
        if with_labels:
            if split.labels is None:
                raise PyroVAEError("this split has no labels, but the model needs them")
            yield x, split.labels[index]
        else:
            yield (x,)


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
