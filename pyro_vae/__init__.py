"""Variational autoencoders written as Pyro programs."""
from pyro_vae.errors import CheckpointError, InvalidDataError, PyroVAEError, TrainingDiverged

__version__ = "0.1.0"

__all__ = ["VAE", "LatentStructure", "MODELS", "build_model", "PyroVAEError", "InvalidDataError",
           "CheckpointError", "TrainingDiverged"]

_FROM_MODELS = ("VAE", "LatentStructure", "MODELS", "build_model")


def __getattr__(name: str):
    """``pyro_vae.VAE`` and the other model names import torch and Pyro on first use, not with the package:
    the command line's parser and ``--help`` need neither (PEP 562)."""
    if name in _FROM_MODELS:
        from pyro_vae import models

        return getattr(models, name)
    raise AttributeError(f"module 'pyro_vae' has no attribute {name!r}")
