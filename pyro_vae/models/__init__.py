"""Latent structures, one file each, and a registry that builds them by name or from a user's file."""
from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import LatentStructure
from pyro_vae.models.bernoulli_mixture import BernoulliMixture
from pyro_vae.models.beta_vae import BetaVAE
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.gmvae import GMVAE
from pyro_vae.models.hierarchical_vae import HierarchicalVAE
from pyro_vae.models.mixture_prior_vae import MixturePriorVAE
from pyro_vae.models.ss_vae import SSVAE
from pyro_vae.models.vae import VAE
from pyro_vae.models.vampprior import VampPriorVAE

MODELS: dict[str, type[LatentStructure]] = {
    "vae": VAE,
    "beta-vae": BetaVAE,
    "cvae": CVAE,
    "hierarchical-vae": HierarchicalVAE,
    "mixture-prior-vae": MixturePriorVAE,
    "bernoulli-mixture": BernoulliMixture,
    "gmvae": GMVAE,
    "ss-vae": SSVAE,
    "vampprior": VampPriorVAE,
}


def load_structure_class(spec: str) -> type[LatentStructure]:
    """``path/to/file.py:ClassName`` -> the class, imported from the file without touching the library."""
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise PyroVAEError(f"no such file {path_text!r} for --model {spec}")
    module_name = f"pyro_vae_user_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    module_spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, LatentStructure)):
        raise PyroVAEError(f"{path_text} defines no LatentStructure subclass named {class_name!r}")
    return cls


def model_class(name: str) -> type[LatentStructure]:
    if name.endswith(".py") or ".py:" in name:
        if ":" not in name or name.endswith(".py"):
            raise PyroVAEError(f"name the class too: --model {name.split(':')[0]}:ClassName")
        return load_structure_class(name)
    try:
        return MODELS[name]
    except KeyError:
        raise PyroVAEError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))} "
                           "or give path/to/file.py:ClassName") from None


def build_model(name: str, **kwargs) -> LatentStructure:
    """Build the structure ``name`` (registered, or ``file.py:ClassName``) with constructor arguments ``kwargs``."""
    cls = model_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [key for key in kwargs if key not in accepted and not takes_any]
    if unknown:
        raise PyroVAEError(f"model {name!r} has no option {unknown[0]!r}; its options are "
                           f"{', '.join(p for p in accepted if p != 'self')}")
    return cls(**kwargs)


__all__ = ["LatentStructure", "MODELS", "build_model", "model_class", "VAE", "BetaVAE", "CVAE",
           "HierarchicalVAE", "MixturePriorVAE",
           "BernoulliMixture", "GMVAE", "SSVAE", "VampPriorVAE"]
