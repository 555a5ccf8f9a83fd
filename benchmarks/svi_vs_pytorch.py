"""Seconds per epoch of Pyro SVI (each ELBO option) against a hand-written PyTorch VAE on the same nets.

    python benchmarks/svi_vs_pytorch.py [--subset 20000] [--epochs 2] [--batch-size 100]

Both sides train the same VAE (same initial weights, same batches) for the same steps in one process;
the PyTorch loop computes the same single-sample Monte Carlo ELBO as ``Trace_ELBO`` by hand. After one
warm-up epoch each, variants take turns for several epochs and the fastest of each is kept.
Prints a table and the ratio Pyro / PyTorch for each option; "default" is what ``pyro-vae train`` runs.
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import pyro
import torch
from pyro.infer import SVI
from torch.distributions import Normal

from pyro_vae.data import iterate_batches, load_dataset
from pyro_vae.inference import make_elbo, optim
from pyro_vae.models import VAE


def pytorch_epoch(vae: VAE, batches: list[torch.Tensor], lr: float) -> None:
    """One epoch of the VAE written directly in PyTorch: reparameterized sample, MC ELBO, Adam."""
    params = list(vae.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    for x in batches:
        loc, scale = vae.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        log_px = -torch.nn.functional.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = Normal(loc, scale).log_prob(z).sum(-1)
        loss = -(log_px + log_pz - log_qz).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()


def pyro_epoch(vae: VAE, batches: list[torch.Tensor], lr: float, elbo: str, jit: bool, optimizer,
               validate: bool = True) -> None:
    """The trainer's SVI step on the same batches (pyro_vae.training uses optim.Adam and make_elbo)."""
    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, optimizer({"lr": lr}), loss=make_elbo(elbo, jit=jit))
    with pyro.validation_enabled(validate):
        for x in batches:
            svi.step(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=20000, help="training images per epoch (default 20000)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per variant; the best is kept (default 3)")
    parser.add_argument("--batch-size", type=int, default=100, help="batch size (default 100, the training default)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(subset=args.subset)
    batches = [x for (x,) in iterate_batches(data.train, args.batch_size, shuffle=True,
                                              generator=torch.Generator().manual_seed(0))]
    pyro.set_rng_seed(0)
    initial = VAE()
    variants = {"pytorch (hand-written)": lambda vae: pytorch_epoch(vae, batches, args.lr)}
    for elbo, jit, optimizer, validate, name in [
        ("trace", False, optim.Adam, True, "pyro trace (default)"),
        ("trace", False, pyro.optim.Adam, True, "pyro trace, pyro.optim.Adam"),
        ("trace", False, optim.Adam, False, "pyro trace, no validation"),
        ("meanfield", False, optim.Adam, True, "pyro meanfield"),
        ("trace", True, optim.Adam, True, "pyro trace --jit"),
        ("meanfield", True, optim.Adam, True, "pyro meanfield --jit"),
    ]:
        variants[name] = lambda vae, e=elbo, j=jit, o=optimizer, v=validate: pyro_epoch(vae, batches, args.lr,
                                                                                         e, j, o, v)
    for run_epoch in variants.values():  # warm-up: first calls pay for lazy initialisation and JIT tracing
        run_epoch(copy.deepcopy(initial))
    # Variants take turns within each round, so a slow spell of the machine hits them all alike.
    seconds = {name: math.inf for name in variants}
    for _ in range(args.epochs):
        for name, run_epoch in variants.items():
            vae = copy.deepcopy(initial)
            start = time.perf_counter()
            run_epoch(vae)
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    baseline = seconds["pytorch (hand-written)"]
    print(f"{len(batches)} steps of batch {args.batch_size} per epoch, {torch.get_num_threads()} threads, "
          f"best of {args.epochs} epochs")
    print(f"{'variant':<30} {'s/epoch':>8} {'ratio to pytorch':>17}")
    for name, value in seconds.items():
        print(f"{name:<30} {value:>8.3f} {value / baseline:>17.3f}")


if __name__ == "__main__":
    main()
