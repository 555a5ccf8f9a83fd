"""Data sets as tensors loaded once, and a batch iterator over them.

* ``binarized-mnist``: the statically binarized MNIST of Larochelle & Murray (2011), shipped with the
  package; only its test split carries labels.
* ``binarized-mnist-labelled``: that labelled test split, shuffled once and split 7000 / 1000 / 2000
  into train / valid / held-out test, for models that need labels (the conditional VAE) offline.
* ``mnist-test-release``: the official grey-scale MNIST test release (shipped), split the same way.
* ``mnist``: the full grey-scale MNIST read by torchvision from ``--data-dir`` (``--download`` fetches it);
  ``fashion-mnist``, ``kmnist`` and ``cifar10`` likewise (:data:`TORCHVISION_SETS`).
* ``dsprites-procedural``: dSprites re-rendered here from its six factors (no download; not DeepMind's file),
  ``dsprites``: DeepMind's file from ``--data-dir``; both with the factors in ``Split.factors``
  (:mod:`pyro_vae.data.dsprites`);
* a path: your own images, a ``.npz``, a ``.npy`` or a folder of PNG / JPEG (:mod:`pyro_vae.data.files`).

Splits hold images flat, (N, C * H * W), with :attr:`Dataset.image_shape` (C, H, W) beside them: every
structure takes batches in that form (and image-shaped (N, C, H, W) ones too), and structure files written
for 784-vectors keep working. 8-bit data (values k / 255) trained with a continuous likelihood are
uniformly dequantized (:func:`dequantize_dataset`): training batches afresh at every pass, valid and test once.
"""
from __future__ import annotations

import dataclasses
import gzip
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from pyro_vae.catalog import (BINARIZE_MODES, DATASETS, TORCHVISION_NAMES, check_registry,  # noqa: F401 (re-exported)
                              is_dataset_path)
from pyro_vae.distributed import shard_of
from pyro_vae.errors import InvalidDataError, PyroVAEError

IMAGE_SHAPE = (28, 28)
X_DIM = 28 * 28
MNIST_SHAPE = (1, 28, 28)
#: dSprites (procedural or DeepMind's file): train / valid / test images drawn once with this seed, whatever the
#: training seed, so that runs of several seeds see the same images (``--subset`` keeps fewer of each)
DSPRITES_SPLIT = (50_000, 5_000, 5_000)
DSPRITES_SEED = 20170101
#: The labelled offline data sets are one labelled release split once, always the same way, into these parts.
LABELLED_SPLIT = (7000, 1000, 2000)
LABELLED_SPLIT_SEED = 20111111


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
        return self.binarize != "none" or all(is_binary(s.images) for s in (self.train, self.valid, self.test))


def is_binary(images: torch.Tensor) -> bool:
    return bool(((images == 0) | (images == 1)).all())


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


#: data sets torchvision reads from ``--data-dir`` (``--download`` fetches them): name -> (torchvision class,
#: image shape). MNIST-like sets and CIFAR-10 keep their test set and give the last sixth of their training
#: images to validation (the last 10,000 of MNIST's 60,000, 8,333 of CIFAR-10's 50,000); SVHN does the same
#: with its 73,257 training digits; CelebA keeps its official train / valid / test partition, every face
#: cropped to the central 148 x 148 of its 178 x 218 and shrunk to 64 x 64 (as in most VAE work on it).
TORCHVISION_SETS = {
    "mnist": ("MNIST", MNIST_SHAPE),
    "fashion-mnist": ("FashionMNIST", MNIST_SHAPE),
    "kmnist": ("KMNIST", MNIST_SHAPE),
    "cifar10": ("CIFAR10", (3, 32, 32)),
    "svhn": ("SVHN", (3, 32, 32)),
    "celeba": ("CelebA", (3, 64, 64)),
}
check_registry("torchvision data set", TORCHVISION_SETS, TORCHVISION_NAMES)
CELEBA_CROP, CELEBA_SIZE = 148, 64


def _torchvision_parts(name: str, reader, data_dir: str, download: bool) -> dict:
    """split name -> (uint8 pixels (N, C, H, W), labels (N,) or None) as torchvision reads them."""
    def pixels(array) -> torch.Tensor:
        array = torch.as_tensor(np.asarray(array))
        if array.dim() == 3:  # (N, H, W): one channel
            return array.unsqueeze(1)
        return array.permute(0, 3, 1, 2) if array.shape[-1] in (1, 3) else array  # CIFAR-10 keeps (N, H, W, C)

    if name == "svhn":
        parts = {part: reader(data_dir, split=part, download=download) for part in ("train", "test")}
        return {part: (pixels(ds.data), torch.as_tensor(ds.labels)) for part, ds in parts.items()}
    if name == "celeba":
        return {part: (_celeba_pixels(reader(data_dir, split=part, target_type=[], download=download)), None)
                for part in ("train", "valid", "test")}
    parts = {part: reader(data_dir, train=part == "train", download=download) for part in ("train", "test")}
    return {part: (pixels(ds.data), torch.as_tensor(ds.targets)) for part, ds in parts.items()}


def _celeba_pixels(ds) -> torch.Tensor:
    """CelebA's faces of one split, centre-cropped and shrunk to 64 x 64, as uint8 (N, 3, 64, 64); cached
    beside the images (``pyro-vae-64x64-SPLIT.npy``) after the first read, which decodes every JPEG."""
    from PIL import Image
    from tqdm.auto import tqdm

    folder = Path(ds.root) / ds.base_folder
    cache = folder / f"pyro-vae-{CELEBA_SIZE}x{CELEBA_SIZE}-{ds.split}.npy"
    if cache.is_file():
        return torch.from_numpy(np.load(cache))
    faces = np.empty((len(ds.filename), 3, CELEBA_SIZE, CELEBA_SIZE), dtype=np.uint8)
    for i, name in enumerate(tqdm(ds.filename, desc=f"CelebA {ds.split}: crop and resize", unit="image")):
        with Image.open(folder / "img_align_celeba" / name) as image:
            width, height = image.size
            left, top = (width - CELEBA_CROP) // 2, (height - CELEBA_CROP) // 2
            face = image.convert("RGB").crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP))
            faces[i] = np.asarray(face.resize((CELEBA_SIZE, CELEBA_SIZE), Image.BOX)).transpose(2, 0, 1)
    try:
        np.save(cache, faces)
    except OSError:  # a read-only data folder: read the JPEGs again next time
        pass
    return torch.from_numpy(faces)


def load_torchvision(name: str, data_dir: Optional[str], download: bool = False) -> Dataset:
    """A data set of :data:`TORCHVISION_SETS` through torchvision, as 8-bit pixels k / 255."""
    if data_dir is None:
        raise PyroVAEError(f"the {name} data set needs --data-dir (where torchvision keeps it); add --download to "
                           "fetch it")
    import torchvision.datasets

    class_name, shape = TORCHVISION_SETS[name]
    reader = getattr(torchvision.datasets, class_name)
    try:
        parts = _torchvision_parts(name, reader, data_dir, download)
    except RuntimeError as err:
        hint = "" if download else "; add --download to fetch it (needs internet)"
        raise PyroVAEError(f"{class_name} was not found in {data_dir!r}{hint} ({_one_line(err)})") from None
    except (OSError, ValueError) as err:
        raise PyroVAEError(f"{class_name} could not be read or downloaded into {data_dir!r}: {_one_line(err)}") from None

    def as_split(pixels: torch.Tensor, labels: Optional[torch.Tensor], rows=slice(None)) -> Split:
        pixels = pixels[rows]
        return Split(pixels.reshape(len(pixels), -1).float() / 255.0,
                     None if labels is None else labels[rows].long())

    if "valid" in parts:
        splits = [as_split(*parts[part]) for part in ("train", "valid", "test")]
    else:
        n = len(parts["train"][0])
        num_valid = n // 6
        splits = [as_split(*parts["train"], slice(0, n - num_valid)), as_split(*parts["train"], slice(n - num_valid, n)),
                  as_split(*parts["test"])]
    return Dataset(name, *splits, image_shape=shape)


def load_mnist(data_dir: Optional[str], download: bool = False) -> Dataset:
    """Grey-scale MNIST through torchvision; the last sixth of the training digits (10,000) is the validation split."""
    return load_torchvision("mnist", data_dir, download)


def load_path(path: str, *, image_size: Optional[int] = None, seed: int = 0) -> Dataset:
    """Your own images (:func:`pyro_vae.data.files.load_image_data`) as a data set of flat splits."""
    from pyro_vae.data.files import load_image_data

    data = load_image_data(path, image_size=image_size, seed=seed)
    splits = [Split(part.images.reshape(len(part.images), -1), part.labels) for part in (data.train, data.valid, data.test)]
    return Dataset(str(path), *splits, image_shape=data.image_shape, description=data.description)


def dequantize_dataset(dataset: Dataset, seed: int = 0) -> Dataset:
    """Uniform dequantization of 8-bit data for a continuous likelihood: valid and test images become
    (k + u) / 256 once (with ``seed``), training batches afresh at every pass (``binarize="dequantize"``)."""
    from pyro_vae.likelihoods import dequantize

    generator = torch.Generator().manual_seed(seed)
    for name in ("valid", "test"):
        split = dataset.split(name)
        noisy = dequantize(split.images.cpu(), generator).to(split.images.device)
        setattr(dataset, name, Split(noisy, split.labels, split.factors))
    dataset.binarize, dataset.dequantized = "dequantize", True
    return dataset


def redraw(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A training batch as ``Dataset.binarize`` says: Bernoulli draws of its pixels ("dynamic"), uniformly
    dequantized ("dequantize"), or as it is ("none")."""
    if mode == "dynamic":
        return torch.bernoulli(x, generator=generator)
    if mode == "dequantize":
        from pyro_vae.likelihoods import dequantize

        return dequantize(x, generator)
    return x


def load_dataset(
    name: str = "binarized-mnist",
    *,
    data_dir: Optional[str] = None,
    download: bool = False,
    binarize: str = "none",
    subset: Optional[int] = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    image_size: Optional[int] = None,
) -> Dataset:
    """Load a data set once as tensors on ``device``.

    ``binarize="dynamic"`` re-samples every training batch as Bernoulli(pixel intensity) and samples the
    valid and test images once (with ``seed``); ``"static"`` samples every image once.
    ``subset`` keeps N evenly spaced images of each split, for quick runs. ``name`` may be a path to your own
    images (``image_size`` resizes them; ``seed`` also draws their split when they come without one).
    """
    if is_dataset_path(name) and not Path(name).exists():
        raise PyroVAEError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}, or give a .npz or .npy "
                           "file or a folder of images")
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
    elif name in TORCHVISION_SETS:
        dataset = load_torchvision(name, data_dir, download)
    elif name == "dsprites-procedural":
        from pyro_vae.data.dsprites import load_procedural

        dataset = load_procedural(seed=DSPRITES_SEED, resolution=image_size or 64)
    elif name == "dsprites":
        from pyro_vae.data.dsprites import load_official

        dataset = load_official(data_dir, seed=DSPRITES_SEED, num_train=DSPRITES_SPLIT[0], num_valid=DSPRITES_SPLIT[1],
                                num_test=DSPRITES_SPLIT[2])
    else:
        dataset = load_path(name, image_size=image_size, seed=seed)
    for split_name in ("train", "valid", "test"):
        setattr(dataset, split_name, dataset.split(split_name).subset(subset))
    check_dataset(dataset)  # the images kept (with --subset the others are never read: a quick run checks no more)
    for split_name in ("train", "valid", "test"):
        split = dataset.split(split_name)
        # Dynamic binarization re-samples training batches; valid and test are sampled once, so that
        # every evaluation sees the same binary images.
        if binarize == "static" or (binarize == "dynamic" and split_name != "train"):
            generator = torch.Generator().manual_seed(seed)
            split = Split(torch.bernoulli(split.images, generator=generator), split.labels, split.factors)
        setattr(dataset, split_name, split.to(device))
    dataset.binarize = "none" if binarize == "static" else binarize
    from pyro_vae.likelihoods import on_8bit_grid  # (it imports this module)

    dataset.eight_bit = binarize == "none" and not dataset.is_binary and on_8bit_grid(dataset.train.images)
    return dataset


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
