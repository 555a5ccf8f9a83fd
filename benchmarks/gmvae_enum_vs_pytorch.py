"""Milliseconds per step of ``pyro-vae train --model gmvae`` (TraceEnum_ELBO, with and without JIT) against
the same GMVAE written by hand in PyTorch with an explicit sum over the clusters c. Both JIT settings are
named explicitly, so the table stays right whichever one ``pyro-vae train`` picks by default.

    python benchmarks/gmvae_enum_vs_pytorch.py [--rounds 20] [--chunk 50] [--batch-size 100] [--threads N]
        [--num-components 10] [--z-dim 50] [--hidden-dims 200,200]

Every variant trains the same GMVAE (same initial weights, same batches) in one process, in the interleaved
rounds of ``svi_vs_pytorch.py``: the "train" rows run ``Trainer.run_steps``, the loop of ``pyro-vae train``;
the PyTorch loop computes the -ELBO that TraceEnum_ELBO computes (``tests/benchmarks/test_gmvae_enum_vs_pytorch.py`` checks
that) with the same networks and the same foreach Adam. The table gives the median over rounds of each
variant's time divided by the hand-written loop's in the same round, and the quartiles of that ratio; JIT
compilation, once per run, is printed below it.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
from functools import partial
from pathlib import Path

import pyro
import torch
from torch.nn.functional import binary_cross_entropy_with_logits, log_softmax, softplus

from pyro_vae.cli.options import parse_hidden_dims
from pyro_vae.models import GMVAE
from pyro_vae.networks import concat
# the sibling benchmark (Python puts a script's own folder on the path): same variants, rounds and table
from svi_vs_pytorch import (LOG_SQRT_2PI, HandWritten, TrainerSteps, add_timing_arguments, load_chunks, print_table,
                            time_variants)


def gmvae_loss(gmvae: GMVAE, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of a batch, summed exactly over the K clusters, with z_c = loc_c + scale_c * eps[c] for each
    (cluster, image): what TraceEnum_ELBO computes for the GMVAE, written out.

        -sum_x sum_c q(c|x) [log p(x|z_c) + log p(z_c|c) - log q(z_c|x,c) + log p(c) - log q(c|x)]

    All K clusters go through the networks as one (K, B, .) batch, the shape Pyro's enumeration gives them.
    Densities are written by hand rather than through torch.distributions, whose argument checks cost time.
    """
    one_hot = torch.eye(gmvae.num_components).unsqueeze(-2)  # (K, 1, K): every cluster, for every image
    log_qc = log_softmax(gmvae.classifier(x), -1).T  # (K, B)
    loc, scale = gmvae.encoder(concat(x, one_hot))  # (K, B, z_dim)
    z = loc + scale * eps
    logits = gmvae.decoder(z)
    log_px = -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    # row c of the prior's table is p(z | c): indexing it is what the one-hot product c @ table computes
    prior_loc = gmvae.prior_z.locs.unsqueeze(-2)
    prior_scale = softplus(gmvae.prior_z.raw_scales).unsqueeze(-2) + 1e-3
    log_pz = (-0.5 * ((z - prior_loc) / prior_scale).pow(2) - prior_scale.log() - LOG_SQRT_2PI).sum(-1)
    log_qz = (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI).sum(-1)
    log_pc = -math.log(gmvae.num_components)  # p(c) is uniform
    elbo_given_c = log_px + log_pz - log_qz + log_pc - log_qc
    return -(log_qc.exp() * elbo_given_c).sum()


def sampled_gmvae_loss(gmvae: GMVAE, x: torch.Tensor) -> torch.Tensor:
    return gmvae_loss(gmvae, x, torch.randn(gmvae.num_components, x.shape[0], gmvae.z_dim))


def print_jit_ratio(seconds: dict[str, list[float]], jit: str, eager: str) -> None:
    """The JIT variant's time over the eager one's, round by round: whether JIT pays for this model."""
    ratios = [j / e for j, e in zip(seconds[jit], seconds[eager])]
    low, _, high = statistics.quantiles(ratios, n=4)
    print(f"JIT / --no-jit, per round: median {statistics.median(ratios):.3f}, quartiles {low:.2f}-{high:.2f}; "
          f"JIT faster in {sum(r < 1 for r in ratios)} of {len(ratios)} rounds")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser)
    parser.add_argument("--num-components", type=int, default=10, help="clusters K (default 10)")
    parser.add_argument("--z-dim", type=int, default=50, help="dimensions of z (default 50)")
    parser.add_argument("--hidden-dims", type=parse_hidden_dims, default=[200, 200],
                        help="hidden widths of every network, comma-separated as for pyro-vae train (default 200,200)")
    args = parser.parse_args(argv)
    data, chunks = load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="gmvae-benchmark-"))
    trainer = partial(TrainerSteps, data, args.lr, args.batch_size, workdir, model="gmvae", elbo="enum",
                      z_dim=args.z_dim, hidden_dims=args.hidden_dims,
                      model_options={"num_components": args.num_components})
    variants = {
        "pytorch (hand-written, sum over c)": HandWritten(args.lr, sampled_gmvae_loss),
        "train --model gmvae --jit": trainer(jit=True),
        "train --model gmvae --no-jit": trainer(jit=False),
    }
    pyro.set_rng_seed(0)
    initial = GMVAE(x_dim=data.train.images.shape[1], z_dim=args.z_dim, hidden_dims=args.hidden_dims,
                    num_components=args.num_components)
    seconds = time_variants(variants, initial, chunks, args.rounds)
    print_table(variants, seconds, args, reference="pytorch (hand-written, sum over c)")
    print_jit_ratio(seconds, jit="train --model gmvae --jit", eager="train --model gmvae --no-jit")


if __name__ == "__main__":
    main()
