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

from pyro_vae.catalog import BINARIZE_MODES, DATASETS  # noqa: F401 (re-exported)
from pyro_vae.errors import InvalidDataError, PyroVAEError

IMAGE_SHAPE = (28, 28)
X_DIM = 28 * 28
#: The labelled offline data sets are one labelled release split once, always the same way, into these parts.
LABELLED_SPLIT = (7000, 1000, 2000)
LABELLED_SPLIT_SEED = 20111111


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
    #: for semi-supervised structures: the few labelled training images (``train`` then holds the unlabelled ones)
    labelled: Optional[Split] = None

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


def _one_line(err: BaseException) -> str:
    """torchvision's download errors span several lines (one per mirror tried); the command line prints one."""
    return " ".join(str(err).split())


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
        raise PyroVAEError(f"MNIST was not found in {data_dir!r}{hint} ({_one_line(err)})") from None
    except OSError as err:
        raise PyroVAEError(f"MNIST could not be downloaded into {data_dir!r}: {_one_line(err)}") from None

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


def semi_supervised(dataset: Dataset, num_labelled: int, *, seed: int = 0) -> Dataset:
    """Split the training images into ``num_labelled`` labelled ones, the same number of each class drawn
    with ``seed``, and the unlabelled rest, for semi-supervised structures (``dataset.labelled``).

    ``binarized-mnist`` has no training labels, so its labelled images come from the 7,000 training images
    of ``binarized-mnist-labelled`` (its binarized test split, shuffled once), its 50,000 training images are
    the unlabelled ones, and the test split becomes the 2,000 held-out labelled images, which no model
    has seen. Data sets with training labels keep their splits; the labelled images leave the unlabelled set.
    """
    if dataset.name == "binarized-mnist":
        labelled_release = split_labelled("binarized-mnist-labelled", load_binarized_mnist().test)
        pool, unlabelled = labelled_release.train, dataset.train
        subset_size = len(dataset.test) if len(dataset.test) < len(labelled_release.test) else None
        test = labelled_release.test.subset(subset_size).to(dataset.test.images.device)
    elif dataset.train.labels is None:
        raise PyroVAEError(f"{dataset.name} has no training labels to draw --num-labelled images from")
    else:
        pool, unlabelled, test = dataset.train, None, dataset.test
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
    return Dataset(dataset.name, train=Split(unlabelled.images), valid=dataset.valid, test=test,
                   binarize=dataset.binarize, labelled=labelled)


def semi_supervised_batches(unlabelled: Split, labelled: Split, batch_size: int, *, generator: torch.Generator,
                            binarize: str = "none") -> Iterator[tuple]:
    """One epoch over both parts: the ``(x,)`` batches of the unlabelled images with the ``(x, y)`` batches of
    the labelled ones spread evenly among them (as in Pyro's ``ss_vae_M2`` example), both shuffled."""
    unlabelled_batches = iterate_batches(unlabelled, batch_size, shuffle=True, generator=generator, binarize=binarize)
    labelled_batches = iterate_batches(labelled, batch_size, shuffle=True, generator=generator, binarize=binarize,
                                       with_labels=True)
    nu, nl = num_batches(len(unlabelled), batch_size), num_batches(len(labelled), batch_size)
    order = sorted([(k / nu, 0) for k in range(nu)] + [((j + 0.5) / nl, 1) for j in range(nl)])
    for _, is_labelled in order:
        yield next(labelled_batches if is_labelled else unlabelled_batches)


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
