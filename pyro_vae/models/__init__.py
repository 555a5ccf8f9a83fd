"""Latent structures, one file each, and a registry that builds them by name."""
from __future__ import annotations

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import LatentStructure
from pyro_vae.models.vae import VAE

MODELS: dict[str, type[LatentStructure]] = {"vae": VAE}


def build_model(name: str, **kwargs) -> LatentStructure:
    """Build the registered structure ``name`` with constructor arguments ``kwargs``."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise PyroVAEError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None
    return cls(**kwargs)


__all__ = ["LatentStructure", "VAE", "MODELS", "build_model"]
