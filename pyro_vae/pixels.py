"""Pixels: what binary and 8-bit images are, and uniform dequantization. The bottom layer that the data sets and
the likelihoods both read (neither imports the other for it)."""
from __future__ import annotations

import torch


#: the 8-bit grid: values k / LEVELS_MAX for k in 0..LEVELS_MAX
LEVELS_MAX = 255
#: how far a pixel may sit from the 8-bit grid k / 255 and still count as on it (float32 rounding of k / 255)
GRID_TOLERANCE = 1e-4


def is_binary(images: torch.Tensor) -> bool:
    return bool(((images == 0) | (images == 1)).all())


def on_8bit_grid(images: torch.Tensor) -> bool:
    """Whether every value is k / 255 for a whole k in 0..255 (up to float rounding)."""
    scaled = images * LEVELS_MAX
    return bool(((scaled - scaled.round()).abs() <= GRID_TOLERANCE * LEVELS_MAX).all()
                and (images >= 0).all() and (images <= 1).all())


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None, levels: int = LEVELS_MAX + 1) -> torch.Tensor:
    """8-bit images stored as k / 255 -> (k + u) / levels with u ~ Uniform(0, 1): uniform dequantization."""
    k = torch.round(images * LEVELS_MAX)
    u = torch.rand(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return (k + u) / levels
