"""ELBO objectives and gradient estimators."""
from pyro_vae.inference.elbos import ELBOS, make_elbo
from pyro_vae.inference.iwae import IWAE_ELBO
from pyro_vae.inference.multisample import (CIWAE_ELBO, DReG_ELBO, MIWAE_ELBO, PIWAE_ELBO, RWS_ELBO, STL_ELBO,
                                            TMC_ELBO, VIMCO_ELBO)

__all__ = ["CIWAE_ELBO", "DReG_ELBO", "ELBOS", "IWAE_ELBO", "MIWAE_ELBO", "PIWAE_ELBO", "RWS_ELBO", "STL_ELBO",
           "TMC_ELBO", "VIMCO_ELBO", "make_elbo"]
