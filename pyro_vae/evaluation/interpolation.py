"""Paths between the codes of two images, decoded: linear, or spherical (Shoemake's slerp, which keeps a path
between codes of similar norm at that norm, where most of a Gaussian prior's mass lies in many dimensions)."""
from __future__ import annotations

import torch

from pyro_vae.errors import PyroVAEError


def interpolate_codes(a: torch.Tensor, b: torch.Tensor, steps: int, *, spherical: bool = False) -> torch.Tensor:
    """``steps`` codes from ``a`` to ``b`` (both (D,)), endpoints included: (steps, D). Spherical: slerp by the
    angle between a and b (linear where they are parallel, the angle then being 0)."""
    if steps < 2:
        raise PyroVAEError(f"a path needs at least 2 steps (its two ends), got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype, device=a.device).unsqueeze(-1)
    if spherical:
        cosine = torch.dot(a, b) / (a.norm() * b.norm()).clamp(min=1e-12)
        omega = torch.arccos(cosine.clamp(-1.0, 1.0))
        if omega.abs() > 1e-6:
            return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return (1 - t) * a + t * b


@torch.no_grad()
def interpolate(model, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10, *, spherical: bool = False) -> torch.Tensor:
    """For each pair of images (rows of ``x_a`` and ``x_b``): the decoded path between their codes (the guide's
    means of the structure's code site), as (pairs * steps, x_dim) images, one pair after the other."""
    codes_a, codes_b = model.encode(x_a), model.encode(x_b)
    paths = [interpolate_codes(a, b, steps, spherical=spherical) for a, b in zip(codes_a, codes_b)]
    return model.decode(torch.cat(paths))
