"""Milliseconds per training step of the IAF VAE (``train --model iaf-vae``) against the same networks trained by a
loss written by hand in PyTorch.

    python benchmarks/flow_vs_pytorch.py [--rounds 20] [--chunk 20] [--batch-size 100] [--threads N]
                                         [--clock wall|thread]

The hand-written loop runs the structure's own encoder, context network, MADEs and decoder, and writes the
rest out: z_0 = loc + scale * eps, each IAF step z <- exp(log sigma) * z + mu with (mu, log sigma) from the MADE
of (z, h(x)) (log sigma clamped to [-5, 3] with its gradient kept, as Pyro does), the order of z reversed
between steps, log q = log N(z_0) - sum of the log sigmas, and the Bernoulli and N(0, I) densities by hand; Adam.
``tests/benchmarks/test_flow_vs_pytorch.py`` checks that this loss is the library's -ELBO on the same draw.
Timing as in ``svi_vs_pytorch.py``: variants take turns each round, each round's time is divided by the
hand-written loop's, and the table gives the median ratio and its quartiles.
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
from functools import partial
from pathlib import Path

import pyro
import torch
from pyro.distributions.transforms import Permute
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.models import MODELS

_spec = importlib.util.spec_from_file_location("svi_vs_pytorch", Path(__file__).with_name("svi_vs_pytorch.py"))
svi_vs_pytorch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(svi_vs_pytorch)
LOG_SQRT_2PI = svi_vs_pytorch.LOG_SQRT_2PI
#: Pyro's AffineAutoregressive clips log sigma to this range (its gradient passes unclipped)
LOG_SCALE_CLIP = (-5.0, 3.0)


def iaf_loss(vae, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of a batch for the draw z_0 = loc + scale * eps pushed through the IAF, written out."""
    loc, scale = vae.encoder(x)
    h = vae.context(x)
    z = loc + scale * eps
    log_q = (-0.5 * eps.pow(2) - scale.log() - LOG_SQRT_2PI).sum(-1)
    for step in vae._steps:
        if isinstance(step, Permute):
            z = z[..., step.permutation]
            continue
        mean, log_scale = step.nn(z, context=h)
        log_scale = log_scale + (log_scale.clamp(*LOG_SCALE_CLIP) - log_scale).detach()
        z = torch.exp(log_scale) * z + mean
        log_q = log_q - log_scale.sum(-1)
    log_px = -binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum(-1)
    return -(log_px + log_pz - log_q).sum()


def sampled_iaf_loss(vae, x: torch.Tensor) -> torch.Tensor:
    return iaf_loss(vae, x, torch.randn(x.shape[0], vae.z_dim, device=x.device))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    svi_vs_pytorch.add_timing_arguments(parser)
    svi_vs_pytorch.add_clock_argument(parser)
    parser.set_defaults(chunk=20)
    args = parser.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the CPU time of one thread only: pass --threads 1")
    data, chunks = svi_vs_pytorch.load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="flow-benchmark-"))
    trainer = partial(svi_vs_pytorch.TrainerSteps, data, args.lr, args.batch_size, workdir)
    variants = {
        "pytorch IAF VAE (hand-written)": svi_vs_pytorch.HandWritten(args.lr, sampled_iaf_loss),
        "train --model iaf-vae": trainer(model="iaf-vae"),
        "train --model iaf-vae --no-jit": trainer(model="iaf-vae", jit=False),
    }
    pyro.set_rng_seed(0)
    seconds = svi_vs_pytorch.time_variants(variants, MODELS["iaf-vae"]().to(args.device), chunks, args.rounds,
                                           svi_vs_pytorch.CLOCKS[args.clock])
    svi_vs_pytorch.print_table(variants, seconds, args, reference="pytorch IAF VAE (hand-written)",
                               title="IAF VAE (4 steps), ratios to the same networks trained by hand: ")


if __name__ == "__main__":
    main()
