"""The contract every latent structure meets, and what the library derives from it.

A latent structure is an ``nn.Module`` with two Pyro programs over the same arguments:

* ``model(x, *conditioning)``: the generative model p(z) p(x | z); the observation site is named ``"x"``
  and every site that belongs to one image sits inside ``pyro.plate("data", batch_size)``;
* ``guide(x, *conditioning)``: the variational posterior q(z | x); its latent sites have the same names.

Conditioning (a label for the conditional VAE) comes after ``x`` in the same order as the batches of the
data iterator. Everything generic (training, ELBOs, importance-sampled likelihoods, estimator comparison,
generation and reconstruction below) uses only these two programs through Pyro's effect handlers.
"""
from __future__ import annotations

import collections.abc
import inspect
import math
import re
import typing
from typing import Any, Optional, Sequence

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import is_validation_enabled, site_is_subsample
from torch import nn

from pyro_vae.catalog import DEFAULT_LIKELIHOOD, DEFAULT_NET, NET_NAMES
from pyro_vae.conv import ConvDecoder, ConvEncoder, ConvNet
from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.likelihoods import BINARY_ONLY, pixel_likelihood
from pyro_vae.networks import BernoulliDecoder, GaussianMLP, mlp
from pyro_vae.pixels import is_binary

OBSERVATION_SITE = "x"


def _observed_mean(trace) -> torch.Tensor:
    """The images a trace of a model shows: the mean of its p(x | z), clamped to [0, 1] (a Gaussian's may leave it);
    for a structure over sequences, which observes step t at the site ``"x_t"``, the steps' means side by side."""
    if OBSERVATION_SITE in trace.nodes:
        return trace.nodes[OBSERVATION_SITE]["fn"].mean.clamp(0, 1)
    steps = [trace.nodes[name]["fn"].mean for name in observed_step_sites(trace)]
    return torch.cat(steps, -1).clamp(0, 1)


def observed_step_sites(trace) -> list[str]:
    """The sites ``"x_0"``, ``"x_1"``, ... where a structure over sequences observes its steps, in their order."""
    names = [name for name, site in trace.nodes.items() if site["type"] == "sample" and re.fullmatch(r"x_\d+", name)]
    return sorted(names, key=lambda name: int(name[2:]))


def default_image_shape(x_dim: int) -> tuple:
    """(1, 28, 28) for 784 inputs (MNIST, what every structure was first written for), else (x_dim,)."""
    return (1, 28, 28) if x_dim == 28 * 28 else (x_dim,)


def positive_int(name: str, value) -> int:
    """A model option that must be a positive whole number, checked with a sentence naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PyroVAEError(f"the model option {name} must be a positive whole number, got {value!r}")
    return value


def one_hot_labels(y, batch_size: int, num_classes: int, device) -> torch.Tensor:
    """One-hot codes of whole-number labels, after checking there is one label in range per image."""
    y = torch.as_tensor(y, device=device)
    if y.shape != (batch_size,):
        raise InvalidDataError(f"expected {batch_size} labels of shape ({batch_size},), got {tuple(y.shape)}")
    if y.is_floating_point() or (y < 0).any() or (y >= num_classes).any():
        raise InvalidDataError(f"labels must be whole numbers from 0 to {num_classes - 1}, got {sorted(set(y.tolist()))}")
    return torch.nn.functional.one_hot(y, num_classes).to(torch.get_default_dtype())


#: pixel means are clamped to [OUTPUT_BIAS_CLAMP, 1 - OUTPUT_BIAS_CLAMP] before the logit, so that pixels that are
#: never (or always) on in the training data get a finite bias
OUTPUT_BIAS_CLAMP = 1e-4


@torch.no_grad()
def init_output_bias(structure: nn.Module, images: torch.Tensor) -> int:
    """Set the output bias of every Bernoulli decoder in ``structure`` to the log-odds of the training pixels'
    means, logit(clamp(mean x)), so that the first decoded images are the average image rather than grey
    (a common start, e.g. in Burda et al.'s IWAE code). Returns how many decoders were set."""
    decoders = [m for m in structure.modules() if isinstance(m, BernoulliDecoder)]
    if not decoders:
        return 0
    means = images.double().mean(0).clamp(OUTPUT_BIAS_CLAMP, 1 - OUTPUT_BIAS_CLAMP)
    for decoder in decoders:
        bias = decoder.output_layer.bias
        if bias.shape == means.shape:
            bias.copy_(torch.logit(means).to(bias))
    return len(decoders)


def whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _accepts(predicate, value) -> bool:
    try:
        return bool(predicate(value))
    except (TypeError, ValueError):
        return False


def _option_rule(name: str, annotation, default) -> Optional[tuple]:
    """The rule that :meth:`LatentStructure.check_options` applies to an option without an explicit one."""
    kind = annotation
    if typing.get_origin(kind) is typing.Union:  # Optional[int] and the like: the first non-None type
        args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        kind = args[0] if args else None
    if kind is None or kind is inspect.Parameter.empty:
        kind = type(default) if default is not inspect.Parameter.empty and default is not None else None
    origin = typing.get_origin(kind) or kind
    if kind is bool:
        return (lambda v: isinstance(v, bool), "true or false (True, False)")
    if kind is int:
        if name.startswith("num_") or name.endswith("_dim"):
            return (lambda v: whole_number(v) and v >= 1, "a positive whole number")
        return (whole_number, "a whole number")
    if kind is float:
        return (finite_number, "a finite number")
    if kind is str:
        return (lambda v: isinstance(v, str), "text")
    if name.endswith("_dims") and isinstance(origin, type) and issubclass(origin, (list, tuple, collections.abc.Sequence)):
        return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(whole_number(x) and x >= 1 for x in v),
                "a list of positive whole numbers such as [100,100]")
    return None


def _init_parameters(init) -> list[inspect.Parameter]:
    """The parameters of an ``__init__`` as written (without its first, ``self``), with the annotations evaluated
    where they can be, and left empty where they cannot (a name the module does not define)."""
    parameters = list(inspect.signature(init).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if parameters and parameters[0].kind in positional:
        parameters = parameters[1:]
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that cannot be evaluated: the rules fall back on the defaults' types
        hints = {}
    return [p.replace(annotation=hints.get(p.name, inspect.Parameter.empty)) for p in parameters]


def structure_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor arguments a structure class accepts, by name, in order: the named parameters of its
    ``__init__`` and, where that ``__init__`` takes ``**kwargs`` (passed on to its parent's, as every structure
    passes ``**pixels`` on), those of the next class in the MRO that defines ``__init__``, and so on down to
    :class:`LatentStructure`, whose keyword-only ``image_shape``, ``likelihood`` and ``net`` are every
    structure's. A name keeps the first (the subclass's) parameter. Annotations are evaluated (empty where they
    cannot be). What :meth:`LatentStructure.check_options` checks and ``build_model`` accepts or refuses."""
    accepted: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        parameters = _init_parameters(init)
        for parameter in parameters:
            if parameter.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                accepted.setdefault(parameter.name, parameter)
        if klass is LatentStructure or not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            break
    return accepted


class LatentStructure(nn.Module):
    """Base class: subclasses define ``model`` and ``guide``; see the module docstring for the contract."""

    #: Name of the guide's latent site whose mean is "the code" of an image (for latent plots).
    code_site = "z"
    #: Whether batches must carry labels (passed as the second argument of model and guide).
    needs_labels = False
    #: Whether the structure learns from a few labelled images among many unlabelled ones (``--num-labelled``):
    #: it then receives ``(x, y)`` batches for the labelled images and ``(x,)`` batches for the others.
    semi_supervised = False
    #: The ELBO ``pyro-vae train`` uses when ``--elbo`` is not given: "enum" for structures whose discrete
    #: sites are marked for enumeration (``infer={"enumerate": "parallel"}``), so they are summed out exactly.
    default_elbo = "trace"
    #: Whether the model couples the images of a batch (beta-TCVAE's minibatch estimate of q(z)): data-parallel
    #: training then computes that coupling within each process's shard, and says so.
    batch_coupled = False
    #: What the structure models: "images" (and flat vectors, the same to an MLP), or "sequences" (T, D) of
    #: variable length (:class:`pyro_vae.models.sequences.SequenceStructure`).
    data_kind = "images"
    #: Rules for model options beyond what :meth:`check_options` derives from the constructor's signature:
    #: ``{"option": (predicate, "what it accepts")}``, e.g. ``{"aux_weight": (lambda v: v >= 0, "a number >= 0")}``.
    option_rules: dict = {}

    @classmethod
    def check_options(cls, options: dict) -> None:
        """Refuse, with a sentence naming the option and what it accepts, a constructor argument of the wrong
        type or range, before the structure is built.

        The rule of an option is ``option_rules[name]`` if given, else derived from its annotation (or its
        default's type): an ``int`` must be a whole number, and a positive one if its name starts with
        ``num_`` or ends with ``_dim``; a ``float`` a finite number; a ``bool`` true or false; a ``str`` text;
        a sequence named ``*_dims`` positive whole numbers. The options are those of
        :func:`structure_parameters` (the base's among them); structures from files get the same checks.
        """
        parameters = structure_parameters(cls)
        for name, value in options.items():
            if name not in parameters:
                continue
            parameter = parameters[name]
            rule = cls.option_rules.get(name) or _option_rule(name, parameter.annotation, parameter.default)
            if rule is not None and not _accepts(rule[0], value):
                raise PyroVAEError(f"the model option {name} of {cls.__name__} must be {rule[1]}, got {value!r}")

    def __init__(self, x_dim: int, *, image_shape: Optional[Sequence[int]] = None, likelihood: str = DEFAULT_LIKELIHOOD,
                 net: str = DEFAULT_NET):
        """``image_shape`` (C, H, W) of the ``x_dim`` pixels (default: 1 x 28 x 28 for 784, else flat),
        ``likelihood`` the pixels' p(x | z) (:class:`~pyro_vae.likelihoods.PixelLikelihood`) and ``net`` the
        networks :meth:`make_encoder`, :meth:`make_decoder` and :meth:`make_classifier` build: "mlp" or
        "conv" (:mod:`pyro_vae.conv`).

        These are the arguments every structure shares, and they are written here only: a structure takes its
        own arguments and ``**pixels``, which it passes on (``super().__init__(x_dim, ..., **pixels)``), and
        :func:`structure_parameters` counts them among its options. A new shared argument is one edit here."""
        super().__init__()
        self.x_dim = x_dim
        self.image_shape = default_image_shape(x_dim) if image_shape is None else tuple(int(n) for n in image_shape)
        if math.prod(self.image_shape) != x_dim:
            raise PyroVAEError(f"an image of shape {self.image_shape} has {math.prod(self.image_shape)} pixels, "
                               f"not x_dim = {x_dim}")
        if net not in NET_NAMES:
            raise PyroVAEError(f"unknown network {net!r}; choose one of {', '.join(NET_NAMES)}")
        if net == "conv" and len(self.image_shape) != 3:
            raise PyroVAEError(f"the convolutional networks need images (C, H, W); these {x_dim} inputs have no "
                               "image shape")
        self.net = net
        self.likelihood = pixel_likelihood(likelihood, x_dim)

    def image_config(self) -> dict:
        """The base constructor's arguments, for :meth:`config`: x_dim, and the others where not the default,
        so that checkpoints of structures from before them load unchanged."""
        extra = {"image_shape": list(self.image_shape)} if self.image_shape != default_image_shape(self.x_dim) else {}
        if self.likelihood.spec != DEFAULT_LIKELIHOOD:
            extra["likelihood"] = self.likelihood.spec
        if self.net != "mlp":
            extra["net"] = self.net
        return {"x_dim": self.x_dim, **extra}

    def make_encoder(self, hidden_dims: Sequence[int], z_dim: int, activation: str = "relu",
                     extra_dim: int = 0) -> nn.Module:
        """x (and ``extra_dim`` more features, e.g. a one-hot label) -> (loc, scale) of a diagonal Gaussian over
        ``z_dim`` variables, called ``encoder(x, *extra)``: an MLP over the flat pixels or a conv net."""
        if self.net == "conv":
            return ConvEncoder(self.image_shape, z_dim, extra_dim=extra_dim)
        return GaussianMLP(self.x_dim + extra_dim, hidden_dims, z_dim, activation)

    def make_decoder(self, in_dim: int, hidden_dims: Sequence[int], activation: str = "relu") -> nn.Module:
        """A code of ``in_dim`` features -> the likelihood's parameters, ``likelihood.params_per_pixel * x_dim``
        numbers per image (flat), for ``self.likelihood(decoder(code))``; ``hidden_dims`` in the decoder's
        order (usually the encoder's reversed)."""
        params = self.likelihood.params_per_pixel
        if self.net == "conv":
            return ConvDecoder(in_dim, self.image_shape, params, flat=True)
        return BernoulliDecoder(in_dim, hidden_dims, params * self.x_dim, activation)

    def make_classifier(self, hidden_dims: Sequence[int], num_classes: int, activation: str = "relu") -> nn.Module:
        """x -> logits of ``num_classes`` classes (q(c | x), q(y | x)): an MLP or a conv net."""
        if self.net == "conv":
            return ConvNet(self.image_shape, num_classes)
        return mlp([self.x_dim, *hidden_dims, num_classes], activation)

    def observe(self, decoder_outputs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The observation site: ``pyro.sample("x", p(x | z), obs=x)`` with p(x | z) the likelihood of the
        decoder's outputs; ``x`` flat (N, x_dim), as :meth:`check_batch` returns it."""
        if self.likelihood.shared_scale:
            pyro.module("likelihood", self.likelihood)
        return pyro.sample(OBSERVATION_SITE, self.likelihood(decoder_outputs), obs=x)

    def model(self, x: torch.Tensor, *conditioning: Any) -> None:
        raise NotImplementedError

    def guide(self, x: torch.Tensor, *conditioning: Any) -> None:
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor arguments, as plain data, so a checkpoint can rebuild the structure."""
        raise NotImplementedError

    def check_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The batch as (N, x_dim), after checking its shape: flat (N, x_dim) or images (N, C, H, W).

        While Pyro's validation is on it also refuses values outside the likelihood's support (grey pixels
        for the Bernoulli, values off the 8-bit grid for the discretized logistic); see :meth:`check_binary`.
        """
        if isinstance(x, torch.Tensor) and x.dim() == 1 + len(self.image_shape) and x.shape[1:] == self.image_shape:
            x = x.reshape(x.shape[0], self.x_dim)
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            images = f" or (batch_size, {', '.join(map(str, self.image_shape))})" if len(self.image_shape) > 1 else ""
            raise InvalidDataError(f"expected a batch of shape (batch_size, {self.x_dim}){images}, got {shape}")
        likelihood = getattr(self, "likelihood", None)
        if likelihood is not None and is_validation_enabled():
            why = likelihood.support_error(x)
            if why:
                raise InvalidDataError(why)
        return x

    def initialize(self, images: torch.Tensor, generator: torch.Generator) -> None:
        """Data-dependent initialisation, called once before the first step of a fresh run with the training
        images (e.g. mixture components placed at training images); by default nothing."""

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels for a batch, for structures that learn a classifier (e.g. the semi-supervised VAE)."""
        raise PyroVAEError(f"the {type(self).__name__} structure has no classifier")

    @property
    def conditional(self) -> bool:
        """Whether the second argument is a class label one chooses (the conditional VAE's digit), rather than side
        data that comes with each item (a sequence's length)."""
        return self.needs_labels and self.data_kind != "sequences"

    @property
    def can_classify(self) -> bool:
        return type(self).classify is not LatentStructure.classify

    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable value of the structure's discrete latent under q for each image of a batch (0 to
        ``num_components`` - 1), for structures whose discrete latent ranges over clusters (the GMVAE)."""
        raise PyroVAEError(f"the {type(self).__name__} structure has no discrete latent to cluster by")

    @property
    def can_cluster(self) -> bool:
        return type(self).cluster is not LatentStructure.cluster

    @staticmethod
    def check_binary(x: torch.Tensor) -> None:
        """A Bernoulli likelihood silently gives wrong densities for grey pixels, so refuse them.

        Like Pyro's own support checks this runs while Pyro validation is on (Pyro's default). The trainer
        checks the whole data set once before training and then steps with validation off, so the check
        does not cost every step, and a JIT trace (made with validation off) does not carry it.
        """
        if is_validation_enabled() and not is_binary(x):
            raise InvalidDataError(BINARY_ONLY)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, *conditioning: Any) -> torch.Tensor:
        """Encode, sample the latents from the guide, decode: the mean of p(x | z) with z ~ q(z | x)."""
        guide_trace = poutine.trace(self.guide).get_trace(x, *conditioning)
        model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)).get_trace(x, *conditioning)
        return _observed_mean(model_trace)

    @torch.no_grad()
    def generate(self, num_samples: int, *conditioning: Any) -> torch.Tensor:
        """Sample the latents from the prior and decode: the mean of p(x | z) with z ~ p(z)."""
        placeholder = torch.zeros(num_samples, self.x_dim, device=self.device)
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(placeholder, *conditioning)
        return _observed_mean(trace)

    @torch.no_grad()
    def generate_per_value(self, per_value: int) -> Optional[tuple[str, torch.Tensor]]:
        """For a structure whose prior has a discrete latent (a component, a class): ``per_value`` samples for
        each of its values in turn, decoded, as (site name, images); None for a structure without one."""
        placeholder = torch.zeros(1, self.x_dim, device=self.device)
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(placeholder)
        discrete = [name for name, site in trace.nodes.items()
                    if site["type"] == "sample" and name != OBSERVATION_SITE and not site_is_subsample(site)
                    and site["fn"].has_enumerate_support]
        if not discrete:
            return None
        name = discrete[0]
        fn = trace.nodes[name]["fn"]
        values = fn.enumerate_support(expand=False).reshape((-1,) + fn.event_shape)
        placeholder = torch.zeros(per_value, self.x_dim, device=self.device)
        images = []
        for value in values:
            fixed = value.expand((per_value,) + value.shape)
            decoder = poutine.condition(poutine.uncondition(self.model), data={name: fixed})
            images.append(_observed_mean(poutine.trace(decoder).get_trace(placeholder)))
        return name, torch.cat(images)

    @torch.no_grad()
    def decode(self, code: torch.Tensor, *conditioning: Any) -> torch.Tensor:
        """The mean of p(x | code) for given values of the code site (e.g. a grid for the latent manifold)."""
        placeholder = torch.zeros(code.shape[0], self.x_dim, device=code.device)
        decoder = poutine.condition(poutine.uncondition(self.model), data={self.code_site: code})
        trace = poutine.trace(decoder).get_trace(placeholder, *conditioning)
        return _observed_mean(trace)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *conditioning: Any) -> torch.Tensor:
        """The guide's mean of the code site for each image."""
        trace = poutine.trace(self.guide).get_trace(x, *conditioning)
        return trace.nodes[self.code_site]["fn"].mean

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
