"""Milliseconds per training step of the deep Markov model (``train --model dmm --dataset hmm-sequences``) against
the same model trained by a loss written by hand in PyTorch.

    python benchmarks/dmm_vs_pytorch.py [--rounds 20] [--chunk 10] [--batch-size 100] [--z-dim 50]
                                        [--hidden-dims 200,200] [--transition-dim 200] [--rnn-dim 600]
                                        [--threads N] [--clock wall|thread] [--no-eager | --no-jit] [--no-vectorized]
                                        [--out FILE.json]

The sizes default to those of ``pyro-vae train --model dmm`` (z 50, emitter 200-200, gated transition 200, guide
RNN 600); the data are ``hmm-sequences`` (T = 20 steps of D = 16 binary features, lengths 10 to 20).

The hand-written loop (the reference) runs the structure's own networks (its gated transition, emitter, combiner
and backward RNN, taken from a ``DMM``, so the parameters and architecture are the same) and writes the rest out
step by step, as the Pyro programs do: each sequence reversed within its length for the RNN and back, the RNN's
outputs split into steps with ``unbind`` as the guide splits them, z_t = loc + scale * eps_t from the combiner of
(z_{t-1}, h_t), the transition's Normal and the guide's Normal evaluated at z_t (the Monte Carlo KL that
``Trace_ELBO`` computes), the emitter's Bernoulli logits, every step's terms masked after the sequence's end; the
densities by hand; the same Adam (``foreach``). A second hand-written loop computes the same loss vectorized over
time (only the guide's chain of draws step by step, the transition, emitter and densities once over all steps),
which a model written as one Pyro site per step cannot do; its row says what that structure costs. Before timing,
the script computes the library's ``Trace_ELBO`` and both hand-written losses on one batch with the same seed and
stops if they differ (``tests/benchmarks/test_dmm_vs_pytorch.py`` checks values and gradients). The library's rows
run ``Trainer.run_steps``, the training step of ``pyro-vae train`` (JIT-compiled ``JitTrace_ELBO`` by default, and
``--no-jit``). Timing as in ``svi_vs_pytorch.py``: variants take turns each round, each round's time is divided by
the hand-written loop's, and the table gives the median ratio and its quartiles; ``--out`` writes the settings, the
losses on the fixed draw and every round's times as JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import pyro
import torch
from pyro.infer import Trace_ELBO
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.data import iterate_batches, load_dataset
from pyro_vae.models import MODELS
from pyro_vae.training import TrainConfig

_spec = importlib.util.spec_from_file_location("svi_vs_pytorch", Path(__file__).with_name("svi_vs_pytorch.py"))
svi_vs_pytorch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(svi_vs_pytorch)
LOG_SQRT_2PI = svi_vs_pytorch.LOG_SQRT_2PI
DATASET = "hmm-sequences"
REFERENCE = "pytorch DMM (hand-written)"
VECTORIZED = "pytorch DMM vectorized over time"
LIBRARY = "train --model dmm"


def reversed_in_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence of (N, T, D) reversed within its own length, the padding left at the end."""
    steps = torch.arange(x.shape[1], device=x.device)
    last = lengths.reshape(-1, 1) - 1
    index = torch.where(steps <= last, last - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def normal_log_density(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; loc, diag(scale^2)), summed over the last dimension."""
    return (-0.5 * ((z - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI).sum(-1)


def dmm_loss(dmm, x: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """-ELBO of a batch of sequences (flat (N, T * D), ``lengths`` (N,)) for the draws z_t = loc_t + scale_t * eps[t]
    of the guide (``eps`` (T, N, z)), written out."""
    n, num_steps = x.shape[0], dmm.num_steps
    steps = x.reshape(n, num_steps, dmm.step_dim)
    mask = (torch.arange(num_steps, device=x.device) < lengths.reshape(-1, 1)).to(x.dtype)  # (N, T)
    h_0 = dmm.h_0.expand(1, n, dmm.rnn_dim).contiguous()
    backwards, _ = dmm.rnn(reversed_in_length(steps, lengths), h_0)
    h = reversed_in_length(backwards, lengths).unbind(1)  # h[t] has read x_L, ..., x_t
    z_prior = dmm.z_0.expand(n, dmm.z_dim)
    z_guide = dmm.z_q_0.expand(n, dmm.z_dim)
    terms = []
    for t in range(num_steps):
        q_loc, q_scale = dmm.combiner(z_guide, h[t])
        z = q_loc + q_scale * eps[t]
        p_loc, p_scale = dmm.transition(z_prior)
        log_px = -binary_cross_entropy_with_logits(dmm.emitter(z), steps[:, t], reduction="none").sum(-1)
        terms.append(log_px + normal_log_density(z, p_loc, p_scale) - normal_log_density(z, q_loc, q_scale))
        z_prior = z_guide = z
    return -(torch.stack(terms, 1) * mask).sum()


def vectorized_dmm_loss(dmm, x: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """:func:`dmm_loss` as one would write it free of the programs' one site per step: only the guide's chain of
    draws runs step by step (z_t needs z_{t-1}); the transition, the emitter and every density then run once over
    all T steps. The same value, other operations."""
    n, num_steps = x.shape[0], dmm.num_steps
    steps = x.reshape(n, num_steps, dmm.step_dim)
    mask = (torch.arange(num_steps, device=x.device) < lengths.reshape(-1, 1)).to(x.dtype)  # (N, T)
    h_0 = dmm.h_0.expand(1, n, dmm.rnn_dim).contiguous()
    backwards, _ = dmm.rnn(reversed_in_length(steps, lengths), h_0)
    h = reversed_in_length(backwards, lengths).unbind(1)
    z = dmm.z_q_0.expand(n, dmm.z_dim)
    draws, locs, scales = [], [], []
    for t in range(num_steps):
        loc, scale = dmm.combiner(z, h[t])
        z = loc + scale * eps[t]
        draws.append(z), locs.append(loc), scales.append(scale)
    z, q_loc, q_scale = torch.stack(draws, 1), torch.stack(locs, 1), torch.stack(scales, 1)  # (N, T, z)
    p_loc, p_scale = dmm.transition(torch.cat([dmm.z_0.expand(n, 1, dmm.z_dim), z[:, :-1]], 1))
    log_px = -binary_cross_entropy_with_logits(dmm.emitter(z), steps, reduction="none").sum(-1)
    terms = log_px + normal_log_density(z, p_loc, p_scale) - normal_log_density(z, q_loc, q_scale)
    return -(terms * mask).sum()


def sampled(loss, dmm, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return loss(dmm, x, lengths, torch.randn(dmm.num_steps, x.shape[0], dmm.z_dim, device=x.device))


class HandWrittenDMM(svi_vs_pytorch.HandWritten):
    """The hand-written loop over batches of (sequences, lengths)."""

    def run(self, batches: list[tuple]) -> None:
        for x, lengths in batches:
            loss = self.loss(self.model, x, lengths)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss.item()


def losses_on_a_fixed_draw(dmm, x: torch.Tensor, lengths: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Trace_ELBO's loss of one batch and the hand-written ones, each computed after ``pyro.set_rng_seed(seed)``:
    the guide draws eps_t step by step, and so does the hand-written side here."""
    with torch.no_grad():
        pyro.set_rng_seed(seed)
        losses = {"Trace_ELBO": Trace_ELBO().loss(dmm.model, dmm.guide, x, lengths)}
        for name, loss in (("hand-written", dmm_loss), ("hand-written, vectorized over time", vectorized_dmm_loss)):
            pyro.set_rng_seed(seed)
            eps = torch.stack([torch.randn(x.shape[0], dmm.z_dim, device=x.device) for _ in range(dmm.num_steps)])
            losses[name] = loss(dmm, x, lengths, eps).item()
    pyro.clear_param_store()
    return losses


def parse_hidden_dims(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def load_chunks(args: argparse.Namespace) -> tuple:
    """The sequence data set and its training batches (x, lengths) in chunks of ``args.chunk`` steps (a short last
    chunk is dropped unless it is the only one)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(DATASET, device=args.device)
    batches = list(iterate_batches(data.train, args.batch_size, shuffle=True, with_labels=True,
                                   generator=torch.Generator().manual_seed(0)))
    chunks = [batches[i:i + args.chunk] for i in range(0, len(batches), args.chunk)]
    whole = [chunk for chunk in chunks if len(chunk) == args.chunk]
    return data, whole or chunks[:1]


def summary(seconds: dict[str, list[float]], reference: str) -> dict:
    """Per variant: median ms per step, the median ratio to ``reference`` over rounds and its quartiles."""
    rows = {}
    for name, times in seconds.items():
        ratios = [t / h for t, h in zip(times, seconds[reference])]
        quartiles = statistics.quantiles(ratios, n=4)
        rows[name] = {"ms_per_step": statistics.median(times) * 1e3, "ratio": statistics.median(ratios),
                      "ratio_quartiles": [quartiles[0], quartiles[2]],
                      "ms_per_step_by_round": [t * 1e3 for t in times]}
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    svi_vs_pytorch.add_timing_arguments(parser)
    svi_vs_pytorch.add_clock_argument(parser)
    parser.set_defaults(chunk=10)
    parser.add_argument("--z-dim", type=int, default=50, help="latents per step (default 50, the trainer's)")
    parser.add_argument("--hidden-dims", type=parse_hidden_dims, default=[200, 200],
                        help="the emitter's hidden layers, comma-separated (default 200,200, the trainer's)")
    parser.add_argument("--transition-dim", type=int, default=200, help="the gated transition's hidden size (200)")
    parser.add_argument("--rnn-dim", type=int, default=600, help="the guide's RNN's hidden size (600)")
    jit = parser.add_mutually_exclusive_group()
    jit.add_argument("--no-eager", action="store_true", help="leave out the eager row (train --no-jit)")
    jit.add_argument("--no-jit", action="store_true",
                     help="leave out the default, JIT-compiled row (its compilation takes seconds): quick checks")
    parser.add_argument("--no-vectorized", action="store_true",
                        help="leave out the hand-written loop vectorized over time")
    parser.add_argument("--out", type=Path, help="write the settings and results to this JSON file")
    args = parser.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the CPU time of one thread only: pass --threads 1")
    if args.rounds < 2 or args.chunk < 1:
        parser.error("--rounds must be at least 2 (the quartiles) and --chunk positive")
    data, chunks = load_chunks(args)
    options = {"model": "dmm", "dataset": DATASET, "z_dim": args.z_dim, "hidden_dims": args.hidden_dims,
               "model_options": {"transition_dim": args.transition_dim, "rnn_dim": args.rnn_dim}}
    config = TrainConfig(**options)
    pyro.set_rng_seed(0)  # the same initial weights in every run
    initial = MODELS["dmm"](**config.model_kwargs(data.image_shape)).to(args.device)

    x, lengths = chunks[0][0]
    losses = losses_on_a_fixed_draw(initial, x, lengths)
    print("-ELBO of the first batch on one draw (seed 0): " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()))
    if any(abs(v - losses["Trace_ELBO"]) > 1e-4 * max(1.0, abs(losses["Trace_ELBO"])) for v in losses.values()):
        sys.exit("a hand-written loss is not the library's on the same draw: the timing would compare other work")

    workdir = Path(tempfile.mkdtemp(prefix="dmm-benchmark-"))
    trainer = partial(svi_vs_pytorch.TrainerSteps, data, args.lr, args.batch_size, workdir, **options)
    variants = {REFERENCE: HandWrittenDMM(args.lr, partial(sampled, dmm_loss))}
    if not args.no_vectorized:
        variants[VECTORIZED] = HandWrittenDMM(args.lr, partial(sampled, vectorized_dmm_loss))
    if not args.no_jit:
        variants[LIBRARY] = trainer()
    if not args.no_eager:
        variants[f"{LIBRARY} --no-jit"] = trainer(jit=False)
    pyro.set_rng_seed(0)
    seconds = svi_vs_pytorch.time_variants(variants, initial, chunks, args.rounds, svi_vs_pytorch.CLOCKS[args.clock])
    svi_vs_pytorch.print_table(variants, seconds, args, reference=REFERENCE,
                               title="Deep Markov model (T = 20), ratios to the same networks trained by hand: ")
    rows = summary(seconds, REFERENCE)
    if VECTORIZED in variants:
        vectorized = summary(seconds, VECTORIZED)
        for name, row in rows.items():
            row["ratio_to_vectorized"] = vectorized[name]["ratio"]
            row["ratio_to_vectorized_quartiles"] = vectorized[name]["ratio_quartiles"]
        for name in variants:
            if name.startswith(LIBRARY):
                low, high = vectorized[name]["ratio_quartiles"]
                print(f"{name} / {VECTORIZED}: {vectorized[name]['ratio']:.3f} (quartiles {low:.2f}-{high:.2f})")
    result = {
        "command": "python benchmarks/dmm_vs_pytorch.py" + "".join(f" {a}" for a in (argv if argv is not None
                                                                                     else sys.argv[1:])),
        "dataset": DATASET, "steps": data.image_shape[0], "step_dim": data.image_shape[1],
        "z_dim": args.z_dim, "hidden_dims": args.hidden_dims, "transition_dim": args.transition_dim,
        "rnn_dim": args.rnn_dim, "batch_size": args.batch_size, "rounds": args.rounds, "chunk": args.chunk,
        "threads": torch.get_num_threads(), "clock": args.clock, "device": args.device,
        "loss_on_a_fixed_draw": losses,
        "reference": REFERENCE,
        "variants": rows,
        "elbo_class": {name: variant.elbo for name, variant in variants.items()},
        "jit_compile_seconds": {name: variant.compile_seconds for name, variant in variants.items()
                                if getattr(variant, "compile_seconds", 0)},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "pyro": pyro.__version__},
        "processor": platform.machine(),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
