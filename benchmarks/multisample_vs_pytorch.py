"""Milliseconds per training step of each multi-sample objective (``train --elbo NAME``) against the same estimator
written by hand in PyTorch, on the default VAE.

    python benchmarks/multisample_vs_pytorch.py [--rounds 20] [--chunk 20] [--particles 8] [--threads N]
                                                [--clock wall|thread] [--only stl,dreg,...]

For each objective the hand-written loop draws its noise of shape (K, batch, z) once, runs the encoder once and
the decoder once on all K x batch codes, writes the densities out (no torch.distributions) and steps Adam on the
estimator's surrogate: STL holds q's parameters fixed inside log q; DReG does the same, weighs each draw's
gradient by its normalized weight (a hook on z) and ascends sum_k w~_k log w_k; MIWAE and PIWAE take M = 2
bounds of K / 2 draws (PIWAE gives the encoder the MIWAE gradient and the decoder the IWAE one through
``torch.autograd.grad``); CIWAE mixes the ELBO and the IWAE bound at beta 0.5; RWS cuts z from the graph and adds
-sum_k w~_k log q(z_k | x); Renyi takes alpha 0.5; TMC on one latent site is the IWAE bound. VIMCO needs a
discrete structure and has no row here. Timing as in ``svi_vs_pytorch.py``: variants take turns each round, each
round's time is divided by its hand-written loop's, and the table gives the median ratio and its quartiles.
``tests/benchmarks/test_multisample_vs_pytorch.py`` checks that each hand-written loss has the library's value
and gradients on the same draw.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import tempfile
from functools import partial
from pathlib import Path

import pyro
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.models import VAE

_spec = importlib.util.spec_from_file_location("svi_vs_pytorch", Path(__file__).with_name("svi_vs_pytorch.py"))
svi_vs_pytorch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(svi_vs_pytorch)

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
OUTER = 2  # MIWAE's and PIWAE's M
BETA = 0.5  # CIWAE's
ALPHA = 0.5  # Renyi's


def _parts(vae: VAE, x: torch.Tensor, eps: torch.Tensor, *, detach_q: bool = False, detach_z: bool = False):
    """z, log p(x, z) and log q(z | x), each (K, batch), written out."""
    loc, scale = vae.encoder(x)
    z = loc + scale * eps
    if detach_z:
        z = z.detach()
    logits = vae.decoder(z)
    log_px = -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    log_pz = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum(-1)
    q_loc, q_scale = (loc.detach(), scale.detach()) if detach_q else (loc, scale)
    log_qz = (-0.5 * ((z - q_loc) / q_scale).pow(2) - q_scale.log() - LOG_SQRT_2PI).sum(-1)
    return z, log_px + log_pz, log_qz


def _log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return values.logsumexp(dim) - math.log(values.shape[dim])


def stl_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps, detach_q=True)
    return -(log_p - log_q).mean(0).sum()


def dreg_loss(vae, x, eps):
    z, log_p, log_q = _parts(vae, x, eps, detach_q=True)
    log_w = log_p - log_q
    weights = torch.softmax(log_w.detach(), 0)
    z.register_hook(lambda grad: grad * weights.unsqueeze(-1))
    return -(weights * log_w).sum()


def miwae_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps)
    log_w = (log_p - log_q).reshape(OUTER, -1, x.shape[0])
    return -_log_mean_exp(log_w, 1).mean(0).sum()


def ciwae_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps)
    log_w = log_p - log_q
    return -(BETA * log_w.mean(0) + (1 - BETA) * _log_mean_exp(log_w)).sum()


def rws_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps, detach_z=True)
    log_w = log_p - log_q.detach()
    weights = torch.softmax(log_w.detach(), 0)
    return -_log_mean_exp(log_w).sum() - (weights * log_q).sum()


def renyi_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps)
    return -(_log_mean_exp((1 - ALPHA) * (log_p - log_q)) / (1 - ALPHA)).sum()


def iwae_loss(vae, x, eps):
    _, log_p, log_q = _parts(vae, x, eps)
    return -_log_mean_exp(log_p - log_q).sum()


LOSSES = {"stl": stl_loss, "dreg": dreg_loss, "miwae": miwae_loss, "ciwae": ciwae_loss, "rws": rws_loss,
          "renyi": renyi_loss, "tmc": iwae_loss}


class HandWrittenPIWAE(svi_vs_pytorch.HandWritten):
    """PIWAE by hand: the encoder's gradient of MIWAE(M, K), the decoder's of IWAE(M K), on the same draws."""

    def __init__(self, lr: float, draws: int):
        super().__init__(lr)
        self.draws = draws

    def run(self, batches: list[tuple]) -> None:
        encoder, decoder = list(self.model.encoder.parameters()), list(self.model.decoder.parameters())
        for (x,) in batches:
            eps = torch.randn(self.draws, x.shape[0], self.model.z_dim, device=x.device)
            _, log_p, log_q = _parts(self.model, x, eps)
            log_w = log_p - log_q
            iwae = -_log_mean_exp(log_w).sum()
            miwae = -_log_mean_exp(log_w.reshape(OUTER, -1, x.shape[0]), 1).mean(0).sum()
            self.optimizer.zero_grad()
            for params, grads in ((encoder, torch.autograd.grad(miwae, encoder, retain_graph=True)),
                                  (decoder, torch.autograd.grad(iwae, decoder))):
                for param, grad in zip(params, grads):
                    param.grad = grad
            self.optimizer.step()
            iwae.item()


def sampled(loss, draws: int, vae: VAE, x: torch.Tensor) -> torch.Tensor:
    return loss(vae, x, torch.randn(draws, x.shape[0], vae.z_dim, device=x.device))


def trainer_options(name: str, draws: int) -> dict:
    if name in ("miwae", "piwae"):
        return {"elbo": name, "num_particles": draws // OUTER, "outer_particles": OUTER}
    extra = {"ciwae": {"ciwae_beta": BETA}, "renyi": {"alpha": ALPHA}}.get(name, {})
    return {"elbo": name, "num_particles": draws, **extra}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    svi_vs_pytorch.add_timing_arguments(parser)
    svi_vs_pytorch.add_clock_argument(parser)
    parser.add_argument("--particles", type=int, default=8, help="draws per image K (MIWAE, PIWAE: 2 x K / 2)")
    parser.add_argument("--only", help="comma-separated objectives (default: all)")
    parser.set_defaults(chunk=20)
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else [*LOSSES, "piwae"]
    unknown = [name for name in names if name not in LOSSES and name != "piwae"]
    if unknown or args.particles < 2 or args.particles % OUTER:
        parser.error(f"--only takes {', '.join([*LOSSES, 'piwae'])}; --particles an even number >= 2")
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the CPU time of one thread only: pass --threads 1")
    data, chunks = svi_vs_pytorch.load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="multisample-benchmark-"))
    trainer = partial(svi_vs_pytorch.TrainerSteps, data, args.lr, args.batch_size, workdir)
    k = args.particles
    for i, name in enumerate(names):
        hand = (HandWrittenPIWAE(args.lr, k) if name == "piwae"
                else svi_vs_pytorch.HandWritten(args.lr, partial(sampled, LOSSES[name], k)))
        options = trainer_options(name, k)
        flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in options.items())
        variants = {f"pytorch {name} (hand-written)": hand, f"train {flags}": trainer(**options)}
        pyro.set_rng_seed(0)
        seconds = svi_vs_pytorch.time_variants(variants, VAE().to(args.device), chunks, args.rounds,
                                               svi_vs_pytorch.CLOCKS[args.clock])
        if i:
            print()
        svi_vs_pytorch.print_table(variants, seconds, args, reference=f"pytorch {name} (hand-written)",
                                   title=f"{name}, {k} draws per image: ")


if __name__ == "__main__":
    main()
