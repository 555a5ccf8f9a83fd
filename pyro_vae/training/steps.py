"""The hot path of training: SVI steps (JIT-compiled where they can be), KL warm-up, and divergence, told apart
from a loss that is merely large."""
from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from typing import Callable, Iterable, Optional

import pyro
import torch
from pyro.infer import SVI

from pyro_vae.catalog import CHECKPOINT, OPTIMIZER_NAMES, check_registry
from pyro_vae.errors import PyroVAEError, TrainingDiverged, first_line, user_line
from pyro_vae.inference import make_elbo, optim
from pyro_vae.inference.compiled_step import CompiledStep
from pyro_vae.scaling import scale_latents
from pyro_vae.inference.baselines import neural_baselines, with_baselines
from pyro_vae.inference.sites import SITE_MISMATCH, mismatch_in_words


OPTIMIZERS = {"adam": optim.Adam, "fused-adam": optim.FusedAdam, "clipped-adam": optim.ClippedAdam}
check_registry("optimizer", OPTIMIZERS, OPTIMIZER_NAMES)
#: a loss per image this many times its first value in a session (or the pixel count) counts as divergence
DIVERGENCE_GROWTH = 1e4
JIT_WARMUP_CALLS = 4
class Steps:
    """The parts of :class:`~pyro_vae.training.Trainer` that take SVI steps."""

    def _build_svi(self) -> None:
        """The optimizer, the ELBO (JIT-compiled or not) and ``SVI`` over the structure's programs; with
        ``--elbo tracegraph``, the guide with its score-function baselines."""
        config = self.config
        self.baseline_networks = (neural_baselines(self.sites, self.dataset.train.images.shape[1]).to(self.device)
                                  if config.elbo == "tracegraph" and config.baseline == "neural" else None)
        optimizer_args = {"lr": config.lr, "eps": config.adam_eps, "betas": tuple(config.adam_betas)}
        if config.optimizer == "clipped-adam":
            optimizer_args["clip_norm"] = config.clip_norm
        self.optimizer = OPTIMIZERS[config.optimizer](optimizer_args)
        if self.dist is not None:
            self.optimizer.before_step = self._sum_gradients
            if getattr(self.model, "batch_coupled", False) and self.dist.is_main:
                self.log(f"note: {config.model} couples the images of a batch (e.g. a minibatch estimate); each of "
                         f"the {self.dist.world_size} processes computes it on its own shard, so this run is not "
                         "one process's run on the whole batch")
        self.jit = config.uses_jit()
        self.elbo = make_elbo(config.elbo, jit=self.jit, num_particles=config.num_particles,
                              max_plate_nesting=self.max_plate_nesting, alpha=config.alpha,
                              outer_particles=config.outer_particles, ciwae_beta=config.ciwae_beta)
        self.compiled = not self.jit
        #: after compile: SVI's step on the compiled graphs without Pyro's per-step parameter lookups
        self.compiled_step: Optional[CompiledStep] = None
        guide = self.model.guide
        if config.elbo == "tracegraph":
            guide = with_baselines(guide, config.baseline, self.baseline_networks)
        self.svi = SVI(self._warmed_up(self.model.model), self._warmed_up(guide), self.optimizer, loss=self.elbo)
        #: a batch of one image changes the shapes of the enumerated sum's contractions (a dimension of size one
        #: broadcasts), so a graph compiled on larger batches cannot take it: such a batch (the epoch's last, a
        #: process's shard) steps with the same ELBO uncompiled, on the same parameters and optimizer
        self.svi_single = (SVI(self.svi.model, self.svi.guide, self.optimizer,
                               loss=make_elbo(config.elbo, max_plate_nesting=self.max_plate_nesting))
                           if self.jit and config.elbo == "enum" else None)

    def kl_weight(self) -> float:
        """The KL warm-up factor: rises linearly from 0 to 1 over ``kl_warmup`` epochs of steps."""
        if not self.config.kl_warmup:
            return 1.0
        return min(1.0, self.step / (self.config.kl_warmup * self.steps_per_epoch))

    def _warmed_up(self, program: Callable) -> Callable:
        """With KL warm-up, ``program`` taking the KL weight as a last, tensor argument.

        A tensor argument, not a number read inside, so that a JIT-compiled ELBO sees each step's weight
        instead of freezing the one it was traced with.
        """
        if not self.config.kl_warmup:
            return program

        def scaled(*args):
            *args, weight = args
            with scale_latents(weight):
                return program(*args)

        return scaled

    def _step_args(self, batch: tuple) -> tuple:
        if not self.config.kl_warmup:
            return batch
        return (*batch, torch.tensor(self.kl_weight(), device=self.device))

    def compile(self, batch: tuple) -> float:
        """Trace and optimize the JIT-compiled ELBO on ``batch``, and on a batch of every other kind the
        programs take (labelled, for semi-supervised structures), since Pyro compiles one graph per kind of
        arguments (nothing to do without JIT); returns the seconds.

        Tracing runs the model and guide, which draws random numbers; it runs with the random state saved
        and restored, and its gradients are dropped, so that it changes nothing: a resumed run, which traces
        again, draws the same numbers as an uninterrupted one. Pyro validation is on while the programs
        run here, so a structure's mistakes surface with Pyro's messages before any step is taken.
        """
        if self.compiled:
            return 0.0
        start = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        averages = self._baseline_averages()
        with torch.random.fork_rng(devices=devices), pyro.validation_enabled(True):
            # The first call traces; TorchScript then profiles and optimizes the graph and its backward on
            # the next runs (tens of milliseconds here), which would otherwise land on the first training steps.
            for example in [batch] + [b for b in self._example if len(b) != len(batch)]:
                for _ in range(JIT_WARMUP_CALLS):
                    self.elbo.loss_and_grads(self.svi.model, self.svi.guide, *self._step_args(example))
            self._restore_baseline_averages(averages)
        for parameter in self._parameters():
            parameter.grad = None
        self.compiled = True
        self.compiled_step = CompiledStep.of(self.elbo, self.optimizer)
        return time.perf_counter() - start

    def _parameters(self) -> list:
        networks = list(self.baseline_networks.parameters()) if self.baseline_networks is not None else []
        return list(self.model.parameters()) + networks

    def run_steps(self, batches: Iterable[tuple], *, on_step: Optional[Callable[[int, float], object]] = None,
                  first_step: int = 1) -> float:
        """One SVI step per batch (the hot path of ``fit``); returns the summed loss. ``first_step`` is the number
        within the epoch of the first batch, for a caller that runs an epoch in pieces (the speed benchmarks), so
        that the pieces keep the epoch's schedule of validated steps.

        Steps 1, 2, 4, 8, ... and the last of each epoch run with Pyro validation on (a program whose sites change
        after a while is refused by the step after twice as long, or on the epoch's last, smaller batch, at a cost of
        a few steps in a thousand); the others run
        with it off unless ``validate_every_step`` is set, because the data were checked once up front and Pyro's
        per-step argument checks cost about a tenth of a step on the default VAE. A loss that is NaN or infinite
        stops training with ``TrainingDiverged`` either way (Pyro's own two-line NaN warning is silenced here:
        the sentence says more). With ``JitTrace_ELBO`` the steps that are not validated run Pyro's compiled graph
        through :class:`CompiledStep` (the same arithmetic as ``SVI.step``, without its per-step parameter lookups).
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN: loss")
            return self._run_steps(batches, on_step, first_step)

    def _run_steps(self, batches: Iterable[tuple], on_step: Optional[Callable[[int, float], object]],
                   first_step: int) -> float:
        total = 0.0
        for step, batch in enumerate(batches, start=first_step):
            if batch[0].shape[0] == 0:  # distributed: this process's shard of a short last batch is empty
                self._empty_step()
                continue
            if step == first_step:
                self.compile(batch)
            # a power of two, or the epoch's last (often smaller) batch
            validate = step & (step - 1) == 0 or step == self.steps_per_epoch or self.config.validate_every_step
            args = self._step_args(batch)
            single = self.svi_single is not None and batch[0].shape[0] == 1
            loss = None if validate or single or self.compiled_step is None else self.compiled_step(*args)
            if loss is None:
                loss = self._svi_step(args, validate, self.svi_single) if single else self._svi_step(args, validate)
            if not math.isfinite(loss) or abs(loss) / batch[0].shape[0] > self._divergence_bound(loss / batch[0].shape[0]):
                raise TrainingDiverged(self._divergence_message(loss, step))
            self.step += 1
            total += loss
            if on_step is not None:
                on_step(step, total)
        return total

    def _svi_step(self, args: tuple, validate: bool, svi: Optional[SVI] = None) -> float:
        """``SVI.step`` with Pyro validation on or off; NaN where validation refused the NaN that diverged.

        A validated step also refuses programs whose latent sites stopped matching after the check at the door
        (Pyro only warns, and the ELBO is then no bound on log p(x)), as one sentence."""
        with pyro.validation_enabled(validate), (warnings.catch_warnings() if validate else contextlib.nullcontext()):
            if validate:
                warnings.filterwarnings("error", message=SITE_MISMATCH, category=UserWarning)
            try:
                return (svi or self.svi).step(*args)
            except UserWarning as err:
                if not re.match(SITE_MISMATCH, str(err)):  # another warning made an error (python -W error)
                    raise
                raise PyroVAEError(f"the structure {self.config.model}: at step {self.step + 1} (epoch "
                                   f"{self.epoch + 1}) {mismatch_in_words(str(err))}, though its sites matched when "
                                   "training began (the ELBO would be no bound on log p(x)); a model and guide must "
                                   f"sample the same latent sites on every call; {self._kept()}") from None
            except ValueError as err:
                # Pyro's validation refuses NaN distribution arguments before the loss can show them.
                if isinstance(err, PyroVAEError) or not self._diverged(err):
                    self._refuse_structure_error(err)
                    raise
                if self.dist is not None:  # stopped before its gradients: let the others know
                    self._share_divergence()
                return math.nan
            except (PyroVAEError, MemoryError):
                raise
            except Exception as err:  # noqa: BLE001 - a structure file's mistake on a later batch: one sentence
                self._refuse_structure_error(err)
                raise

    def _refuse_structure_error(self, err: Exception) -> None:
        """A structure from a file that raised during a step (the door check ran it once; a program can still
        fail later, on another batch or call): one sentence naming the error and the line of the file. A
        built-in structure's error is ours, and an allocation that failed is said as such: both pass through."""
        if self.structure_source is None or isinstance(err, PyroVAEError) or "allocate" in str(err) \
                or "out of memory" in str(err).lower():
            return
        raise PyroVAEError(f"the structure {self.config.model}: at step {self.step + 1} (epoch {self.epoch + 1}) its "
                           f"guide or model raised {type(err).__name__}{user_line(err, self.structure_source['file'])}: "
                           f"{first_line(err)}; {self._kept()}") from None

    def _diverged(self, err: ValueError) -> bool:
        """Whether a step's ValueError is divergence: non-finite parameters, or NaN/Inf that validation found."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            return True
        _, found, values = str(err).partition("found invalid values")
        return bool(found) and any(bad in values.split("Trace Shapes")[0] for bad in ("nan", "inf"))

    def _divergence_bound(self, loss_per_image: float) -> float:
        """How large a loss per image may grow before it counts as divergence, like NaN: :data:`DIVERGENCE_GROWTH`
        times the first loss of this session (or the number of pixels, if larger). A learning rate far too large
        sends the loss up by many orders of magnitude while it stays finite (--lr 1e6: 1e31 nats)."""
        if self._first_loss is None and math.isfinite(loss_per_image):
            self._first_loss = abs(loss_per_image)
        return DIVERGENCE_GROWTH * max(self._first_loss or 0.0, self.dataset.train.images[0].numel(), 1.0)

    def _divergence_message(self, loss: float, step: int) -> str:
        grew = "" if not math.isfinite(loss) else (f" nats, more than {DIVERGENCE_GROWTH:.0e} times its first value "
                                                  f"({self._first_loss:.4g} nats per image)")
        where = f"the loss became {loss:.4g}{grew} at step {self.step + 1} (epoch {self.epoch + 1}, batch {step})"
        return f"{where}; {self._kept()}; {self._divergence_causes()}"

    def _kept(self) -> str:
        return ("no checkpoint had been written yet" if self.epoch == 0 else
                f"the last good checkpoint (epoch {self.epoch}) is kept in {self.run_dir / CHECKPOINT}")

    def _divergence_causes(self) -> str:
        """What may have made the loss non-finite, from this run's settings."""
        config = self.config
        causes = []
        if self.structure_source is not None:
            causes.append(f"the structure in {self.structure_source['file']} producing NaN or Inf (check its model "
                          "and guide)")
        beta = config.model_options.get("beta")
        if beta is not None and beta > 1:
            causes.append(f"a large KL weight (beta {beta:g})")
        if config.optimizer == "clipped-adam" and config.clip_norm > 100:
            causes.append(f"a loose --clip-norm {config.clip_norm:g}")
        causes.append(f"a learning rate too large for this model (--lr {config.lr:g}: try a smaller one)")
        return "possible causes: " + "; ".join(causes)
