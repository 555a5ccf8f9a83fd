"""Bounds on log p(x) of a model/guide pair, generic over any latent structure: the ELBO from Pyro's ELBO classes,
the importance-sampled log-likelihood from tracing the guide and replaying the model under a particle plate, and
the rate and distortion of a beta-VAE."""
from __future__ import annotations

import contextlib
import itertools
import math
import re
import warnings
from typing import Callable, Iterable, Optional

import torch
import pyro
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference import make_elbo
from pyro_vae.scaling import is_penalty, measuring, unscaled
from pyro_vae.inference.importance import log_weights, summed_out_log_likelihood
from pyro_vae.inference.sites import SITE_MISMATCH, disagreement, latent_sites, mismatch_in_words
#: rows (particles x data points x enumerated values) per vectorized call of the importance sampler
MAX_ROWS = 2_500


@torch.no_grad()
def elbo_per_datapoint(model: Callable, guide: Callable, batches: Iterable[tuple], *, num_particles: int = 1,
                       elbo: Optional[str] = None, plate_nesting: Optional[int] = None) -> float:
    """The average ELBO (nats per data point) over ``batches`` of ``(x, *conditioning)``.

    ``elbo`` None: ``TraceEnum_ELBO`` where sites are marked for enumeration (their sums are then exact,
    not sampled), else ``Trace_ELBO``. Scales (a beta, a warm-up factor) are undone: this is the ELBO of
    the generative model itself.
    """
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        return math.nan
    if elbo is None or (elbo == "enum" and plate_nesting is None):
        with measuring():
            sites = latent_sites(model, guide, first)
        elbo = elbo or ("enum" if sites.enumerated else "trace")
        plate_nesting = sites.max_plate_nesting if plate_nesting is None else plate_nesting
    objective = make_elbo(elbo, num_particles=num_particles, max_plate_nesting=plate_nesting)
    total, count = 0.0, 0
    for batch in itertools.chain([first], batches):
        # Pyro's check of the programs' sites, on every batch, as an error: a guide that gained a site since
        # training began (or on this batch alone) would report an "ELBO" above log p(x)
        with unscaled(), pyro.validation_enabled(True), warnings.catch_warnings():
            warnings.filterwarnings("error", message=SITE_MISMATCH, category=UserWarning)
            try:
                total -= objective.loss(model, guide, *batch)
            except UserWarning as err:
                if not re.match(SITE_MISMATCH, str(err)):  # another warning made an error (python -W error)
                    raise
                raise PyroVAEError(disagreement(batch[0].shape[0], mismatch_in_words(str(err)))) from None
        count += batch[0].shape[0]
    return total / count


@torch.no_grad()
def log_likelihood_iwae(model: Callable, guide: Callable, batch: tuple, *, num_samples: int = 5000,
                        max_rows: int = MAX_ROWS, jit: bool = False, validate_chunks: bool = False) -> torch.Tensor:
    """Importance-sampled estimate of log p(x) for each data point of one batch ``(x, *conditioning)``.

        log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k | x),   z_k ~ q(z | x)

    Discrete sites that the guide marks for enumeration (``infer={"enumerate": "parallel"}``) are summed
    exactly inside each weight: with c enumerated and z sampled given c,

        p(x) = sum_c E_{z ~ q(z | x, c)} [ p(x, z, c) / q(z | x, c) ],

    so q(c | x) cancels and a structure with only enumerated latents (a mixture) gets log p(x) exactly.
    Sites that only the model marks for enumeration are summed inside p(x, z) likewise. It is the IWAE
    bound of Burda et al. (2016): a lower bound on log p(x) in expectation that rises to it as K grows.
    Returns a tensor of shape (batch_size,).

    How it runs (none of it changes the estimate, only the order in which the samples are drawn):

    * The K samples are drawn in vectorized calls of at most ``max_rows`` (particles x data points x
      enumerated values) rows, so memory stays bounded whatever K is, and each call takes as many particles
      of as few data points as fit. With K >= ``max_rows`` a call is one data point's particles, so the
      guide's networks run on one data point per call rather than on the whole batch for a few particles
      each. The data points are independent here (every site is in the data plate), so the batch is
      sliced; a batch whose arguments are not all tensors of ``batch_size`` rows runs whole.
    * The log-sum-exp over chunks is accumulated in float64.
    * The whole batch is traced once first (``latent_sites``), with Pyro validation as it is set (on by
      default), which checks the data and the distributions' arguments; the chunks then run without
      Pyro's checks unless ``validate_chunks`` (which also turns ``jit`` off: a recorded graph does not
      check again).
    * ``jit`` records each shape of chunk once with ``torch.jit.trace`` and replays it, which skips Pyro's
      Python work on every call (about 1 ms); the draws are part of the graph, so the estimate is the same
      as uncompiled. Like ``JitTrace_ELBO`` it keeps one run of the programs, so it is for structures whose
      Python control flow does not depend on the data (``pyro-vae evaluate`` uses it for the built-in
      ones). If recording fails, it warns and runs uncompiled.

    On the default VAE with K = 5000 on one thread, 2,500 rows per call ran as fast as 1,000 or faster
    (uncompiled, Pyro's per-call work is a tenth of a 1,000-row call) and faster than 5,000, whose larger
    temporaries the C allocator gave back to the system and took again (page faults) on every call.
    """
    chunks = _Chunks(model, guide, jit and not validate_chunks)
    return _log_likelihood(model, guide, batch, num_samples, max_rows, validate_chunks, chunks)


@measuring()  # training penalties are no part of log p(x): models skip their work
def _log_likelihood(model: Callable, guide: Callable, batch: tuple, num_samples: int, max_rows: int,
                    validate_chunks: bool, chunks: "_Chunks",
                    on_samples: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    if num_samples < 1:
        raise PyroVAEError(f"the number of importance samples must be positive, got {num_samples}")
    batch_size = batch[0].shape[0]
    sites = latent_sites(model, guide, batch)  # traces the whole batch once, with validation as set
    if sites.mismatch is not None:
        raise PyroVAEError(disagreement(batch[0].shape[0], sites.mismatch))
    particle_dim = -sites.max_plate_nesting - 1
    if sites.distributions and not (sites.reparameterized or sites.score_function):
        # every latent is summed out: one "sample" is the exact log p(x); the model's own enumerated chains
        # (pyro.markov) by variable elimination
        if sites.in_guide:
            exact = log_weights(model, guide, batch, 1, particle_dim).logsumexp(0)[0]
        else:
            exact = summed_out_log_likelihood(model, batch, sites.max_plate_nesting)
        if on_samples is not None:
            on_samples(batch_size * num_samples)
        return exact
    particles, points = chunk_shape(batch_size, num_samples, sites.enumerated_values, max_rows,
                                    _splittable(batch, batch_size))
    parts = []
    with contextlib.nullcontext() if validate_chunks else pyro.validation_enabled(False):
        for start in range(0, batch_size, points):
            part = batch if points == batch_size else tuple(arg[start:start + points] for arg in batch)
            log_sum, done = None, 0
            while done < num_samples:
                size = min(particles, num_samples - done)
                chunk = chunks(part, size, particle_dim)
                log_sum = chunk if log_sum is None else torch.logaddexp(log_sum, chunk)
                done += size
                if on_samples is not None:
                    on_samples(size * part[0].shape[0])
            parts.append(log_sum)
    log_sum = parts[0] if len(parts) == 1 else torch.cat(parts)
    return (log_sum - math.log(num_samples)).to(batch[0].dtype)


def chunk_shape(batch_size: int, num_samples: int, values: int = 1, max_rows: int = MAX_ROWS,
                splittable: bool = True) -> tuple[int, int]:
    """(particles, data points) of one chunk of importance samples: as many particles as fit in ``max_rows`` rows
    (times the ``values`` of the enumerated sites), then as many of the batch's points as fit beside them; a batch
    that cannot be split by data point (a non-tensor argument) is taken whole."""
    if splittable:
        particles = max(1, min(num_samples, max_rows // values))
        return particles, max(1, min(batch_size, max_rows // (particles * values)))
    return max(1, min(num_samples, max_rows // (batch_size * values))), batch_size


def _splittable(batch: tuple, batch_size: int) -> bool:
    return all(isinstance(arg, torch.Tensor) and arg.dim() > 0 and arg.shape[0] == batch_size for arg in batch)


class _Chunks:
    """One chunk of importance weights, reduced: log sum_k sum_c w_kc per data point, in float64.

    With ``jit``, each kind of chunk (particles, particle dimension, argument shapes) is recorded once with
    ``torch.jit.trace`` and replayed after that, which skips Pyro's Python work on every call; the random
    draws are part of the graph, so each call draws anew (the same numbers as uncompiled from the same seed).
    The parameters the programs read are inputs of the graph, not constants frozen into it: those of the
    ``nn.Module`` whose methods the programs are (a structure's ``model`` and ``guide``), and the Pyro
    parameters they register (as ``pyro.ops.jit.trace`` passes them). Taking a structure's parameters from
    the structure rather than from Pyro's parameter store keeps the graph right when the store still holds
    another structure's parameters under the same names.
    """

    def __init__(self, model: Callable, guide: Callable, jit: bool = False):
        self.model, self.guide, self.jit = model, guide, jit
        self.compiled: dict = {}

    def eager(self, batch: tuple, particles: int, particle_dim: int) -> torch.Tensor:
        log_w = log_weights(self.model, self.guide, batch, particles, particle_dim)
        return log_w.double().logsumexp(0).logsumexp(0)

    def __call__(self, batch: tuple, particles: int, particle_dim: int) -> torch.Tensor:
        if not self.jit:
            return self.eager(batch, particles, particle_dim)
        key = (particles, particle_dim) + tuple((arg.shape, arg.dtype, arg.device) for arg in batch)
        if key not in self.compiled:
            try:
                self.compiled[key] = self._compile(batch, particles, particle_dim)
            except Exception as error:  # noqa: BLE001 - whatever stops the recording, the plain programs still run
                message = str(error).splitlines()[0] if str(error) else ""
                warnings.warn(f"importance sampling runs uncompiled: torch.jit.trace could not record these "
                              f"programs ({type(error).__name__}: {message})")
                self.jit = False
                return self.eager(batch, particles, particle_dim)
        return self.compiled[key](*batch)

    def _compile(self, batch: tuple, particles: int, particle_dim: int) -> Callable:
        modules = {}
        for program in (self.model, self.guide):
            owner = getattr(program, "__self__", None)
            if isinstance(owner, torch.nn.Module):
                modules.update((id(p), p) for p in owner.parameters())
        module_params = tuple(modules.values())
        with poutine.block(), poutine.trace(param_only=True) as capture:
            self.eager(batch, particles, particle_dim)
        # the other Pyro parameters, looked up by name on every call as pyro.ops.jit does
        names = [name for name, site in capture.trace.nodes.items() if id(_unconstrained(site["value"])) not in modules]
        store = pyro.get_param_store()

        def inputs() -> tuple:
            return module_params + tuple(_unconstrained(store[name]) for name in names)

        count = len(module_params) + len(names)

        def chunk(*tensors):
            return self.eager(tensors[count:], particles, particle_dim)

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")  # torch >= 2.9
            traced = torch.jit.trace(chunk, inputs() + tuple(batch), check_trace=False)
        return lambda *args: traced(*inputs(), *args)


def _unconstrained(value: torch.Tensor) -> torch.Tensor:
    """The tensor that Pyro's parameter store holds for a parameter's (constrained) value."""
    return value.unconstrained() if hasattr(value, "unconstrained") else value


@torch.no_grad()  # without it every chunk's autograd graph stays alive through the running log-sum-exp
def negative_log_likelihood(model: Callable, guide: Callable, batches: Iterable[tuple], *, num_samples: int = 5000,
                            progress: Optional[Callable] = None, jit: bool = False,
                            max_rows: int = MAX_ROWS, on_samples: Optional[Callable[[int], None]] = None) -> float:
    """Average -log p(x) in nats per data point, importance-sampled with ``num_samples`` per data point
    (:func:`log_likelihood_iwae` on each batch; with ``jit``, each kind of chunk is compiled once for all).
    ``progress`` wraps the batches (a bar over batches); ``on_samples(n)`` is told of every chunk of n samples
    drawn (a bar over samples, :class:`pyro_vae.limits.SampleProgress`, for one batch with a huge K)."""
    chunks = _Chunks(model, guide, jit)
    total, count = 0.0, 0
    for batch in (progress(batches) if progress else batches):
        total -= _log_likelihood(model, guide, batch, num_samples, max_rows, False, chunks,
                                 on_samples).sum().item()
        count += batch[0].shape[0]
    return total / count


def evaluate_model(model, batches: list[tuple], *, num_samples: int = 5000, elbo_particles: int = 1,
                   progress: Optional[Callable] = None, jit: bool = False,
                   on_samples: Optional[Callable[[int], None]] = None) -> dict:
    """Test ELBO and importance-sampled NLL of a latent structure, in nats per image (``jit``: see
    :func:`log_likelihood_iwae`; ``progress``, ``on_samples``: see :func:`negative_log_likelihood`)."""
    count = sum(batch[0].shape[0] for batch in batches)
    return {
        "images": count,
        "elbo": elbo_per_datapoint(model.model, model.guide, batches, num_particles=elbo_particles),
        "nll": negative_log_likelihood(model.model, model.guide, batches, num_samples=num_samples,
                                       progress=progress, jit=jit, on_samples=on_samples),
        "num_samples": num_samples,
    }


@torch.no_grad()
@measuring()
def rate_distortion(model: Callable, guide: Callable, batches: Iterable[tuple]) -> dict:
    """Rate E_q[log q(z | x) - log p(z)] (the KL, nats) and distortion -E_q[log p(x | z)] (nats), per data point.

    Latent sites count towards the rate and observed sites towards the distortion, so rate + distortion
    is -ELBO for any model/guide pair. One sample of z per data point; scales are ignored, and training
    penalties are neither counted nor computed (:func:`~pyro_vae.scaling.measuring`).
    """
    rate, distortion, count = 0.0, 0.0, 0
    for batch in batches:
        guide_trace = poutine.trace(guide).get_trace(*batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch)
        for trace, sign in ((model_trace, -1.0), (guide_trace, 1.0)):
            for site in trace.nodes.values():
                if site["type"] != "sample" or site_is_subsample(site) or is_penalty(site):
                    continue
                log_prob = site["fn"].log_prob(site["value"]).sum().item()
                if site["is_observed"]:
                    distortion -= log_prob
                else:
                    rate += sign * log_prob
        count += batch[0].shape[0]
    return {"rate": rate / count, "distortion": distortion / count}
