"""Variational autoencoders written as Pyro programs."""
from pyro_vae.errors import CheckpointError, InvalidDataError, PyroVAEError, TrainingDiverged
from pyro_vae.models import MODELS, LatentStructure, VAE, build_model

__version__ = "0.1.0"

__all__ = ["VAE", "LatentStructure", "MODELS", "build_model", "PyroVAEError", "InvalidDataError",
           "CheckpointError", "TrainingDiverged"]
