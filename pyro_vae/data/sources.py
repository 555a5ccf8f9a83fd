"""Where data sets come from: the shipped files, torchvision, dSprites, the procedural sequences, your own images,
vectors, tables and sequences; :func:`load_dataset` reads any of them by name or path."""
from __future__ import annotations

import functools
import gzip
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyro_vae.catalog import BINARIZE_MODES, DATASETS, TORCHVISION_NAMES, check_registry, is_dataset_path
from pyro_vae.data.dsprites import load_official, load_procedural
from pyro_vae.data.files import load_image_data
from pyro_vae.data.polyphonic import SUFFIXES as PICKLE_SUFFIXES, load_polyphonic
from pyro_vae.data.sequences import load_hmm_sequences
from pyro_vae.data.types import MNIST_SHAPE, X_DIM, Dataset, Split, check_dataset, evenly_spaced
from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.pixels import dequantize, on_8bit_grid


#: dSprites (procedural or DeepMind's file): train / valid / test images drawn once with this seed, whatever the
#: training seed, so that runs of several seeds see the same images (``--subset`` keeps fewer of each)
DSPRITES_SPLIT = (50_000, 5_000, 5_000)
DSPRITES_SEED = 20170101
#: The labelled offline data sets are one labelled release split once, always the same way, into these parts.
LABELLED_SPLIT = (7000, 1000, 2000)
LABELLED_SPLIT_SEED = 20111111


def _package_file(name: str) -> Path:
    return Path(str(resources.files("pyro_vae.data").joinpath(name)))


@functools.lru_cache(maxsize=1)
def _binarized_mnist_bits() -> dict[str, np.ndarray]:
    """The shipped file's arrays, read once a process: pixels packed eight to a byte (6.9 MB), labels."""
    with np.load(_package_file("binarized_mnist.npz")) as arrays:
        return {key: arrays[key] for key in ("train", "valid", "test", "test_labels")}


def load_binarized_mnist(subset: Optional[int] = None) -> Dataset:
    """Larochelle & Murray's statically binarized MNIST, 50,000 / 10,000 / 10,000 images; with ``subset``, only
    the ``subset`` evenly spaced images of each split are unpacked (what ``Split.subset`` would keep)."""
    arrays = _binarized_mnist_bits()

    def rows(key: str) -> slice | np.ndarray:
        count = len(arrays[key])
        return slice(None) if subset is None or subset >= count else evenly_spaced(count, subset).numpy()

    def unpack(key: str) -> torch.Tensor:
        bits = np.unpackbits(arrays[key][rows(key)], axis=1)[:, :X_DIM]
        return torch.from_numpy(bits.astype(np.float32))

    test_labels = torch.from_numpy(arrays["test_labels"][rows("test")].astype(np.int64))
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
    """Your own images, vectors or sequences (:func:`pyro_vae.data.files.load_image_data`), or polyphonic music
    (:func:`pyro_vae.data.polyphonic.load_polyphonic`), as a data set of flat splits."""
    if Path(path).suffix in PICKLE_SUFFIXES:
        return load_polyphonic(path)
    data = load_image_data(path, image_size=image_size, seed=seed)
    splits = [Split(part.images.reshape(len(part.images), -1), part.labels) for part in (data.train, data.valid, data.test)]
    return Dataset(str(path), *splits, image_shape=data.image_shape, description=data.description, kind=data.kind)


def dequantize_dataset(dataset: Dataset, seed: int = 0) -> Dataset:
    """Uniform dequantization of 8-bit data for a continuous likelihood: valid and test images become
    (k + u) / 256 once (with ``seed``), training batches afresh at every pass (``binarize="dequantize"``)."""

    generator = torch.Generator().manual_seed(seed)
    for name in ("valid", "test"):
        split = dataset.split(name)
        noisy = dequantize(split.images.cpu(), generator).to(split.images.device)
        setattr(dataset, name, Split(noisy, split.labels, split.factors))
    dataset.binarize, dataset.dequantized = "dequantize", True
    return dataset


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
                           "file, a folder of images or a polyphonic-music .pickle")
    if binarize not in BINARIZE_MODES:
        raise PyroVAEError(f"unknown binarization {binarize!r}; choose one of {', '.join(BINARIZE_MODES)}")
    if subset is not None and subset <= 0:
        raise PyroVAEError(f"--subset must be a positive number of images, got {subset}")
    if name == "binarized-mnist":
        dataset = load_binarized_mnist(subset)  # (unpacks only the images kept)
    elif name == "binarized-mnist-labelled":
        dataset = split_labelled(name, load_binarized_mnist().test)
    elif name == "mnist-test-release":
        dataset = split_labelled(name, load_mnist_test_release())
    elif name in TORCHVISION_SETS:
        dataset = load_torchvision(name, data_dir, download)
    elif name == "dsprites-procedural":
        dataset = load_procedural(seed=DSPRITES_SEED, resolution=image_size or 64)
    elif name == "dsprites":
        dataset = load_official(data_dir, seed=DSPRITES_SEED, num_train=DSPRITES_SPLIT[0], num_valid=DSPRITES_SPLIT[1],
                                num_test=DSPRITES_SPLIT[2])
    elif name == "hmm-sequences":
        dataset = load_hmm_sequences()
    else:
        dataset = load_path(name, image_size=image_size, seed=seed)
    for split_name in ("train", "valid", "test"):
        setattr(dataset, split_name, dataset.split(split_name).subset(subset))
    check_dataset(dataset)  # the images kept (with --subset the others are never read: a quick run checks no more)
    if binarize != "none" and dataset.kind != "images":
        values = [dataset.split(split_name).images for split_name in ("train", "valid", "test")]
        low, high = min(v.min().item() for v in values), max(v.max().item() for v in values)
        if low < 0 or high > 1:
            raise InvalidDataError(f"--binarize draws each value from Bernoulli(value) and needs values in [0, 1]; "
                                   f"{dataset.name} holds values from {low:g} to {high:g}")
    for split_name in ("train", "valid", "test"):
        split = dataset.split(split_name)
        # Dynamic binarization re-samples training batches; valid and test are sampled once, so that
        # every evaluation sees the same binary images.
        if binarize == "static" or (binarize == "dynamic" and split_name != "train"):
            generator = torch.Generator().manual_seed(seed)
            split = Split(torch.bernoulli(split.images, generator=generator), split.labels, split.factors)
        setattr(dataset, split_name, split.to(device))
    dataset.binarize = "none" if binarize == "static" else binarize

    dataset.eight_bit = (dataset.kind == "images" and binarize == "none" and not dataset.is_binary
                         and on_8bit_grid(dataset.train.images))
    return dataset
