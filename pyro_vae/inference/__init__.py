"""ELBO objectives and gradient estimators."""
from pyro_vae.inference.elbos import ELBOS, make_elbo

__all__ = ["ELBOS", "make_elbo"]
