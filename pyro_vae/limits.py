"""Sizes checked at the door: the memory a command will need, estimated from its sizes before anything is
allocated, against the memory this machine has available.

A command whose estimate does not fit is refused with one sentence naming the estimate, the memory available
and the sizes that drive it, instead of reaching the allocator (a traceback) or the kernel's out-of-memory killer
(no word at all). The estimates are deliberately rough (within a small factor) and on the low side, so that
they refuse only what cannot fit: a command they let through may still need more than they say.

* training: the parameters (counted exactly by building the structure on PyTorch's ``meta`` device, which
  allocates nothing) four times over (the values, their gradients and Adam's two moments), the data set, and
  the activations of one step: particles x batch x (the pixels and every layer's width, forward and backward)
  x the values of any enumerated discrete latent;
* sampling: the decoded images, their grid and the picture's pixels;
* the reparameterization toy: its tables of repeated gradient estimates.

Importance sampling (``evaluate -K``) runs in chunks of bounded size whatever K is, so it needs no estimate of
memory; it says how long it will take instead (:class:`SampleProgress`).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from pyro_vae.catalog import ENUM_MODELS, is_dataset_path
from pyro_vae.errors import PyroVAEError
from pyro_vae.models import build_model

FLOAT_BYTES = 4
#: the part of the available memory a command may plan to use (the rest for Python, libraries and the system)
USABLE_FRACTION = 0.8
#: an evaluation expected to take longer than this says how long first
ANNOUNCE_SECONDS = 60.0


def available_memory(device: str = "cpu") -> int:
    """Bytes this process can still allocate on ``device``: on a GPU what CUDA reports free; on the CPU the
    kernel's MemAvailable, or the container's (cgroup) limit less its usage where that is smaller."""
    if str(device).startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    available = _meminfo_available()
    limit = _cgroup_room()
    candidates = [value for value in (available, limit, _address_space_room()) if value is not None]
    return min(candidates) if candidates else 1 << 62  # unknown: never refuse


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _address_space_room() -> Optional[int]:
    """What ``ulimit -v`` (RLIMIT_AS) leaves this process, less what it has mapped already; None without a limit."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        return max(soft - mapped, 0)
    except (ImportError, OSError, ValueError, IndexError):
        return None


def _cgroup_room() -> Optional[int]:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:
                return None
            return max(int(limit) - int(Path(usage_file).read_text().strip()), 0)
        except (OSError, ValueError):
            continue
    return None


def size_text(count: float) -> str:
    """Bytes in words: "3.2 GB", "512 MB", "1.5e+06 TB" for the absurd."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale or unit == "MB":
            value = count / scale
            return f"{value:.3g} {unit}" if value < 1e6 else f"{value:.2g} {unit}"
    raise AssertionError


def check_fits(need: float, what: str, advice: str, device: str = "cpu",
               available: Optional[Callable[[str], int]] = None) -> None:
    """Refuse with one sentence when ``need`` bytes exceed the usable part of the memory available on ``device``."""
    room = (available or available_memory)(device)
    if need > USABLE_FRACTION * room:
        where = "on the GPU" if str(device).startswith("cuda") else "on this machine"
        raise PyroVAEError(f"{what} would need about {size_text(need)} of memory, and {size_text(room)} is available "
                           f"{where}, of which a command takes at most {USABLE_FRACTION:.0%}; {advice}")


# -- training ---------------------------------------------------------------------------------------------

#: the factory functions whose small results :class:`SmallTensorsOnCPU` makes on the CPU
_FACTORIES = {torch.tensor, torch.as_tensor, torch.arange, torch.linspace, torch.zeros, torch.ones, torch.empty,
              torch.full, torch.eye, torch.randperm}


class SmallTensorsOnCPU(TorchFunctionMode):
    """Inside ``torch.device("meta")``: a factory call of at most ``limit`` elements without a device makes a CPU
    tensor, larger ones stay on the meta device. Libraries keep index bookkeeping in small tensors that they read
    back with ``.item()`` in their constructors (Pyro's DenseNN and MADE), which meta tensors cannot do; the
    weights, the only large tensors, still allocate nothing."""

    def __init__(self, limit: int = 4096):
        super().__init__()
        self.limit = limit

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES and kwargs.get("device") is None:
            if kwargs.get("out") is not None:  # nn.init.eye_ fills a tensor made before: on its device
                kwargs = {**kwargs, "device": kwargs["out"].device}
            else:
                with torch.device("meta"):
                    probe = func(*args, **kwargs)
                if probe.numel() <= self.limit:
                    kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def parameter_count(config, image_shape: Sequence[int], structure_source: Optional[dict] = None) -> Optional[int]:
    """The number of parameters of the structure ``config`` builds for images of ``image_shape``, counted on the
    meta device (nothing allocated); None where the structure cannot be built there (a structure file that
    computes with its tensors in its constructor): the caller then skips that part of the estimate."""
    try:
        # small tensors on the CPU are initialised from the global random state: fork it, so that counting leaves
        # the draws of the real construction as they were
        with torch.random.fork_rng(devices=[]), torch.device("meta"), SmallTensorsOnCPU():
            model = build_model(config.model, structure_source=structure_source,
                                **config.model_kwargs(image_shape))
    except PyroVAEError:
        raise
    except Exception:  # noqa: BLE001 - the real construction later says what is wrong
        return None
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def enumerated_values(config) -> int:
    """How many values the structure's discrete latent takes in each step (1 for none): the model and guide run
    once per value under enumeration."""
    if config.model not in ENUM_MODELS:
        return 1
    options = config.model_options
    return int(options.get("num_components", options.get("num_classes", 10)))


def training_memory(config, image_shape: Sequence[int], num_images: int,
                    structure_source: Optional[dict] = None, train_images: Optional[int] = None) -> tuple[float, str]:
    """Bytes a training run needs at least, and the sizes that drive it, in words (a batch is at most
    ``train_images``)."""
    x_dim = math.prod(image_shape)
    batch = min(config.batch_size, train_images or config.batch_size)
    params = parameter_count(config, image_shape, structure_source) or 0
    widths = sum(config.hidden_dims) if config.net == "mlp" else 64 * x_dim // 4  # conv: the first layers' maps
    per_image = 4 * x_dim + 4 * widths + 8 * config.z_dim  # forward and backward, pixels twice (decoder out, grad)
    particles = config.num_particles * enumerated_values(config)
    activations = particles * batch * per_image * FLOAT_BYTES
    data = num_images * x_dim * FLOAT_BYTES
    need = 4 * params * FLOAT_BYTES + activations + data
    samples = f"{config.num_particles:,} particles" if config.num_particles > 1 else "one particle"
    if particles > config.num_particles:
        samples += f" x {particles // config.num_particles:,} enumerated values"
    parts = sorted([(4 * params * FLOAT_BYTES, f"{params:,} parameters with their gradients and Adam's moments"),
                    (activations, f"the activations of one step: {batch:,} images x {samples} x {per_image:,} "
                                  "floats"),
                    (data, f"{num_images:,} images of {x_dim:,} pixels")], reverse=True)
    return need, parts[0][1]


def check_training_fits(config, image_shape: Sequence[int], num_images: int,
                        structure_source: Optional[dict] = None, train_images: Optional[int] = None) -> None:
    need, largest = training_memory(config, image_shape, num_images, structure_source, train_images)
    check_fits(need, "this run", f"the largest part is {largest}; choose smaller sizes (--hidden-dims, --z-dim, "
                                 "--num-particles, --batch-size, --image-size, --model-option)", config.device)


def images_before_loading(dataset: str, subset: Optional[int] = None) -> int:
    """How many images ``--dataset`` holds, read without loading them where that is cheap (the shipped and
    procedural sets, a folder's file count, a .npz or .npy header); 1 where it is not known."""
    if not is_dataset_path(dataset):
        count = 60_000 if dataset.startswith("dsprites") else 70_000
        return min(count, 3 * subset) if subset else count
    path = Path(dataset)
    try:
        if path.is_dir():
            count = sum(1 for p in path.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        elif path.suffix == ".npy":
            count = int(np.load(path, mmap_mode="r").shape[0])
        elif path.suffix == ".npz":
            with np.load(path) as archive:
                count = sum(int(_npz_shape(archive, name)[0]) for name in archive.files if not name.endswith("labels"))
        else:
            count = 1
    except Exception:  # noqa: BLE001 - loading says what is wrong with the file
        return 1
    return max(1, min(count, 3 * subset) if subset else count)


def _npz_shape(archive, name: str) -> tuple:
    """The shape of one array of an open .npz, from its header alone."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        shape, _, _ = np.lib.format._read_array_header(member, version)
    return shape


def check_resized_images_fit(image_size: int, num_images: int, device: str = "cpu") -> None:
    """``--image-size N``: the resized data set, before any image is resized (colour: three channels)."""
    need = 3 * num_images * 3 * image_size ** 2 * FLOAT_BYTES  # the images, their resized copies, one temporary
    check_fits(need, f"--image-size {image_size} ({num_images:,} images of {image_size:,} x {image_size:,} pixels)",
               "choose a smaller --image-size", device)


#: how plot_images draws a grid: 40 grid pixels an inch, saved at 120 dots an inch
GRID_PIXELS_PER_INCH, PICTURE_DPI = 40, 120
#: the longest side of a picture ``sample`` writes (PNG viewers and browsers stop near 2**16)
MAX_PICTURE_SIDE = 2 ** 16

# -- sampling and the toy ---------------------------------------------------------------------------------


def check_samples_fit(num: int, x_dim: int, hidden: int, nrow: int, device: str = "cpu") -> None:
    """``sample --num``: the decoded images and activations, their grid, and the picture (a few RGBA bytes per
    grid pixel, at 40 grid pixels per inch and the figure's dpi)."""
    side = math.isqrt(x_dim) + 2
    rows = math.ceil(num / max(nrow, 1))
    scale = PICTURE_DPI / GRID_PIXELS_PER_INCH  # picture pixels per grid pixel
    height, width = math.ceil(rows * side * scale), math.ceil(nrow * side * scale)
    picture = height * width * 4  # RGBA
    need = num * (3 * x_dim + 2 * hidden) * FLOAT_BYTES + picture
    check_fits(need, f"{num:,} samples in a picture of {rows:,} rows of {nrow:,}",
               "draw fewer (--num)", device)
    if max(height, width) > MAX_PICTURE_SIDE:
        raise PyroVAEError(f"{num:,} samples in rows of {nrow:,} make a picture of {width:,} x {height:,} pixels, more "
                           f"than the {MAX_PICTURE_SIDE:,} a side that picture viewers open; draw fewer (--num) or "
                           "change --nrow")


def check_toy_fits(repeats: int, sample_sizes: Sequence[int], estimators: int, chunk_elements: int) -> None:
    """``reparam-toy``: a table of ``repeats`` gradient estimates per estimator and sample size (float64), and
    the chunk of draws each is computed in: bounded by ``chunk_elements``, but never less than one estimate's N
    draws (a sample size beyond the bound is one chunk of its own)."""
    largest = max(sample_sizes)
    chunk = max(largest, min(chunk_elements, repeats * largest))
    need = 8 * repeats * (len(sample_sizes) * estimators + 2) + 8 * 4 * chunk
    check_fits(need, f"--repeats {repeats:,} over {len(sample_sizes)} sample size(s) up to {largest:,}",
               "use fewer --repeats or smaller --sample-sizes")


# -- time -------------------------------------------------------------------------------------------------

def duration_text(seconds: float) -> str:
    """Seconds in words: "about 40 s", "about 12 minutes", "about 3.5 hours", "about 2e+04 days"."""
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} minutes"
    if seconds < 48 * 3600:
        return f"about {seconds / 3600:.1f} hours"
    days = seconds / 86400
    return f"about {days:.0f} days" if days < 1e5 else f"about {days:.1g} days"


class SampleProgress:
    """Counts the units of a long piece of work as they are done (the importance samples of an evaluation, the
    SVI steps of an estimator comparison, the images a disentanglement score encodes), drives a progress bar, and
    once a few seconds after its first unit show the pace, says how long the whole will take if that is more than a
    minute. The pace is measured from the end of the first unit, not from the start: what comes before and in the
    first unit is paid once (an evaluation's ELBO pass over the split and the JIT compilation of its first chunk
    made an IAF guide's K = 5000 evaluation announce 13.9 hours for a run of 12 minutes)."""

    def __init__(self, total: int, bar=None, say: Callable[[str], None] = print, what: str = "importance sampling",
                 clock: Callable[[], float] = time.perf_counter, warmup: float = 2.0, unit: str = "samples"):
        self.total, self.bar, self.say, self.what, self.clock, self.warmup = total, bar, say, what, clock, warmup
        self.unit = unit
        self.done, self.start, self.announced = 0, clock(), False
        self.first: Optional[tuple[float, int]] = None  # (time, units done) when the first unit was done

    def __call__(self, samples: int) -> None:
        self.done += samples
        if self.bar is not None:
            self.bar.update(samples)
        now = self.clock()
        if self.first is None:
            self.first = (now, self.done)
            return
        paced = now - self.first[0]
        if self.announced or paced < self.warmup or self.done >= self.total or self.done == self.first[1]:
            return
        self.announced = True
        elapsed = now - self.start
        remaining = paced * (self.total - self.done) / (self.done - self.first[1])
        if elapsed + remaining > ANNOUNCE_SECONDS:
            self.say(f"{self.what}: {self.total:,} {self.unit}, {duration_text(elapsed + remaining)} on this machine "
                     f"({duration_text(remaining)} to go); Ctrl-C stops it")
