"""Pictures of a training run: curves, samples, reconstructions, and the 2-D latent space."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import torch

from pyro_vae.files import atomic_write
from pyro_vae.inference.sites import latent_sites

#: the shape images are drawn in when a caller does not say: MNIST's
MNIST_SHAPE = (1, 28, 28)


def picture_shape(model) -> tuple:
    """The (C, H, W) to draw a structure's images in: its ``image_shape``; a sequence (T, D) as one grey picture of T
    rows (steps) of D columns, a vector (D,) as one row; MNIST's for flat inputs of 784 or none."""
    shape = tuple(getattr(model, "image_shape", ()))
    if len(shape) == 3:
        return shape
    if not shape or shape == (28 * 28,):
        return MNIST_SHAPE
    return (1,) * (3 - len(shape)) + shape


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` atomically (a crash or a full disk leaves the old picture, and no temporary file) and close it;
    the format follows the file's suffix (png by default)."""
    path = Path(path)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format=path.suffix[1:].lower() or "png"))
    finally:
        plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: Path) -> Path:
    """Training loss (minus the bound trained, on the training batches), validation -ELBO and, for IWAE training,
    minus the validation IWAE bound, nats per image, by epoch; beside them, for semi-supervised runs, the
    classification accuracy on the labelled validation images, and for structures that cluster, the clustering
    accuracy and the smallest cluster's share on the images their clusters are matched on."""
    epochs = [row["epoch"] for row in history]
    objective = history[-1].get("objective", "elbo") if history else "elbo"
    trained = "-ELBO" if objective == "elbo" else f"-IWAE bound (K={objective.partition('-')[2]})"
    accuracies = [(row["epoch"], 100 * row["valid_accuracy"]) for row in history if "valid_accuracy" in row]
    clusters = [(row["epoch"], 100 * row["valid_clustering_accuracy"], 100 * row["valid_smallest_cluster"])
                for row in history if "valid_clustering_accuracy" in row]
    if accuracies or clusters:
        fig, (ax, acc) = plt.subplots(1, 2, figsize=(11, 4))
        if accuracies:
            acc.plot(*zip(*accuracies), "o-", color="tab:green")
            acc.set_ylabel("% of the labelled validation images")
            acc.set_title("Validation classification accuracy")
        else:
            epochs_, accuracy, smallest = zip(*clusters)
            acc.plot(epochs_, accuracy, "o-", color="tab:green", label="clustering accuracy")
            acc.plot(epochs_, smallest, "s--", color="tab:gray", label="smallest cluster's share")
            acc.set_ylabel("% of the labelled images the clusters are matched on")
            acc.set_title("Clusters against labels")
            acc.legend()
        acc.set_xlabel("epoch")
        acc.grid(alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label=f"train  {trained} (running, during epoch)")
    ax.plot(epochs, [-row["valid_elbo"] for row in history], "s-", label="valid  -ELBO (end of epoch)")
    bounds = [(row["epoch"], -row["valid_bound"]) for row in history if "valid_bound" in row]
    if bounds:
        ax.plot(*zip(*bounds), "^-", label=f"valid  {trained} (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0,
               image_shape: Sequence[int] = MNIST_SHAPE) -> torch.Tensor:
    """(N, C * H * W) pixel intensities of images of ``image_shape`` (C, H, W) -> one (H', W') image for one
    channel, (H', W', C) for colour, ``nrow`` tiles per row on a ``pad_value`` background: the layout of
    ``torchvision.utils.make_grid`` (tested against it), without importing torchvision, which costs every
    command about a second."""
    channels, height, width = image_shape
    tiles = images.detach().cpu().reshape(-1, channels, height, width)
    count = tiles.shape[0]
    if count == 1:  # as make_grid: a single image without a frame
        grid = tiles[0]
    else:
        columns = min(nrow, count)
        rows = -(-count // columns)
        grid = torch.full((channels, rows * (height + padding) + padding, columns * (width + padding) + padding),
                          pad_value, dtype=tiles.dtype)
        for k, tile in enumerate(tiles):
            top, left = (k // columns) * (height + padding) + padding, (k % columns) * (width + padding) + padding
            grid[:, top:top + height, left:left + width] = tile
    return grid[0] if channels == 1 else grid.permute(1, 2, 0)


def plot_images(images: torch.Tensor, path: Path, *, nrow: int = 8, title: Optional[str] = None,
                image_shape: Sequence[int] = MNIST_SHAPE) -> Path:
    """Images (N, C * H * W) in [0, 1] as a grid: one channel in inverted grey (dark ink on white, as digits
    are usually shown), three as colour."""
    grid = image_grid(images, nrow, image_shape=tuple(image_shape))
    fig, ax = plt.subplots(figsize=(max(grid.shape[1] / 40, 2.0), grid.shape[0] / 40 + (0.4 if title else 0)))
    if grid.dim() == 2:
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    else:
        ax.imshow(grid.clamp(0, 1).numpy())
    ax.axis("off")
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, *,
                         per_row: int = 10, image_shape: Sequence[int] = MNIST_SHAPE) -> Path:
    """Rows alternate: originals, then their reconstructions (mean of p(x | z), z ~ q(z | x))."""
    rows = []
    for start in range(0, originals.shape[0], per_row):
        rows += [originals[start:start + per_row], reconstructions[start:start + per_row]]
    return plot_images(torch.cat(rows), path, nrow=per_row, title="originals (odd rows) and reconstructions",
                       image_shape=image_shape)


def plot_latent_manifold(model, path: Path, *, steps: int = 20) -> Path:
    """Decode a grid of 2-D codes placed at prior quantiles from 5% to 95%."""
    quantiles = torch.linspace(0.05, 0.95, steps)
    values = torch.distributions.Normal(0.0, 1.0).icdf(quantiles)
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
    codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], -1).to(model.device)
    return plot_images(model.decode(codes), path, nrow=steps, title="decoded latent manifold (prior quantiles 5%-95%)",
                       image_shape=picture_shape(model))


def plot_latent_scatter(codes: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    """The guide's latent means of test images, coloured by digit."""
    codes, labels = codes.detach().cpu(), labels.detach().cpu()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("latent means of test images")
    return save_figure(fig, path)


def plot_digits_by_label(model, path: Path, *, per_label: int = 10, num_classes: int = 10) -> Path:
    """A conditional model's samples: row d holds ``per_label`` draws of digit d."""
    labels = torch.arange(num_classes, device=model.device).repeat_interleave(per_label)
    return plot_images(model.generate(len(labels), labels), path, nrow=per_label,
                       title="samples of each digit: row d is generate(y = d)", image_shape=picture_shape(model))


def plot_style_transfer(model, path: Path, *, styles: int = 8, num_classes: int = 10) -> Path:
    """The same codes z (one per row) decoded under every label (columns 0-9): style kept, digit changed."""
    codes = torch.randn(styles, model.z_dim, device=model.device).repeat_interleave(num_classes, 0)
    labels = torch.arange(num_classes, device=model.device).repeat(styles)
    return plot_images(model.decode(codes, labels), path, nrow=num_classes,
                       title="one z per row, decoded with y = 0 ... 9", image_shape=picture_shape(model))


def plot_latent_traversals(model, code: torch.Tensor, path: Path, *, max_dims: int = 10, span: float = 3.0,
                           steps: int = 11, title: str = "latent traversals") -> Path:
    """Row i varies latent i from -span to +span (prior standard deviations) with the others held at ``code``."""
    dims = min(max_dims, code.shape[-1])
    values = torch.linspace(-span, span, steps, device=code.device)
    codes = code.reshape(1, 1, -1).repeat(dims, steps, 1)
    for i in range(dims):
        codes[i, :, i] = values
    return plot_images(model.decode(codes.reshape(dims * steps, -1)), path, nrow=steps, title=title,
                       image_shape=picture_shape(model))


def write_run_pictures(model, dataset, history: Sequence[dict], run_dir: Path, *, seed: int = 0,
                       per_label: int = 10) -> list[Path]:
    """Every picture of a run into ``run_dir``: conditional models get digit grids, 2-D codes latent maps."""
    run_dir = Path(run_dir)
    torch.manual_seed(seed)
    test = dataset.test
    picked = torch.linspace(0, len(test) - 1, min(30, len(test))).long().to(test.images.device)
    originals = test.images[picked]
    conditioning = (test.labels[picked],) if model.needs_labels else ()
    paths = [plot_curves(history, run_dir / "curves.png")]
    shape = picture_shape(model)
    if model.conditional:
        paths += [plot_digits_by_label(model, run_dir / "samples.png"),
                  plot_style_transfer(model, run_dir / "style_transfer.png")]
    elif (per_value := model.generate_per_value(per_label)) is not None:
        site, images = per_value
        paths.append(plot_images(images, run_dir / "samples.png", nrow=per_label, image_shape=shape,
                                 title=f"samples: row k draws the rest of the prior given {site} = k"))
    else:
        paths.append(plot_images(model.generate(64), run_dir / "samples.png", image_shape=shape,
                                 title="samples: z ~ p(z), mean of p(x | z)"))
    paths.append(plot_reconstructions(originals, model.reconstruct(originals, *conditioning),
                                      run_dir / "reconstructions.png", image_shape=shape))
    one = (originals[:1], *(c[:1] for c in conditioning))
    code_is_continuous = model.code_site in latent_sites(model.model, model.guide, one).reparameterized
    if code_is_continuous and model.encode(*one).shape[-1] == 2 and not model.needs_labels:
        paths.append(plot_latent_manifold(model, run_dir / "latent_manifold.png"))
        if test.labels is not None and dataset.kind != "sequences":  # their labels are lengths
            paths.append(plot_latent_scatter(model.encode(test.images), test.labels, run_dir / "latent_space.png"))
    return paths


def plot_rate_distortion(rows: Sequence[dict], path: Path, weight: str = "beta",
                         title: str = "beta-VAE: rate against distortion (test split)") -> Path:
    """Rate (KL, nats) against distortion (-E log p(x | z), nats), one point per value of the swept ``weight``."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    distortion = [row["distortion"] for row in rows]
    rate = [row["rate"] for row in rows]
    ax.plot(distortion, rate, "o-")
    for row in rows:
        ax.annotate(f"{weight}={row[weight]:g}", (row["distortion"], row["rate"]), textcoords="offset points",
                    xytext=(5, 5))
    ax.set_xlabel("distortion  -E_q[log p(x | z)]  (nats)")
    ax.set_ylabel("rate  KL(q(z | x) || p(z))  (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
