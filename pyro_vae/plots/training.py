"""Pictures of a training run: curves, samples, reconstructions, and the 2-D latent space."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

from pyro_vae.data import IMAGE_SHAPE


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: Sequence[dict], path: Path) -> Path:
    """Training loss (-ELBO on the training batches) and validation -ELBO, nats per image, by epoch."""
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train  -ELBO (running, during epoch)")
    ax.plot(epochs, [-row["valid_elbo"] for row in history], "s-", label="valid  -ELBO (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def image_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """(N, 784) pixel intensities -> one (H, W) image laid out by ``torchvision.utils.make_grid``."""
    tiles = images.detach().cpu().reshape(-1, 1, *IMAGE_SHAPE)
    return make_grid(tiles, nrow=nrow, padding=2, pad_value=1.0)[0]


def plot_images(images: torch.Tensor, path: Path, *, nrow: int = 8, title: Optional[str] = None) -> Path:
    grid = image_grid(images, nrow)
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 40, grid.shape[0] / 40 + (0.4 if title else 0)))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path, *,
                         per_row: int = 10) -> Path:
    """Rows alternate: originals, then their reconstructions (mean of p(x | z), z ~ q(z | x))."""
    rows = []
    for start in range(0, originals.shape[0], per_row):
        rows += [originals[start:start + per_row], reconstructions[start:start + per_row]]
    return plot_images(torch.cat(rows), path, nrow=per_row, title="originals (odd rows) and reconstructions")


def plot_latent_manifold(model, path: Path, *, steps: int = 20) -> Path:
    """Decode a grid of 2-D codes placed at prior quantiles from 5% to 95%."""
    quantiles = torch.linspace(0.05, 0.95, steps)
    values = torch.distributions.Normal(0.0, 1.0).icdf(quantiles)
    z1, z2 = torch.meshgrid(values, values.flip(0), indexing="xy")
    codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], -1).to(model.device)
    return plot_images(model.decode(codes), path, nrow=steps, title="decoded latent manifold (prior quantiles 5%-95%)")


def plot_latent_scatter(codes: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    """The guide's latent means of test images, coloured by digit."""
    codes, labels = codes.detach().cpu(), labels.detach().cpu()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("latent means of test images")
    return _save(fig, path)


def write_run_pictures(model, dataset, history: Sequence[dict], run_dir: Path, *, seed: int = 0) -> list[Path]:
    """Every picture of a run into ``run_dir``; the 2-D latent plots only when the code is 2-D."""
    run_dir = Path(run_dir)
    torch.manual_seed(seed)
    test = dataset.test
    paths = [plot_curves(history, run_dir / "curves.png"),
             plot_images(model.generate(64), run_dir / "samples.png", title="samples: z ~ p(z), mean of p(x | z)")]
    originals = test.images[torch.linspace(0, len(test) - 1, 30).long()]
    paths.append(plot_reconstructions(originals, model.reconstruct(originals), run_dir / "reconstructions.png"))
    codes = model.encode(test.images[:1])
    if codes.shape[-1] == 2:
        paths.append(plot_latent_manifold(model, run_dir / "latent_manifold.png"))
        if test.labels is not None:
            paths.append(plot_latent_scatter(model.encode(test.images), test.labels, run_dir / "latent_space.png"))
    return paths
