"""Milliseconds per SVI step of Pyro (the trainer's loop and each ELBO option) against a hand-written PyTorch VAE.

    python benchmarks/svi_vs_pytorch.py [--rounds 20] [--chunk 50] [--batch-size 100] [--threads N]

Every variant trains the same VAE (same initial weights, same batches) in one process. The "train" rows
run ``Trainer.run_steps``, the loop ``pyro-vae train`` itself runs (SVI steps, Pyro validation on the first
step of each call, the NaN check), with the options named; the "plain SVI loop" row is the textbook Pyro
loop (``pyro.optim.Adam``, validation on). The PyTorch loop computes the same single-sample Monte Carlo
ELBO as ``Trace_ELBO`` by hand (``tests/test_benchmark.py`` checks that). Each variant is built, compiled
and warmed up once; then, round after round, every variant trains for one chunk of steps, and its time is
divided by the hand-written loop's in the same round. The table gives the median of these ratios over
rounds and their quartiles, which stay put when the machine's speed drifts between rounds. JIT
compilation happens once per run, before the first step; it is printed below the table.
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
    return pytorch_loss(vae, x, torch.randn(x.shape[0], vae.z_dim))


class HandWritten(Variant):
    """The model written directly in PyTorch: ``loss(model, x)`` draws its noise and returns the -ELBO; Adam."""

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
        self.config = TrainConfig(subset=len(data.train), batch_size=batch_size, lr=lr, **options)
        self.data, self.workdir = data, workdir
        self.compile_seconds = 0.0

    def prepare(self, model: nn.Module) -> None:
        self.trainer = Trainer(self.config, self.workdir / f"run-{id(self)}", dataset=self.data, progress=False,
                               log=lambda _: None)
        self.trainer.model.load_state_dict(model.state_dict())
        self.elbo = type(self.trainer.elbo).__name__
        first = next(iter(self.trainer.batches("train")))
        self.compile_seconds = self.trainer.compile(first)

    def run(self, batches: list[tuple]) -> None:
        self.trainer.run_steps(batches)


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20, help="rounds in which every variant runs one chunk (default 20)")
    parser.add_argument("--chunk", type=int, default=50, help="steps per variant per round (default 50)")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size (default 100, the training default)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def load_chunks(args: argparse.Namespace) -> tuple:
    """Sets the torch threads; returns the data set and its training batches in chunks of ``args.chunk``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(subset=args.chunk * args.batch_size * 4)
    batches = list(iterate_batches(data.train, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0)))
    return data, [batches[i:i + args.chunk] for i in range(0, len(batches), args.chunk)]


def time_variants(variants: dict[str, Variant], initial: nn.Module, chunks: list[list[tuple]],
                  rounds: int) -> dict[str, list[float]]:
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
            start = time.perf_counter()
            variant.run(chunk)
            seconds[name].append((time.perf_counter() - start) / len(chunk))
    return seconds


def print_table(variants: dict[str, Variant], seconds: dict[str, list[float]], args: argparse.Namespace,
                reference: str) -> None:
    """Median ms per step and median (quartiles) of the per-round ratio to the ``reference`` variant."""
    hand = seconds[reference]
    print(f"{args.rounds} rounds of {args.chunk} steps of batch {args.batch_size} per variant, "
          f"{torch.get_num_threads()} threads; medians over rounds")
    print(f"{'variant':<38} {'ELBO class':<24} {'ms/step':>8} {'ratio to pytorch':>17} {'quartiles':>13}")
    for name, times in seconds.items():
        ratios = [t / h for t, h in zip(times, hand)]
        low, mid, high = statistics.quantiles(ratios, n=4)
        print(f"{name:<38} {variants[name].elbo:<24} {statistics.median(times) * 1e3:>8.2f} "
              f"{statistics.median(ratios):>17.3f} {low:>6.2f}-{high:<6.2f}")
    for name, variant in variants.items():
        if getattr(variant, "compile_seconds", 0):
            print(f"JIT compilation, {name}: {variant.compile_seconds:.2f} s, once per run")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    data, chunks = load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="svi-benchmark-"))
    trainer = partial(TrainerSteps, data, args.lr, args.batch_size, workdir)
    variants = {
        "pytorch (hand-written)": HandWritten(args.lr),
        "plain SVI loop (pyro.optim)": PlainSVI(args.lr),
        "train (default)": trainer(),
        "train --no-jit": trainer(jit=False),
        "train --no-jit --validate-every-step": trainer(jit=False, validate_every_step=True),
        "train --elbo meanfield": trainer(elbo="meanfield"),
        "train --elbo meanfield --jit": trainer(elbo="meanfield", jit=True),
    }
    pyro.set_rng_seed(0)
    seconds = time_variants(variants, VAE(), chunks, args.rounds)
    print_table(variants, seconds, args, reference="pytorch (hand-written)")


if __name__ == "__main__":
    main()
