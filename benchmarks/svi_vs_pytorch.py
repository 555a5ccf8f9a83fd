"""Milliseconds per SVI step of Pyro (the trainer's loop and each ELBO option) against a hand-written PyTorch VAE.

    python benchmarks/svi_vs_pytorch.py [--rounds 20] [--chunk 50] [--batch-size 100] [--threads N]
                                        [--iwae-particles 5] [--no-iwae | --only-iwae | --only-conv] [--no-conv]
                                        [--clock wall|thread]

Every variant trains the same VAE (same initial weights, same batches) in one process. The "train" rows
run ``Trainer.run_steps``, the loop ``pyro-vae train`` itself runs (SVI steps, Pyro validation on the first
step of each call, the NaN check), with the options named; the "plain SVI loop" row is the textbook Pyro
loop (``pyro.optim.Adam``, validation on). The PyTorch loop computes the same single-sample Monte Carlo
ELBO as ``Trace_ELBO`` by hand (``tests/benchmarks/test_svi_vs_pytorch.py`` checks that). Each variant is built, compiled
and warmed up once; then, round after round, every variant trains for one chunk of steps, and its time is
divided by the hand-written loop's in the same round. The table gives the median of these ratios over
rounds and their quartiles, which stay put when the machine's speed drifts between rounds. JIT
compilation happens once per run, before the first step; it is printed below the table. On a machine that
other jobs keep busy, ``--threads 1 --clock thread`` times the CPU time of the benchmark's one thread
instead of the wall clock, so that the time other processes take the core away is not counted.

A second table times IWAE training (``train --elbo iwae --num-particles K``, eager and ``--jit``) against a
hand-written IWAE loop: K particles drawn in one vectorized pass (noise of shape (K, batch, z)), the loss
-sum_b log (1/K) sum_k w_kb, the same Adam. Its rounds run after the first table's, its ratios are to the
hand-written IWAE loop (``tests/benchmarks/test_svi_vs_pytorch.py`` checks that its loss is ``IWAE_ELBO``'s). With K = 50 a
step costs about eight times one of K = 5: pass a smaller ``--chunk`` (and ``--only-iwae``).

A third table times the convolutional VAE (``train --net conv``: the 32-64-channel network for 28 x 28,
Bernoulli pixels) against the same network trained by the same hand-written loss (``pytorch_loss`` calls
the structure's encoder and decoder, whichever they are).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import pyro
import torch
from pyro.infer import SVI
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.data import iterate_batches, load_dataset
from pyro_vae.inference import make_elbo
from pyro_vae.models import VAE
from pyro_vae.training import TrainConfig, Trainer


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def pytorch_loss(vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of a batch for one sample z = loc + scale * eps, written out: what Trace_ELBO computes.

    Densities are written by hand, not through torch.distributions (whose argument checks cost time), so
    that the baseline is as fast as a careful hand-written loop.
    """
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    log_px = -binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum(-1)
    log_qz = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI).sum(-1)
    return -(log_px + log_pz - log_qz).sum()


class Variant:
    """One way of training: ``prepare`` builds it once, ``run(batches)`` takes one SVI/Adam step per batch.

    Every variant keeps its own model and optimizer for the whole benchmark. The Pyro variants register
    parameters under the same names, so each one's param store is swapped in before it runs.
    """

    elbo = "-"

    def prepare(self, model: nn.Module) -> None:
        raise NotImplementedError

    def run(self, batches: list[tuple]) -> None:
        raise NotImplementedError


def sampled_pytorch_loss(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    return pytorch_loss(vae, x, torch.randn(x.shape[0], vae.z_dim, device=x.device))


def pytorch_iwae_loss(vae: VAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Minus the IWAE bound of a batch, summed over it, for K samples z_k = loc + scale * eps_k, written out:
    ``eps`` has shape (K, batch, z); the encoder runs once, the decoder once on all K x batch codes;
    log w_kb = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b), and the loss is -sum_b logmeanexp_k log w_kb.
    """
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    logits = vae.decoder(z)
    log_px = -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum(-1)
    log_qz = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI).sum(-1)
    log_w = log_px + log_pz - log_qz
    return -(log_w.logsumexp(0) - math.log(eps.shape[0])).sum()


def sampled_pytorch_iwae_loss(num_particles: int, vae: VAE, x: torch.Tensor) -> torch.Tensor:
    return pytorch_iwae_loss(vae, x, torch.randn(num_particles, x.shape[0], vae.z_dim, device=x.device))


class HandWritten(Variant):
    """The model written directly in PyTorch: ``loss(model, x)`` draws its noise and returns the loss (the -ELBO,
    or minus the IWAE bound); Adam."""

    def __init__(self, lr: float, loss: Callable[[nn.Module, torch.Tensor], torch.Tensor] = sampled_pytorch_loss):
        self.lr, self.loss = lr, loss

    def prepare(self, model: nn.Module) -> None:
        # foreach: the multi-tensor kernels the trainer's Adam uses too (torch's default only on GPUs)
        self.model, self.optimizer = model, torch.optim.Adam(model.parameters(), lr=self.lr, foreach=True)

    def run(self, batches: list[tuple]) -> None:
        for (x,) in batches:
            loss = self.loss(self.model, x)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()


class PlainSVI(Variant):
    """The textbook Pyro loop: SVI with Trace_ELBO and pyro.optim.Adam, validation on (Pyro's default)."""

    elbo = "Trace_ELBO"

    def __init__(self, lr: float):
        self.lr = lr

    def prepare(self, vae: VAE) -> None:
        pyro.clear_param_store()
        self.svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": self.lr}), loss=make_elbo("trace"))

    def run(self, batches: list[tuple]) -> None:
        with pyro.validation_enabled(True):
            for (x,) in batches:
                self.svi.step(x)


class TrainerSteps(Variant):
    """``Trainer.run_steps``, the loop of ``pyro-vae train``, with the given options; compiled in ``prepare``."""

    def __init__(self, data, lr: float, batch_size: int, workdir: Path, **options):
        device = "cuda" if data.train.images.is_cuda else "cpu"
        self.config = TrainConfig(subset=len(data.train), batch_size=batch_size, lr=lr, device=device, **options)
        self.data, self.workdir = data, workdir
        self.compile_seconds = 0.0
        self.position = 0  # steps of the current epoch already run

    def prepare(self, model: nn.Module) -> None:
        self.trainer = Trainer(self.config, self.workdir / f"run-{id(self)}", dataset=self.data, progress=False,
                               log=lambda _: None)
        self.trainer.model.load_state_dict(model.state_dict())
        self.elbo = type(self.trainer.elbo).__name__
        first = next(iter(self.trainer.batches("train")))
        self.compile_seconds = self.trainer.compile(first)

    def run(self, batches: list[tuple]) -> None:
        # The chunks of the rounds are pieces of epochs: each keeps its place in the epoch, so that the steps run
        # validated (1, 2, 4, ..., 256 and the last of each epoch's 500 at the defaults: 2 %) are those of
        # `pyro-vae train`, not the first steps of every chunk (a third of a chunk of 20).
        per_epoch = self.trainer.steps_per_epoch
        self.trainer.run_steps(batches, first_step=self.position + 1)
        self.position = (self.position + len(batches)) % per_epoch


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20, help="rounds in which every variant runs one chunk (default 20)")
    parser.add_argument("--chunk", type=int, default=50, help="steps per variant per round (default 50)")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size (default 100, the training default)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every variant on it; times wait for the GPU)")


def add_iwae_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--iwae-particles", type=int, default=5, metavar="K",
                        help="particles of the IWAE table's variants (default 5)")
    part = parser.add_mutually_exclusive_group()
    part.add_argument("--no-iwae", action="store_true", help="skip the IWAE table")
    part.add_argument("--only-iwae", action="store_true", help="time only the IWAE table")
    part.add_argument("--only-conv", action="store_true", help="time only the convolutional VAE table")
    parser.add_argument("--no-conv", action="store_true", help="skip the convolutional VAE table")


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall (default): elapsed time; thread: CPU time of the benchmark's thread, which leaves "
                             "out the time other processes hold the core (needs --threads 1, torch's workers being "
                             "other threads)")


def load_chunks(args: argparse.Namespace) -> tuple:
    """Sets the torch threads; returns the data set and its training batches in chunks of ``args.chunk``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(subset=args.chunk * args.batch_size * 4, device=args.device)
    batches = list(iterate_batches(data.train, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
    return data, [batches[i:i + args.chunk] for i in range(0, len(batches), args.chunk)]


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_variants(variants: dict[str, Variant], initial: nn.Module, chunks: list[list[tuple]],
                  rounds: int, clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds per step of every variant in every round, each starting from a copy of ``initial``."""
    stores = {}
    for name, variant in variants.items():  # build, compile and warm up every variant on one chunk
        variant.prepare(copy.deepcopy(initial))
        variant.run(chunks[0])
        stores[name] = pyro.get_param_store().get_state()
    # Variants take turns within each round, so a slow spell of the machine hits a round's variants alike;
    # each variant's time is compared with the hand-written loop's in the same round.
    seconds = {name: [] for name in variants}
    for r in range(rounds):
        chunk = chunks[r % len(chunks)]
        for name, variant in variants.items():
            pyro.clear_param_store()
            pyro.get_param_store().set_state(stores[name])
            synchronize()
            start = clock()
            variant.run(chunk)
            synchronize()  # a GPU's queued work belongs to this variant's time
            seconds[name].append((clock() - start) / len(chunk))
    return seconds


def print_table(variants: dict[str, Variant], seconds: dict[str, list[float]], args: argparse.Namespace,
                reference: str, title: str = "", ratio_label: str = "ratio to pytorch") -> None:
    """Median ms per step and median (quartiles) of the per-round ratio to the ``reference`` variant."""
    hand = seconds[reference]
    clock = "; CPU time of the thread" if getattr(args, "clock", "wall") == "thread" else ""
    print(f"{title}{args.rounds} rounds of {args.chunk} steps of batch {args.batch_size} per variant, "
          f"{torch.get_num_threads()} threads{clock}; medians over rounds")
    width = max(38, *map(len, variants))
    elbo_width = max(24, *(len(variant.elbo) for variant in variants.values()))
    print(f"{'variant':<{width}} {'ELBO class':<{elbo_width}} {'ms/step':>8} {ratio_label:>17} {'quartiles':>13}")
    for name, times in seconds.items():
        ratios = [t / h for t, h in zip(times, hand)]
        low, mid, high = statistics.quantiles(ratios, n=4)
        print(f"{name:<{width}} {variants[name].elbo:<{elbo_width}} {statistics.median(times) * 1e3:>8.2f} "
              f"{statistics.median(ratios):>17.3f} {low:>6.2f}-{high:<6.2f}")
    for name, variant in variants.items():
        if getattr(variant, "compile_seconds", 0):
            print(f"JIT compilation, {name}: {variant.compile_seconds:.2f} s, once per run")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser)
    add_iwae_arguments(parser)
    add_clock_argument(parser)
    args = parser.parse_args(argv)
    if args.iwae_particles < 1:
        parser.error("--iwae-particles must be positive")
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the CPU time of one thread only: pass --threads 1")
    data, chunks = load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="svi-benchmark-"))
    trainer = partial(TrainerSteps, data, args.lr, args.batch_size, workdir)
    tables = []
    if not (args.only_iwae or args.only_conv):
        tables.append(time_elbo_table)
    if not (args.no_iwae or args.only_conv):
        tables.append(time_iwae_table)
    if not (args.no_conv or args.only_iwae):
        tables.append(time_conv_table)
    for i, table in enumerate(tables):
        if i:
            print()
        table(args, trainer, chunks)


def time_elbo_table(args: argparse.Namespace, trainer: Callable, chunks: list) -> None:
    variants = {
        "pytorch (hand-written)": HandWritten(args.lr),
        "plain SVI loop (pyro.optim)": PlainSVI(args.lr),
        "train (default)": trainer(),
        "train --no-jit": trainer(jit=False),
        "train --no-jit --validate-every-step": trainer(jit=False, validate_every_step=True),
        "train --elbo meanfield (JIT)": trainer(elbo="meanfield"),
        "train --elbo meanfield --no-jit": trainer(elbo="meanfield", jit=False),
    }
    pyro.set_rng_seed(0)
    seconds = time_variants(variants, VAE().to(args.device), chunks, args.rounds, CLOCKS[args.clock])
    print_table(variants, seconds, args, reference="pytorch (hand-written)")


def time_iwae_table(args: argparse.Namespace, trainer: Callable, chunks: list) -> None:
    """The IWAE bound with K = ``args.iwae_particles``, eager and JIT, against the hand-written IWAE loop."""
    k = args.iwae_particles
    variants = {
        f"pytorch IWAE K={k} (hand-written)": HandWritten(args.lr, partial(sampled_pytorch_iwae_loss, k)),
        f"train --elbo iwae --num-particles {k}": trainer(elbo="iwae", num_particles=k),
        f"train --elbo iwae --num-particles {k} --jit": trainer(elbo="iwae", num_particles=k, jit=True),
    }
    pyro.set_rng_seed(0)
    seconds = time_variants(variants, VAE().to(args.device), chunks, args.rounds, CLOCKS[args.clock])
    print_table(variants, seconds, args, reference=f"pytorch IWAE K={k} (hand-written)",
                title=f"IWAE, K = {k}, ratios to the hand-written IWAE loop: ")


def time_conv_table(args: argparse.Namespace, trainer: Callable, chunks: list) -> None:
    """The convolutional VAE of ``--net conv`` against the same network trained by the hand-written loss."""
    variants = {
        "pytorch conv VAE (hand-written)": HandWritten(args.lr),
        "train --net conv": trainer(net="conv"),
        "train --net conv --no-jit": trainer(net="conv", jit=False),
    }
    pyro.set_rng_seed(0)
    seconds = time_variants(variants, VAE(net="conv").to(args.device), chunks, args.rounds, CLOCKS[args.clock])
    print_table(variants, seconds, args, reference="pytorch conv VAE (hand-written)",
                title="Convolutional VAE (--net conv), ratios to the same network trained by hand: ")


if __name__ == "__main__":
    main()
