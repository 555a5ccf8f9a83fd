"""dSprites (Matthey et al. 2017): 64 x 64 binary images of one sprite with six known generating factors.

Two sources:

* :func:`load_procedural` renders the images here, from the factor values, with no download. **These are a
  re-rendering, not DeepMind's file**: the shapes, their sizes and their placement follow the original only
  approximately (see "Layout" below), so disentanglement metrics or likelihoods measured on them are comparable
  to published dSprites figures only approximately. Use them for development, tests and relative comparisons.
* :func:`load_official` reads DeepMind's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` for users who have
  it (any subset of its rows, for instance a small file in the same format).

Both give a :class:`~pyro_vae.data.Dataset` whose splits hold flat float32 images (N, res * res) of 0 / 1 and,
in ``Split.factors``, the (N, 6) int64 indices of the factor values, in the order of :data:`FACTOR_NAMES`:

=============  ======  ===============================================================================
factor         values  value of index i
=============  ======  ===============================================================================
color          1       white
shape          3       square, ellipse, heart
scale          6       ``np.linspace(0.5, 1, 6)[i]``
orientation    40      ``np.linspace(0, 2 * pi, 40)[i]`` radians, as in the official file (so index 39 is
                       2 pi, the same as index 0, and index 10 is 92.3 degrees, not 90)
position_x     32      ``np.linspace(0, 1, 32)[i]``, left to right
position_y     32      ``np.linspace(0, 1, 32)[i]``, top to bottom (image rows)
=============  ======  ===============================================================================

The full grid has 737,280 combinations, numbered as the rows of the official file (position_y varies fastest):
:func:`factors_of_index` and :func:`index_of_factors` convert, :func:`all_factors` enumerates the grid in chunks.

Layout of the re-rendering (:func:`render`), in units of the image side ``res`` (64 by default):

* the sprite's centre is at ``res * (0.125 + 0.75 * position)`` along each axis, that is pixels 8 to 56 of 64
  (one position step is 48 / 31 = 1.55 pixels at 64, 0.77 at 32); pixel (row i, column j) is sampled at its
  centre (j + 0.5, i + 0.5), with no supersampling, and is 1 where that point lies inside the shape;
* sizes scale with ``s = scale * res / 8`` (8 pixels at scale 1 and resolution 64): the square has half-side
  ``s`` (a 16-pixel square at scale 1, 8 at scale 0.5), the ellipse semi-axes ``1.4 s`` (horizontal at
  orientation 0) and ``0.7 s``, the heart is the implicit curve ``(x^2 + y^2 - 1)^3 <= x^2 y^3`` scaled by
  ``0.95 s`` (about 2.2 s wide and 2.1 s tall, point down at orientation 0), its bounding box centred on the
  position;
* orientation rotates the shape counter-clockwise as the image is displayed (rows going down);
* at the extreme positions the largest rotated shapes reach past the border by up to about 3 pixels of 64 and
  are clipped there.

``resolution=32`` renders the same layout directly at 32 x 32 (four times fewer pixels; faster on a CPU).
"""
from __future__ import annotations

import functools
import math
import zipfile
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch

from pyro_vae.data.types import Dataset, Split
from pyro_vae.errors import InvalidDataError, PyroVAEError


FACTOR_NAMES = ("color", "shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
#: the value of each factor index, as in the official file's ``latents_values`` (color 1, shape 1 to 3 there)
FACTOR_VALUES = (
    np.array([1.0]),
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
NUM_COMBINATIONS = math.prod(FACTOR_SIZES)  # 737,280
#: multipliers from factor indices to the row of the grid (the official file's ``latents_bases``)
FACTOR_BASES = tuple(math.prod(FACTOR_SIZES[k + 1:]) for k in range(len(FACTOR_SIZES)))
OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_RESOLUTION = 64

# Layout (see the module docstring), as fractions of the image side.
_MARGIN, _SPAN = 0.125, 0.75  # centre = res * (_MARGIN + _SPAN * position)
_UNIT = 1.0 / 8.0  # s = scale * res * _UNIT
_ELLIPSE_AXES = (1.4, 0.7)
_HEART_SIZE = 0.95
_HEART_SHIFT = 0.118  # the curve's bounding box spans y in [-1, 1.236]: centre it
_REACH = 1.45  # no shape reaches further than this many s from its centre (the square's corner: sqrt 2)
_CHUNK = 16384

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_factors(factors: ArrayLike, what: str = "factors") -> torch.Tensor:
    """(N, 6) int64 tensor of valid factor indices, or a one-sentence InvalidDataError."""
    if isinstance(factors, np.ndarray):
        if factors.dtype.kind not in "iu":
            raise InvalidDataError(f"{what} must be integer factor indices, got dtype {factors.dtype}")
        factors = torch.from_numpy(factors.astype(np.int64))
    elif not isinstance(factors, torch.Tensor):
        factors = torch.as_tensor(np.asarray(factors))
    if factors.dtype.is_floating_point or factors.dtype == torch.bool or factors.dtype.is_complex:
        raise InvalidDataError(f"{what} must be integer factor indices, got dtype {factors.dtype}")
    factors = factors.to(torch.int64)
    if factors.dim() == 1 and factors.shape[0] == len(FACTOR_SIZES):
        factors = factors.unsqueeze(0)
    if factors.dim() != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise InvalidDataError(f"{what} has shape {tuple(factors.shape)}; expected (N, {len(FACTOR_SIZES)}) indices "
                               f"of {', '.join(FACTOR_NAMES)}")
    if len(factors):
        sizes = torch.tensor(FACTOR_SIZES, device=factors.device)
        bad = (factors < 0) | (factors >= sizes)
        if bad.any():
            k = int(bad.any(0).nonzero()[0])
            raise InvalidDataError(f"{what} holds {FACTOR_NAMES[k]} index {int(factors[bad.any(1), k][0])}, outside "
                                   f"0 to {FACTOR_SIZES[k] - 1}")
    return factors


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 8:
        raise PyroVAEError(f"resolution must be an integer of at least 8 pixels (64 as the original, 32 for speed), "
                           f"got {resolution!r}")
    return int(resolution)


# ----------------------------------------------------------------------------------------------------------------
# The grid of factor combinations


def factors_of_index(index: ArrayLike) -> torch.Tensor:
    """The (N, 6) int64 factor indices of grid rows ``index`` (0 to 737,279, numbered as the official file)."""
    index = torch.as_tensor(np.asarray(index) if not isinstance(index, torch.Tensor) else index)
    if index.dtype.is_floating_point or index.dtype == torch.bool:
        raise InvalidDataError(f"grid indices must be integers, got dtype {index.dtype}")
    index = index.to(torch.int64).reshape(-1)
    if len(index) and (index.min() < 0 or index.max() >= NUM_COMBINATIONS):
        raise InvalidDataError(f"grid indices must lie in 0 to {NUM_COMBINATIONS - 1}, got "
                               f"{int(index.min() if index.min() < 0 else index.max())}")
    columns = [(index // base) % size for base, size in zip(FACTOR_BASES, FACTOR_SIZES)]
    return torch.stack(columns, dim=1)


def index_of_factors(factors: ArrayLike) -> torch.Tensor:
    """The (N,) int64 grid rows of factor indices (N, 6): the inverse of :func:`factors_of_index`."""
    factors = _as_factors(factors)
    return factors @ torch.tensor(FACTOR_BASES, dtype=torch.int64, device=factors.device)


def all_factors(chunk_size: int = 65536) -> Iterator[torch.Tensor]:
    """The whole grid of 737,280 factor combinations in row order, lazily, as (chunk_size, 6) int64 chunks."""
    if chunk_size < 1:
        raise PyroVAEError(f"chunk_size must be positive, got {chunk_size}")
    for start in range(0, NUM_COMBINATIONS, chunk_size):
        yield factors_of_index(torch.arange(start, min(start + chunk_size, NUM_COMBINATIONS)))


def factor_values(factors: ArrayLike) -> torch.Tensor:
    """The (N, 6) float64 values of factor indices, as the official file's ``latents_values``."""
    factors = _as_factors(factors)
    columns = [torch.from_numpy(values)[factors[:, k].cpu()] for k, values in enumerate(FACTOR_VALUES)]
    return torch.stack(columns, dim=1)


def sample_factors(num: int, generator_or_rng=None) -> torch.Tensor:
    """``num`` factor combinations drawn uniformly (with replacement) as a (num, 6) int64 tensor, from a
    ``torch.Generator``, a ``numpy.random.Generator``, an integer seed, or torch's global generator (None)."""
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise PyroVAEError(f"the number of factor combinations must be a non-negative integer, got {num!r}")
    if isinstance(generator_or_rng, np.random.Generator):
        index = generator_or_rng.integers(0, NUM_COMBINATIONS, size=int(num), dtype=np.int64)
        return factors_of_index(torch.from_numpy(index))
    if isinstance(generator_or_rng, (int, np.integer)) and not isinstance(generator_or_rng, bool):
        generator_or_rng = torch.Generator().manual_seed(int(generator_or_rng))
    elif generator_or_rng is not None and not isinstance(generator_or_rng, torch.Generator):
        raise PyroVAEError(f"sample_factors takes a torch.Generator, a numpy.random.Generator, a seed or None, "
                           f"got {type(generator_or_rng).__name__}")
    index = torch.randint(0, NUM_COMBINATIONS, (int(num),), generator=generator_or_rng)
    return factors_of_index(index)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


def _window(scale: float, resolution: int) -> tuple:
    """How far (pixels) a shape of ``scale`` reaches from its centre, and the side of the square window of
    pixels drawn around it (never wider than the image)."""
    reach = _REACH * scale * resolution * _UNIT
    return reach, min(int(math.ceil(2 * reach)) + 2, resolution)


def _render_group(out: torch.Tensor, rows: torch.Tensor, f: torch.Tensor, shape: int, scale_index: int,
                  resolution: int) -> None:
    """Draw the images ``rows`` of ``out`` (flat (n, res * res), zeros), all of one shape and scale, factors ``f``."""
    scale = float(FACTOR_VALUES[2][scale_index])
    reach, window = _window(scale, resolution)
    s = scale * resolution * _UNIT
    positions = torch.from_numpy(FACTOR_VALUES[4]).float()
    cx = resolution * (_MARGIN + _SPAN * positions[f[:, 4]])
    cy = resolution * (_MARGIN + _SPAN * positions[f[:, 5]])
    # the window: pixels j0 .. j0 + window - 1 hold every pixel centre j + 0.5 within `reach` of the sprite's
    # centre; moved inside the image where the sprite reaches past its border (so it draws only the part inside)
    col0 = torch.floor(cx - reach - 0.5).long().clamp(0, resolution - window)
    row0 = torch.floor(cy - reach - 0.5).long().clamp(0, resolution - window)
    steps = torch.arange(window)
    dx = (col0[:, None] + steps).float() + 0.5 - cx[:, None]  # (m, W): right of the centre
    dy = cy[:, None] - ((row0[:, None] + steps).float() + 0.5)  # (m, W): above the centre
    angle = FACTOR_VALUES[3][f[:, 3].numpy()]
    cos = torch.from_numpy(np.cos(angle)).float()[:, None] / s
    sin = torch.from_numpy(np.sin(angle)).float()[:, None] / s
    # shape coordinates (u, v), in units of s: the pixel rotated by minus the orientation about the centre
    if shape == 0:  # square: |u|, |v| <= 1
        u = (cos * dx)[:, None, :] + (sin * dy)[:, :, None]
        v = (cos * dy)[:, :, None] - (sin * dx)[:, None, :]
        inside = (u.abs_() <= 1.0) & (v.abs_() <= 1.0)
    elif shape == 1:  # ellipse: (u / a)^2 + (v / b)^2 <= 1
        a, b = _ELLIPSE_AXES
        u = (cos * dx / a)[:, None, :] + (sin * dy / a)[:, :, None]
        v = (cos * dy / b)[:, :, None] - (sin * dx / b)[:, None, :]
        inside = u.square_().add_(v.square_()) <= 1.0
    else:  # heart: (x^2 + y^2 - 1)^3 <= x^2 y^3, x = u / size, y = v / size + shift
        k = _HEART_SIZE
        x = (cos * dx / k)[:, None, :] + (sin * dy / k)[:, :, None]
        y = (cos * dy / k + _HEART_SHIFT)[:, :, None] - (sin * dx / k)[:, None, :]
        x2 = x.square_()
        y3 = y.square() * y
        r = (x2 + y.square_()).sub_(1.0)
        inside = r.square() * r <= x2.mul_(y3)
    # paste: the window's pixels are distinct pixels of the image
    base = (rows * resolution * resolution)[:, None] + (row0[:, None] + steps) * resolution  # (m, W)
    flat = base[:, :, None] + (col0[:, None] + steps)[:, None, :]
    out.view(-1).index_put_((flat.reshape(-1),), inside.reshape(-1).float())


def render(factors: ArrayLike, resolution: int = 64) -> torch.Tensor:
    """The images of factor indices (N, 6) (ints, order :data:`FACTOR_NAMES`) as a (N, resolution ** 2) float32
    tensor of 0 / 1 on the CPU, deterministic from the factors. ``resolution`` is the image side: 64 as the
    original; 32 renders the same layout directly at 32 x 32, four times fewer pixels and faster on a CPU.
    Shapes are rasterised at pixel centres, without supersampling (layout: see the module docstring)."""
    resolution = _check_resolution(resolution)
    factors = _as_factors(factors).cpu()
    out = torch.zeros(len(factors), resolution * resolution)
    # The work is a few dozen small memory-bound operations per shape and scale, done on one thread: on a busy
    # 2-core machine, synchronising torch's intra-op threads cost ten times the work itself (60,000 images at
    # 64 x 64: 10.6 s on torch's 2 threads, 0.96 s on one, load 5). The setting is process-wide, so torch work
    # on another Python thread meanwhile runs on one thread too; it is restored on the way out.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for start in range(0, len(factors), _CHUNK):
            part = factors[start:start + _CHUNK]
            chunk = out[start:start + _CHUNK]  # a view: drawing into it draws into out
            group = part[:, 1] * FACTOR_SIZES[2] + part[:, 2]
            for key in group.unique().tolist():
                rows = (group == key).nonzero().squeeze(1)
                _render_group(chunk, rows, part[rows], key // FACTOR_SIZES[2], key % FACTOR_SIZES[2], resolution)
    finally:
        torch.set_num_threads(threads)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Data sets


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PyroVAEError(f"{name} must be a positive number of images, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=1)  # 60,000 images of 64 x 64: about 1 GB kept
def _rendered(counts: tuple, seed: int, resolution: int) -> tuple:
    """(images, factors) of each split, drawn and rendered once per process for the same arguments (a sweep
    or a test suite loads the same data many times); callers never modify these tensors in place."""
    order = torch.randperm(NUM_COMBINATIONS, generator=torch.Generator().manual_seed(seed))[:sum(counts)]
    return tuple((render(factors_of_index(part), resolution), factors_of_index(part)) for part in order.split(counts))


def load_procedural(num_train: int = 50_000, num_valid: int = 5_000, num_test: int = 5_000, seed: int = 0,
                    resolution: int = 64) -> Dataset:
    """A re-rendering of dSprites (not DeepMind's file: see the module docstring), made here with no download.

    The three splits are disjoint random subsets of the 737,280 factor combinations, drawn without replacement
    with ``seed`` (the same seed gives the same images), rendered by :func:`render` at ``resolution`` (64 as the
    original; 32 renders 32 x 32 images directly, faster on a CPU). Only the drawn images are rendered.
    """
    counts = [_check_count(name, value) for name, value in
              (("num_train", num_train), ("num_valid", num_valid), ("num_test", num_test))]
    resolution = _check_resolution(resolution)
    if sum(counts) > NUM_COMBINATIONS:
        raise PyroVAEError(f"num_train + num_valid + num_test is {sum(counts):,}, more than the {NUM_COMBINATIONS:,} "
                           "dSprites combinations")
    splits = [Split(images, None, factors) for images, factors in _rendered(tuple(counts), int(seed), resolution)]
    description = (f"dSprites re-rendered procedurally at {resolution}x{resolution} (not DeepMind's file), "
                   f"{counts[0]:,} / {counts[1]:,} / {counts[2]:,} images drawn with seed {seed}")
    return Dataset(f"dsprites-procedural-{resolution}" if resolution != 64 else "dsprites-procedural", *splits,
                   image_shape=(1, resolution, resolution), description=description,
                   factor_names=FACTOR_NAMES, factor_sizes=FACTOR_SIZES)


def _official_path(data_dir) -> Path:
    if data_dir is None:
        raise InvalidDataError(f"the official dSprites data needs a folder holding {OFFICIAL_FILE}")
    path = Path(data_dir)
    if path.is_dir():
        path = path / OFFICIAL_FILE
    if not path.is_file():
        raise InvalidDataError(f"the official dSprites file {OFFICIAL_FILE} was not found at {str(path)!r}; "
                               "download it from https://github.com/deepmind/dsprites-dataset or use the procedural "
                               "re-rendering")
    return path


def load_official(data_dir, seed: int = 0, num_train: Optional[int] = None, num_valid: Optional[int] = None,
                  num_test: Optional[int] = None) -> Dataset:
    """DeepMind's dSprites file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` read from ``data_dir`` (a folder
    holding it, or the file itself), split at random with ``seed`` into disjoint train / valid / test parts.

    Whatever rows the file holds are used (a file smaller than the full grid is fine); factors come from its
    ``latents_classes`` (its pickled ``metadata`` is not read). ``num_valid`` and ``num_test`` default to
    5,000 each, or a tenth of the rows each if that is fewer; ``num_train`` defaults to all remaining rows:
    for the full file that is 727,280 images, about 12 GB as float32, so pass e.g. ``num_train=50_000`` to
    keep less (only the kept rows are converted).
    """
    path = _official_path(data_dir)
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InvalidDataError(f"{str(path)!r} could not be read as a dSprites .npz file "
                               f"({' '.join(str(err).split())})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise InvalidDataError(f"{str(path)!r} is a single array, not a dSprites .npz file with imgs and "
                               "latents_classes")
    with arrays:
        missing = [key for key in ("imgs", "latents_classes") if key not in arrays.files]
        if missing:
            raise InvalidDataError(f"{str(path)!r} lacks the key{'s' if len(missing) > 1 else ''} "
                                   f"{' and '.join(missing)} of the dSprites file (it holds "
                                   f"{', '.join(arrays.files) or 'no arrays'})")
        try:
            imgs = arrays["imgs"]
            classes = arrays["latents_classes"]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise InvalidDataError(f"{str(path)!r} holds an array that could not be read "
                                   f"({' '.join(str(err).split())})") from None
    side = OFFICIAL_RESOLUTION
    if imgs.ndim != 3 or imgs.shape[1:] != (side, side):
        raise InvalidDataError(f"imgs in {str(path)!r} has shape {imgs.shape}; expected (N, {side}, {side})")
    if classes.shape != (len(imgs), len(FACTOR_SIZES)):
        raise InvalidDataError(f"latents_classes in {str(path)!r} has shape {classes.shape}; expected "
                               f"({len(imgs)}, {len(FACTOR_SIZES)}), one row of factor indices per image")
    if imgs.dtype.kind not in "uifb":
        raise InvalidDataError(f"imgs in {str(path)!r} has dtype {imgs.dtype}; expected uint8 pixels")
    factors = _as_factors(classes, f"latents_classes in {str(path)!r}")
    n = len(imgs)
    default = max(1, min(5_000, n // 10))
    n_valid = default if num_valid is None else _check_count("num_valid", num_valid)
    n_test = default if num_test is None else _check_count("num_test", num_test)
    n_train = n - n_valid - n_test if num_train is None else _check_count("num_train", num_train)
    if n_train < 1 or n_train + n_valid + n_test > n:
        raise InvalidDataError(f"{str(path)!r} holds {n:,} images, too few for {max(n_train, 1):,} training, "
                               f"{n_valid:,} validation and {n_test:,} test images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    parts = order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:n_train + n_valid + n_test]
    splits = []
    for part in parts:
        rows = np.sort(part.numpy())
        pixels = np.asarray(imgs[rows], dtype=np.float32).reshape(len(rows), side * side)
        splits.append(Split(torch.from_numpy(pixels), None, factors[torch.from_numpy(rows)]))
    peak = max(float(s.images.max()) for s in splits)
    low = min(float(s.images.min()) for s in splits)
    if not np.isfinite(peak) or not np.isfinite(low) or low < 0 or peak > 255:
        raise InvalidDataError(f"imgs in {str(path)!r} holds values outside 0 to 255")
    if peak > 1:  # 8-bit 0 / 255 pixels rather than the official 0 / 1
        for split in splits:
            split.images /= 255.0
    description = (f"dSprites from {str(path)!r} ({n:,} images): {n_train:,} / {n_valid:,} / {n_test:,} "
                   f"drawn with seed {seed}")
    return Dataset("dsprites", *splits, image_shape=(1, side, side), description=description,
                   factor_names=FACTOR_NAMES, factor_sizes=FACTOR_SIZES)
