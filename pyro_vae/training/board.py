"""TensorBoard logs of a run (``train --tensorboard``): RUN_DIR/tensorboard/ gets, every epoch, the scalars of
``metrics.jsonl`` (training loss, validation ELBO and bound, learning rate, accuracy), the posterior-collapse
diagnostics of the code on validation images (KL per latent dimension where it is defined, active units) and
pictures of prior samples and of reconstructions. ``tensorboard --logdir runs`` shows every run side by side."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation.collapse import collapse_diagnostics

#: the folder of a run that holds its event files
BOARD_DIR = "tensorboard"
#: validation images the per-epoch diagnostics and reconstructions look at
BOARD_IMAGES = 500
#: the scalars written every epoch: metrics.jsonl key -> TensorBoard tag
SCALARS = {"train_loss": "train/loss", "valid_elbo": "valid/elbo", "valid_bound": "valid/bound", "lr": "train/lr",
           "valid_accuracy": "valid/accuracy", "valid_clustering_accuracy": "valid/clustering_accuracy",
           "valid_smallest_cluster": "valid/smallest_cluster"}


def check_tensorboard() -> None:
    """One sentence if the tensorboard package, which torch's SummaryWriter needs, is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise PyroVAEError("--tensorboard needs the tensorboard package: pip install tensorboard "
                           "(or pip install -e '.[tensorboard]')") from None


class Board:
    """A SummaryWriter in RUN_DIR/tensorboard, written once per epoch by :meth:`epoch`."""

    def __init__(self, run_dir: Path):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(run_dir) / BOARD_DIR))

    @torch.no_grad()
    def epoch(self, model, row: dict, valid_batches: Iterable[tuple]) -> None:
        """The epoch's scalars, and diagnostics and pictures from the first :data:`BOARD_IMAGES` of
        ``valid_batches`` (read lazily: the rest are never drawn)."""
        step = row["epoch"]
        for key, tag in SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, row[key], step)
        was_training = model.training
        model.eval()
        try:
            taken, count = [], 0
            for batch in valid_batches:
                if count >= BOARD_IMAGES:
                    break
                taken.append(batch)
                count += batch[0].shape[0]
            if not model.needs_labels and taken:
                diagnostics = collapse_diagnostics(model, taken, max_points=0)
                self.writer.add_scalar("collapse/active_units", diagnostics["active_units"], step)
                if "kl_per_dim" in diagnostics:
                    self.writer.add_scalar("collapse/kl", diagnostics["kl"], step)
                    for i, kl in enumerate(diagnostics["kl_per_dim"]):
                        self.writer.add_scalar(f"kl_per_dim/{i}", kl, step)
                shape = tuple(model.image_shape)
                shape = shape if len(shape) == 3 else (1, 28, 28) if model.x_dim == 784 else None
                if shape is not None:  # flat data of another size are no pictures
                    x = taken[0][0][:8]
                    pictures = {"samples": model.generate(16),
                                "reconstructions": torch.cat([x, model.reconstruct(x)])}
                    for tag, images in pictures.items():
                        self.writer.add_images(tag, images.clamp(0, 1).reshape(-1, *shape), step)
        finally:
            model.train(was_training)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
