"""Latent structures, one file each, and a registry that builds them by name or from a user's file."""
from __future__ import annotations

import hashlib
import inspect
import sys
import types
from pathlib import Path
from typing import Optional

from pyro_vae.catalog import DEFAULT_LIKELIHOOD, DEFAULT_NET, ENUM_MODELS, MODEL_NAMES, check_registry, is_file_spec
from pyro_vae.errors import USER_MODULE_PREFIX, PyroVAEError, first_line, user_line
from pyro_vae.models.base import LatentStructure, structure_parameters
from pyro_vae.models.bernoulli_mixture import BernoulliMixture
from pyro_vae.models.beta_tcvae import BetaTCVAE
from pyro_vae.models.beta_vae import BetaVAE
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.dmm import DMM
from pyro_vae.models.factor_vae import FactorVAE
from pyro_vae.models.flow_prior_vae import FlowPriorVAE
from pyro_vae.models.flow_vae import IAFVAE, PlanarVAE, SylvesterVAE
from pyro_vae.models.gmvae import GMVAE
from pyro_vae.models.hierarchical_vae import HierarchicalVAE
from pyro_vae.models.hierarchical_vampprior import HierarchicalVampPrior
from pyro_vae.models.hmm import HMM
from pyro_vae.models.mixture_prior_vae import MixturePriorVAE
from pyro_vae.models.ss_vae import SSVAE
from pyro_vae.models.vae import VAE
from pyro_vae.models.vampprior import VampPriorVAE
from pyro_vae.models.vampprior_iaf import VampPriorIAFVAE

MODELS: dict[str, type[LatentStructure]] = {
    "vae": VAE,
    "beta-vae": BetaVAE,
    "beta-tcvae": BetaTCVAE,
    "factor-vae": FactorVAE,
    "cvae": CVAE,
    "hierarchical-vae": HierarchicalVAE,
    "mixture-prior-vae": MixturePriorVAE,
    "bernoulli-mixture": BernoulliMixture,
    "gmvae": GMVAE,
    "ss-vae": SSVAE,
    "vampprior": VampPriorVAE,
    "hierarchical-vampprior": HierarchicalVampPrior,
    "planar-vae": PlanarVAE,
    "iaf-vae": IAFVAE,
    "sylvester-vae": SylvesterVAE,
    "vampprior-iaf": VampPriorIAFVAE,
    "flow-prior-vae": FlowPriorVAE,
    "dmm": DMM,
    "hmm": HMM,
}
check_registry("model", MODELS, MODEL_NAMES)
check_registry("enumerating model", [n for n, c in MODELS.items() if c.default_elbo == "enum"], ENUM_MODELS)


#: where a run keeps the source of a structure from a file (and the checkpoint keeps it too, with its SHA-256)
STRUCTURE_FILE = "structure.py"


def read_structure_source(spec: str) -> dict:
    """The source of the structure file named by ``spec``: ``{"spec", "file", "class", "sha256", "text"}``.

    Saved in the checkpoint of a run, so the run keeps the structure it was trained with wherever it is
    evaluated, sampled or resumed, even after the file is edited or deleted.
    """
    if ":" not in spec or spec.endswith(".py"):
        raise PyroVAEError(f"name the class too: --model {spec.split(':')[0]}:ClassName")
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise PyroVAEError(f"no such file {path_text!r} for --model {spec}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PyroVAEError(f"cannot read the structure file {path_text}: {getattr(err, 'strerror', None) or err}") from None
    return {"spec": spec, "file": path_text, "class": class_name, "text": text,
            "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _class_from_source(source: dict) -> type[LatentStructure]:
    """Execute a structure file's source as a module of its own and return the class it names."""
    file, class_name = source["file"], source["class"]
    module_name = f"{USER_MODULE_PREFIX}{Path(file).stem}_{source['sha256'][:12]}".replace("-", "_")
    module = sys.modules.get(module_name)
    if module is None:
        module = types.ModuleType(module_name)
        module.__file__ = file
        try:
            code = compile(source["text"], file, "exec")
        except SyntaxError as err:
            raise PyroVAEError(f"the structure file {file} has a syntax error at line {err.lineno}: {err.msg}") from None
        sys.modules[module_name] = module
        try:
            exec(code, module.__dict__)
        except Exception as err:  # the user's module failed while being imported: say what and where
            del sys.modules[module_name]
            line = user_line(err, file)
            raise PyroVAEError(f"the structure file {file} raised {type(err).__name__} while being loaded{line}: "
                               f"{first_line(err)}") from None
    cls = getattr(module, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, LatentStructure)):
        raise PyroVAEError(f"{file} defines no LatentStructure subclass named {class_name!r}")
    return cls


def load_structure_class(spec: str) -> type[LatentStructure]:
    """``path/to/file.py:ClassName`` -> the class, imported from the file without touching the library."""
    return _class_from_source(read_structure_source(spec))


def model_class(name: str, structure_source: Optional[dict] = None) -> type[LatentStructure]:
    """The class of a registered structure, or of one from a file: from ``structure_source`` (the copy a run
    saved) when given, else from the file itself."""
    if is_file_spec(name):
        return _class_from_source(structure_source) if structure_source else load_structure_class(name)
    try:
        return MODELS[name]
    except KeyError:
        raise PyroVAEError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))} "
                           "or give path/to/file.py:ClassName") from None


#: the base constructor's options (LatentStructure.__init__) that the trainer passes to every structure, with
#: the command-line option that sets each and the value that a structure not taking it behaves as
BASE_OPTIONS = {"image_shape": ("the image shape of --dataset", None),
                "likelihood": ("--likelihood", DEFAULT_LIKELIHOOD), "net": ("--net", DEFAULT_NET)}


def _fit_base_options(cls: type[LatentStructure], name: str, options: dict) -> dict:
    """``options`` without the base options ``cls`` does not take (a structure file written before them), after
    refusing any such option set to something else than what the structure does without it."""
    accepted = structure_parameters(cls)
    fitted = dict(options)
    for option, (flag, default) in BASE_OPTIONS.items():
        if option in fitted and option not in accepted:
            value = fitted.pop(option)
            if option == "image_shape":
                value = None if value is None or len(value) < 3 or list(value) == [1, 28, 28] else value
            if value is not None and value != default:
                advice = (f"give its __init__ an argument {option} and pass it on to LatentStructure.__init__"
                          if is_file_spec(name) else f"it keeps {default!r}" if default else "it takes flat inputs")
                raise PyroVAEError(f"the structure {name} does not take {flag} ({option}={value!r}); {advice}")
    return fitted


def check_model_options(name: str, options: dict, structure_source: Optional[dict] = None) -> type[LatentStructure]:
    """Refuse options the structure ``name`` does not take, or values it does not accept, with a sentence
    naming the option; returns the structure's class."""
    cls = model_class(name, structure_source)
    options = _fit_base_options(cls, name, options)
    accepted = structure_parameters(cls)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise PyroVAEError(f"model {name!r} has no option {unknown[0]!r}; its options are {', '.join(accepted)}")
    cls.check_options(options)
    return cls


def build_model(name: str, *, structure_source: Optional[dict] = None, **kwargs) -> LatentStructure:
    """Build the structure ``name`` (registered, or ``file.py:ClassName``) with constructor arguments ``kwargs``,
    after the structure has checked them (:meth:`LatentStructure.check_options`)."""
    cls = check_model_options(name, kwargs, structure_source)
    kwargs = _fit_base_options(cls, name, kwargs)
    # A structure's own mistakes in its constructor stay tracebacks; a user's file gets one sentence.
    expected = Exception if is_file_spec(name) else (ValueError, TypeError)
    try:
        return cls(**kwargs)
    except PyroVAEError:
        raise
    except expected as err:
        where = user_line(err, name.rpartition(":")[0]) if is_file_spec(name) else ""
        raise PyroVAEError(f"model {name!r} could not be built with the options "
                           f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items() if k != 'x_dim')}: "
                           f"{type(err).__name__}{where}: {first_line(err)}") from None


__all__ = ["LatentStructure", "MODELS", "STRUCTURE_FILE", "build_model", "check_model_options", "model_class", "is_file_spec",
           "read_structure_source", "VAE", "BetaVAE", "BetaTCVAE", "FactorVAE", "CVAE",
           "HierarchicalVAE", "MixturePriorVAE",
           "BernoulliMixture", "GMVAE", "SSVAE", "VampPriorVAE", "DMM", "HMM"]
