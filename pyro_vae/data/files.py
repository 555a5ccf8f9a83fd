"""Your own images as a data set (issue 11, first piece): a ``.npz``, a ``.npy`` array, or a folder of images.

:func:`load_image_data` reads them into train / valid / test splits of float images (N, C, H, W) in [0, 1],
with labels where there are some, and says in one line what it found (:attr:`ImageData.description`).

* ``.npz``: an array ``train``, optional ``valid`` and ``test``, optional ``train_labels`` (and so on);
* ``.npy``: one array, split here;
* a folder of PNG or JPEG files, or of sub-folders of them whose names are the labels (torchvision's
  ``ImageFolder`` layout; labels are the sorted sub-folder names' indices).

Values are uint8 0..255 (divided by 255; uint8 arrays holding only 0 and 1 are binary images, read as 0 and 1)
or floats in [0, 1]; layouts (N, H, W), (N, H, W, C) and
(N, C, H, W) are told apart by where a channel axis of 1, 3 or 4 sits. A data set without valid / test
parts is split once with a seeded permutation (VALID_FRACTION, TEST_FRACTION). ``image_size`` resizes
every image to that many pixels a side (area averaging when shrinking, bilinear when growing).
Every mistake is one sentence (:class:`~pyro_vae.errors.InvalidDataError`): an unreadable file, an array
of the wrong rank, mixed image sizes in a folder without ``image_size``, NaN or Inf, values outside [0, 1],
labels of the wrong length, an empty split.

Not yet wired to ``--dataset PATH``: the networks and likelihoods of issue 11 must take image-shaped
batches first.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyro_vae.errors import InvalidDataError


SPLITS = ("train", "valid", "test")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = (1, 3, 4)


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    labels: Optional[torch.Tensor] = None  # (N,) int64


@dataclass
class ImageData:
    train: ImageSplit
    valid: ImageSplit
    test: ImageSplit
    description: str  # one line: what was read, its layout, and how it was split
    #: the label names of a folder data set (sub-folder names), index = label
    classes: Optional[list] = None

    @property
    def image_shape(self) -> tuple:
        return tuple(self.train.images.shape[1:])


def load_image_data(path: str | Path, *, image_size: Optional[int] = None, seed: int = 0) -> ImageData:
    """Read ``path`` (``.npz``, ``.npy`` or a folder of images) into splits; see the module docstring."""
    path = Path(path)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise InvalidDataError(f"--image-size must be a positive number of pixels, got {image_size!r}")
    if not path.exists():
        raise InvalidDataError(f"no such file or folder {path}")
    note = None  # what was done to read the images, for the description
    if path.is_dir():
        arrays, labels, classes, source, note = _read_folder(path, image_size)
    elif path.suffix == ".npz":
        arrays, labels, source = _read_npz(path)
        classes = None
    elif path.suffix == ".npy":
        arrays, labels, source = {"train": _read_npy(path)}, {}, f"{path.name}"
        classes = None
    else:
        raise InvalidDataError(f"{path} is neither a .npz or .npy file nor a folder of images")
    splits, layouts = {}, set()
    # bytes of only 0 and 1, in every array of the file, are binary images: decided once for the whole file
    bits = all(array.dtype == np.uint8 and (not array.size or array.max() <= 1) for array in arrays.values())
    for name, array in arrays.items():
        images, layout = _as_images(array, f"{source} [{name}]", bits=bits)
        layouts.add(layout)
        if image_size is not None:
            images = resize(images, image_size)
        splits[name] = ImageSplit(images, _labels(labels.get(name), len(images), f"{source} [{name}_labels]"))
    shapes = {tuple(split.images.shape[1:]) for split in splits.values()}
    if len(shapes) > 1:
        raise InvalidDataError(f"the splits of {source} have images of different shapes {sorted(shapes)}; "
                               "pass --image-size to resize them to one")
    how = "its own valid and test splits"
    if "valid" not in splits or "test" not in splits:
        splits, how = _split(splits, seed)
    for name in SPLITS:
        if len(splits[name].images) == 0:
            raise InvalidDataError(f"the {name} split of {source} is empty")
    c, h, w = splits["train"].images.shape[1:]
    sizes = " / ".join(str(len(splits[name].images)) for name in SPLITS)
    labelled = "labelled" if splits["train"].labels is not None else "unlabelled"
    description = (f"{source}: {sizes} train / valid / test images of {c} x {h} x {w} (read as "
                   f"{' and '.join(sorted(layouts))}), {labelled}, {how}" + (f"; {note}" if note else ""))
    return ImageData(splits["train"], splits["valid"], splits["test"], description, classes)


#: the first bytes of what numpy.save writes (a .npy file) and of a zip archive (numpy.savez's .npz)
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _check_numpy_file(path: Path, suffix: str) -> None:
    """One sentence for a file whose bytes are not what its suffix says (a text file named .npz, a .npy array
    named .npz or the other way round), before numpy answers with a message about pickled data or a traceback."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(NPY_MAGIC))
    except OSError as err:
        raise InvalidDataError(f"cannot read {path}: {err.strerror or err}") from None
    kind = "npy" if head.startswith(NPY_MAGIC) else "npz" if head.startswith(ZIP_MAGIC) else None
    if kind == suffix:
        return
    what = {"npz": "a .npz archive (the zip file numpy.savez writes)",
            "npy": "a .npy array file (what numpy.save writes)"}
    if kind is None:
        raise InvalidDataError(f"cannot read {path}: it is not {what[suffix]}")
    raise InvalidDataError(f"cannot read {path}: it is {what[kind]}, not {what[suffix]}; rename it to .{kind}")


def _read_npz(path: Path) -> tuple[dict, dict, str]:
    _check_numpy_file(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InvalidDataError(f"cannot read {path}: {err}") from None
    if "train" not in content:
        raise InvalidDataError(f"{path} has no array named 'train' (it has {', '.join(sorted(content)) or 'none'})")
    unknown = sorted(set(content) - set(SPLITS) - {f"{name}_labels" for name in SPLITS})
    if unknown:
        raise InvalidDataError(f"{path} has arrays this reader does not know: {', '.join(unknown)}; expected train, "
                               "valid, test and their *_labels")
    for name in SPLITS:
        if f"{name}_labels" in content and name not in content:
            raise InvalidDataError(f"{path} has {name}_labels but no {name} array")
    arrays = {name: content[name] for name in SPLITS if name in content}
    labels = {name: content[f"{name}_labels"] for name in SPLITS if f"{name}_labels" in content}
    return arrays, labels, path.name


def _read_npy(path: Path) -> np.ndarray:
    _check_numpy_file(path, "npy")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InvalidDataError(f"cannot read {path}: {err}") from None


def _read_folder(path: Path, image_size: Optional[int]) -> tuple[dict, dict, Optional[list], str, Optional[str]]:
    from PIL import Image, UnidentifiedImageError

    folders = sorted(p for p in path.iterdir() if p.is_dir())
    groups = [(None, path)] if not folders else list(enumerate(folders))
    images, labels = [], []
    for label, folder in groups:
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as image:
                    pixels = np.array(image.convert("L" if image.mode in ("L", "1", "P", "I;16") else "RGB"))
            except (OSError, UnidentifiedImageError) as err:
                raise InvalidDataError(f"cannot read the image {file}: {err}") from None
            images.append(pixels)
            labels.append(label)
    if not images:
        raise InvalidDataError(f"the folder {path} holds no PNG or JPEG images"
                               + (" in its sub-folders" if folders else ""))
    sizes = {image.shape[:2] for image in images}  # height x width: grey and colour images of one size are one size
    if len(sizes) > 1 and image_size is None:
        raise InvalidDataError(f"the images in {path} have {len(sizes)} different sizes (e.g. "
                               f"{', '.join(_size_kinds(images, size) for size in sorted(sizes)[:3])}); "
                               "pass --image-size N to resize them all to N x N")
    grey = sum(image.ndim == 2 for image in images)
    note = None
    if 0 < grey < len(images):  # grey among colour: read as colour, the grey value in each channel
        images = [np.repeat(i[..., None], 3, axis=-1) if i.ndim == 2 else i for i in images]
        note = f"its {grey} grey images read as colour (RGB) like the {len(images) - grey} others"
    if len(sizes) > 1:
        bits = all(image.dtype == np.uint8 and image.max() <= 1 for image in images)  # once for the folder
        tensors = [resize(_as_images(image[None], str(path), bits=bits)[0], image_size) for image in images]
        array = torch.cat(tensors).numpy()
    else:
        array = np.stack(images)
    label_array = {"train": np.array(labels)} if folders else {}
    return {"train": array}, label_array, [f.name for f in folders] or None, f"{path.name}/", note


def _size_kinds(images: list, size: tuple) -> str:
    """``28x28 grey``, ``32x32 colour (RGB)`` or ``28x28 grey and colour (RGB)``: a size and what is read at it."""
    kinds = sorted({image.ndim for image in images if image.shape[:2] == size})
    return "x".join(map(str, size)) + " " + " and ".join("grey" if ndim == 2 else "colour (RGB)" for ndim in kinds)


def _as_images(array: np.ndarray, where: str, *, bits: bool = False) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) float32 in [0, 1] from an array of one of the accepted layouts, and the layout's name."""
    if array.ndim == 3:
        array, layout = array[:, None], "(N, H, W)"
    elif array.ndim == 4 and array.shape[1] in CHANNELS:
        layout = "(N, C, H, W)"
    elif array.ndim == 4 and array.shape[3] in CHANNELS:
        array, layout = array.transpose(0, 3, 1, 2), "(N, H, W, C)"
    elif array.ndim == 4:
        raise InvalidDataError(f"{where}: images of shape {array.shape[1:]} have no channel axis of 1, 3 or 4 "
                               "(expected (N, H, W), (N, H, W, C) or (N, C, H, W))")
    else:
        raise InvalidDataError(f"{where}: an array of {array.ndim} dimensions {array.shape}; expected images as "
                               "(N, H, W), (N, H, W, C) or (N, C, H, W)")
    if array.dtype == np.uint8 and bits:  # binary images stored as bytes, 0 and 1 (decided for the whole source)
        images = torch.from_numpy(np.ascontiguousarray(array)).float()
    elif array.dtype == np.uint8:
        images = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if not torch.isfinite(images).all():
            raise InvalidDataError(f"{where}: the images hold NaN or Inf values")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise InvalidDataError(f"{where}: values from {images.min().item():g} to {images.max().item():g}; "
                                   "expected floats in [0, 1] or uint8 0..255")
    else:
        raise InvalidDataError(f"{where}: values of type {array.dtype}; expected uint8 0..255 or floats in [0, 1]")
    return images, layout


def _labels(labels: Optional[np.ndarray], count: int, where: str) -> Optional[torch.Tensor]:
    if labels is None:
        return None
    if labels.ndim != 1 or len(labels) != count:
        raise InvalidDataError(f"{where}: {labels.shape} labels for {count} images; expected one whole number each")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) or (labels < 0).any():
        raise InvalidDataError(f"{where}: labels must be whole numbers >= 0")
    return torch.from_numpy(labels.astype(np.int64))


def _split(splits: dict, seed: int) -> tuple[dict, str]:
    """Split ``train`` into train / valid / test (where those are missing) with a seeded permutation."""
    train = splits["train"]
    n = len(train.images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, taken = {}, 0
    for name, fraction in (("valid", VALID_FRACTION), ("test", TEST_FRACTION)):
        if name in splits:
            parts[name] = splits[name]
            continue
        size = max(1, round(fraction * n)) if n >= 3 else 0
        index = order[taken:taken + size]
        parts[name] = ImageSplit(train.images[index], None if train.labels is None else train.labels[index])
        taken += size
    index = order[taken:]
    parts["train"] = ImageSplit(train.images[index], None if train.labels is None else train.labels[index])
    fractions = {"valid": VALID_FRACTION, "test": TEST_FRACTION}
    made = [name for name in ("valid", "test") if name not in splits]
    how = ", ".join(f"{name} {100 * fractions[name]:g} % of it" for name in made) + f" (seeded permutation, seed {seed})"
    return {name: parts[name] for name in SPLITS}, how


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): area averaging when shrinking, bilinear when growing."""
    if images.shape[-2:] == (size, size):
        return images
    mode = "area" if size <= min(images.shape[-2:]) else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return torch.nn.functional.interpolate(images, size=(size, size), mode=mode, **kwargs).clamp(0, 1)
