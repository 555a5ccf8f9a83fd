"""Your own data as a data set: a ``.npz``, a ``.npy`` array, or a folder of images; images, vectors (tables) or
sequences.

:func:`load_image_data` reads them into train / valid / test splits, with labels where there are some, and says in
one line what it found and how it read it (:attr:`ImageData.description`).

* ``.npz``: an array ``train``, optional ``valid`` and ``test``, optional ``train_labels`` (and so on), optional
  ``train_lengths`` (and so on) for sequences, and an optional ``layout``, a string: "images", "vectors" or
  "sequences";
* ``.npy``: one array, split here;
* a folder of PNG or JPEG files, or of sub-folders of them whose names are the labels (torchvision's
  ``ImageFolder`` layout; labels are the sorted sub-folder names' indices).

What the arrays hold (:func:`_layout`): what a ``layout`` entry says; else an array of rank 2, (N, D), holds vectors
(the rows of a table); one of rank 3, (N, T, D), with ``*_lengths`` beside it, sequences; anything else images, read
as below. Vectors and sequences are read as stored (floats, whole numbers or booleans, never rescaled), NaN and Inf
refused; the likelihood decides what values they may take. A sequence of length L (from 1 to T, given by
``train_lengths`` and so on, else T for all) holds its steps in rows 0 to L - 1; the rows after its end are set
to zero. Splits of sequences with different T are padded with zeros to the longest. Sequences carry their lengths
where other data carry labels, so they take no ``*_labels``.

Images are uint8 0..255 (divided by 255; uint8 arrays holding only 0 and 1 are binary images, read as 0 and 1)
or floats in [0, 1]; layouts (N, H, W), (N, H, W, C) and (N, C, H, W) are told apart by where a channel axis of
1, 3 or 4 sits. ``image_size`` resizes every image to that many pixels a side (area averaging when shrinking,
bilinear when growing).

A data set without valid / test parts is split once with a seeded permutation (VALID_FRACTION, TEST_FRACTION).
Every mistake is one sentence (:class:`~pyro_vae.errors.InvalidDataError`): an unreadable file, an array of the
wrong rank, mixed image sizes in a folder without ``image_size``, NaN or Inf, images outside [0, 1], labels of the
wrong length, lengths of the wrong count or outside 1..T, an empty split.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from pyro_vae.errors import InvalidDataError
from pyro_vae.markov import step_mask


SPLITS = ("train", "valid", "test")
VALID_FRACTION = 0.1
TEST_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CHANNELS = (1, 3, 4)
#: what the arrays of a file may hold (an npz's ``layout`` entry names one)
LAYOUTS = ("images", "vectors", "sequences")


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, C, H, W) float32 in [0, 1]; vectors (N, D), sequences (N, T, D) float32
    labels: Optional[torch.Tensor] = None  # (N,) int64; for sequences their lengths


@dataclass
class ImageData:
    train: ImageSplit
    valid: ImageSplit
    test: ImageSplit
    description: str  # one line: what was read, its layout, and how it was split
    #: the label names of a folder data set (sub-folder names), index = label
    classes: Optional[list] = None
    #: what the rows are: one of :data:`LAYOUTS`
    kind: str = "images"

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
    lengths, layout, classes = {}, None, None
    if path.is_dir():
        arrays, labels, classes, source, note = _read_folder(path, image_size)
    elif path.suffix == ".npz":
        arrays, labels, lengths, layout, source = _read_npz(path)
    elif path.suffix == ".npy":
        arrays, labels, source = {"train": _read_npy(path)}, {}, f"{path.name}"
    else:
        raise InvalidDataError(f"{path} is neither a .npz or .npy file nor a folder of images")
    layout, rule = _layout(arrays, labels, lengths, layout, source)
    if layout != "images":
        if image_size is not None:
            raise InvalidDataError(f"--image-size resizes images, and {source} holds {layout} ({rule}); drop it")
        return _array_data(arrays, labels, lengths, layout, rule, source, seed)
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
    splits, how = _complete(splits, source, seed)
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


def _complete(splits: dict, source: str, seed: int) -> tuple[dict, str]:
    """All three splits, the missing ones split off ``train`` (:func:`_split`), none empty; and how they were made."""
    how = "its own valid and test splits"
    if "valid" not in splits or "test" not in splits:
        splits, how = _split(splits, seed)
    for name in SPLITS:
        if len(splits[name].images) == 0:
            raise InvalidDataError(f"the {name} split of {source} is empty")
    return splits, how


def _layout(arrays: dict, labels: dict, lengths: dict, layout: Optional[str], source: str) -> tuple[str, str]:
    """What the arrays hold, one of :data:`LAYOUTS`, and the rule that decided it (for the description): the file's
    ``layout`` entry; else rank 2 is vectors, rank 3 with ``*_lengths`` sequences, anything else images."""
    rank = arrays["train"].ndim
    if layout is not None:
        rule = f"its layout entry says {layout}"
    elif rank == 2:
        layout, rule = "vectors", "arrays of rank 2"
    elif rank == 3 and lengths:
        layout, rule = "sequences", f"arrays of rank 3 with {', '.join(f'{name}_lengths' for name in lengths)}"
    else:
        layout, rule = "images", ""
    if lengths and layout != "sequences":
        raise InvalidDataError(f"{source} has {', '.join(f'{name}_lengths' for name in lengths)}, the lengths of "
                               f"sequences, but holds {layout}; drop them, or store sequences as (N, T, D)")
    if layout == "sequences" and labels:
        raise InvalidDataError(f"{source} has {', '.join(f'{name}_labels' for name in labels)}, and a sequence data "
                               f"set carries its lengths where labels go ({', '.join(f'{n}_lengths' for n in SPLITS)}); "
                               "drop the labels")
    expected = {"vectors": (2, "(N, D)"), "sequences": (3, "(N, T, D)")}.get(layout)
    for name, array in arrays.items():
        if expected is not None and array.ndim != expected[0]:
            raise InvalidDataError(f"{source} [{name}]: an array of {array.ndim} dimensions {array.shape}; {layout} "
                                   f"are {expected[1]}")
    return layout, rule


def _array_data(arrays: dict, labels: dict, lengths: dict, layout: str, rule: str, source: str,
                seed: int) -> ImageData:
    """Vectors (N, D) or sequences (N, T, D) as splits, the sequences' lengths where labels go."""
    values = {name: _as_values(array, f"{source} [{name}]") for name, array in arrays.items()}
    features = {array.shape[-1] for array in values.values()}
    if len(features) > 1:
        raise InvalidDataError(f"the splits of {source} have different numbers of features {sorted(features)}")
    splits = {}
    if layout == "vectors":
        for name, rows in values.items():
            splits[name] = ImageSplit(rows, _labels(labels.get(name), len(rows), f"{source} [{name}_labels]"))
    else:
        num_steps = max(array.shape[1] for array in values.values())
        for name, steps in values.items():
            steps = torch.nn.functional.pad(steps, (0, 0, 0, num_steps - steps.shape[1]))
            given = _lengths(lengths.get(name), steps.shape[0], arrays[name].shape[1], f"{source} [{name}_lengths]")
            splits[name] = ImageSplit(steps * step_mask(given, num_steps).unsqueeze(-1), given)
    splits, how = _complete(splits, source, seed)
    sizes = " / ".join(str(len(splits[name].images)) for name in SPLITS)
    shape = splits["train"].images.shape
    if layout == "vectors":
        labelled = "labelled" if splits["train"].labels is not None else "unlabelled"
        what = f"vectors of {shape[1]} features (read as vectors, (N, D): {rule}), {labelled}"
    else:
        every = torch.cat([splits[name].labels for name in SPLITS])
        what = (f"sequences of up to {shape[1]} steps of {shape[2]} features, lengths {every.min().item()} to "
                f"{every.max().item()} (read as sequences, (N, T, D): {rule})")
    return ImageData(splits["train"], splits["valid"], splits["test"], f"{source}: {sizes} train / valid / test "
                     f"{what}, {how}", kind=layout)


def _as_values(array: np.ndarray, where: str) -> torch.Tensor:
    """Vectors or sequences as float32, as stored: numbers or booleans, none NaN or Inf."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.issubdtype(array.dtype, np.complexfloating):
        raise InvalidDataError(f"{where}: values of type {array.dtype}; expected numbers")
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if not torch.isfinite(values).all():
        raise InvalidDataError(f"{where}: the values hold NaN or Inf; clean the data before training")
    return values


def _lengths(lengths: Optional[np.ndarray], count: int, num_steps: int, where: str) -> torch.Tensor:
    """The lengths of ``count`` sequences of ``num_steps`` steps, (N,) int64 from 1 to T; T for each when not given."""
    if lengths is None:
        return torch.full((count,), num_steps, dtype=torch.int64)
    if lengths.ndim != 1 or len(lengths) != count:
        raise InvalidDataError(f"{where}: {lengths.shape} lengths for {count} sequences; expected one whole number "
                               "each")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise InvalidDataError(f"{where}: lengths of type {lengths.dtype}; expected whole numbers")
    if count and (lengths.min() < 1 or lengths.max() > num_steps):
        raise InvalidDataError(f"{where}: lengths from {lengths.min()} to {lengths.max()}; each must be from 1 to "
                               f"the {num_steps} steps of its array")
    return torch.from_numpy(lengths.astype(np.int64))


def _read_npz(path: Path) -> tuple[dict, dict, dict, Optional[str], str]:
    _check_numpy_file(path, "npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            content = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InvalidDataError(f"cannot read {path}: {err}") from None
    if "train" not in content:
        raise InvalidDataError(f"{path} has no array named 'train' (it has {', '.join(sorted(content)) or 'none'})")
    known = {"layout", *SPLITS, *(f"{name}_{part}" for name in SPLITS for part in ("labels", "lengths"))}
    unknown = sorted(set(content) - known)
    if unknown:
        raise InvalidDataError(f"{path} has arrays this reader does not know: {', '.join(unknown)}; expected train, "
                               "valid, test, their *_labels or *_lengths, and layout")
    for name in SPLITS:
        for part in ("labels", "lengths"):
            if f"{name}_{part}" in content and name not in content:
                raise InvalidDataError(f"{path} has {name}_{part} but no {name} array")
    layout = None
    if "layout" in content:
        entry = content["layout"]
        layout = entry.reshape(-1)[0].item() if entry.size == 1 and entry.dtype.kind in "US" else None
        layout = layout.decode("ascii", "replace") if isinstance(layout, bytes) else layout
        if layout not in LAYOUTS:
            raise InvalidDataError(f"{path} has a layout entry {entry.tolist()!r}; it must be one of the strings "
                                   f"{', '.join(LAYOUTS)}")
    arrays = {name: content[name] for name in SPLITS if name in content}
    labels = {name: content[f"{name}_labels"] for name in SPLITS if f"{name}_labels" in content}
    lengths = {name: content[f"{name}_lengths"] for name in SPLITS if f"{name}_lengths" in content}
    return arrays, labels, lengths, layout, path.name


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
