"""Samples per second of the importance-sampled log-likelihood of ``pyro-vae evaluate`` against a hand-written
PyTorch loop, and the minutes that K = 5000 samples over the 10,000 test images would take.

    python benchmarks/evaluation_speed.py [--rounds 5] [--num-images 200] [--num-samples 5000] [--threads N]
        [--run-dir RUN] [--hand-rows 2500] [--no-jit]

Both sides evaluate the same VAE (the default ``VAE()``, or the one trained in ``--run-dir``) on the same
first N test images of binarized MNIST (or of the run's data set), in batches of ``EVAL_BATCH_SIZE`` as the
command does:

* "pyro-vae evaluate": ``negative_log_likelihood``, the call ``pyro-vae evaluate`` makes, which runs
  ``log_likelihood_iwae`` on each batch: the model and guide as Pyro programs, replayed under a particle
  plate, with Pyro validation as the command leaves it (on, Pyro's default), and each chunk recorded with
  ``torch.jit.trace`` (``log_likelihood_iwae``'s ``jit``) as the command does for the built-in structures
  (``--no-jit``: uncompiled, as for a user's structure). The recording happens once per call of
  ``negative_log_likelihood``, as once per ``pyro-vae evaluate``, so it is inside the library's time of
  every round (about 0.15 s);
* "pytorch (hand-written)": encode each batch once, then draw the K samples in chunks of ``--hand-rows``
  rows (particles x images; 1,000, 2,500 and 5,000 ran equally fast within noise on one thread), decode,
  and add log p(x | z) + log p(z) - log q(z | x) with the densities written out; the log-sum-exp over
  chunks is accumulated in float64 as the library does. ``tests/benchmarks/test_evaluation_speed.py`` checks that
  it computes the library's estimate on the same draw.

Rounds are interleaved: in every round each side evaluates all N images once, and the library's time is
divided by the hand-written loop's in the same round, so a slow spell of a shared machine hits both alike.
The table gives samples (images x K) per second (median over rounds), the median and quartiles of the
per-round ratio, the extrapolation to K = 5000 over 10,000 images, the same ratio and rate in CPU time, and
the page faults per round. Note the load average printed with it: on a 2-core machine another busy
process slows every side, 2-thread runs most (their threads wait for each other), so absolute rates and
2-thread ratios are only meaningful on an idle machine; the 1-thread CPU-time ratio holds up best.
"""
from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import pyro
import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from pyro_vae.data import Split, iterate_batches, load_dataset
from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import negative_log_likelihood
from pyro_vae.models import MODELS, VAE
from pyro_vae.training import EVAL_BATCH_SIZE, load_run_data, load_trained_model

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
HAND = "pytorch (hand-written)"
TARGET_IMAGES, TARGET_SAMPLES = 10_000, 5000  # the full test set at the literature's K


@torch.no_grad()
def hand_written_log_likelihood(vae: VAE, x: torch.Tensor, num_samples: int, rows: int = 2500) -> torch.Tensor:
    """log (1/K) sum_k p(x, z_k) / q(z_k | x) per image, z_k ~ q(z | x), K = ``num_samples``; float64, (batch,).

    The encoder runs once on the batch; the K samples go through the decoder in chunks of at most ``rows``
    (particles x images) rows. The noise is drawn as ``torch.randn(particles, batch, z_dim)``, as Pyro's
    Normal guide under a particle plate draws it, so that both sides see the same draw from the same seed.
    Densities are written by hand, not through torch.distributions (whose argument checks cost time).
    """
    batch = x.shape[0]
    loc, scale = vae.encoder(x)
    log_q_norm = (scale.log() + LOG_SQRT_2PI).sum(-1)  # the part of -log q(z | x) that does not depend on z
    chunk = max(1, min(num_samples, rows // batch))
    log_sum = torch.full((batch,), -math.inf, dtype=torch.float64, device=x.device)
    done = 0
    while done < num_samples:
        size = min(chunk, num_samples - done)
        eps = torch.randn(size, batch, loc.shape[-1], dtype=loc.dtype, device=loc.device)
        z = loc + scale * eps
        logits = vae.decoder(z)
        log_px = -binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        log_pz = (-0.5 * z.pow(2) - LOG_SQRT_2PI).sum(-1)
        log_qz = -0.5 * eps.pow(2).sum(-1) - log_q_norm
        log_sum = torch.logaddexp(log_sum, (log_px + log_pz - log_qz).double().logsumexp(0))
        done += size
    return log_sum - math.log(num_samples)


def hand_written_nll(vae: VAE, batches: list[tuple], num_samples: int, rows: int) -> float:
    total = sum(hand_written_log_likelihood(vae, x, num_samples, rows).sum().item() for (x,) in batches)
    return -total / sum(x.shape[0] for (x,) in batches)


def library_nll(vae: VAE, batches: list[tuple], num_samples: int, jit: bool) -> float:
    return negative_log_likelihood(vae.model, vae.guide, batches, num_samples=num_samples, jit=jit)


def load(args: argparse.Namespace) -> tuple[VAE, list[tuple]]:
    """The VAE (trained in ``--run-dir``, else freshly initialised) and N test images in evaluation batches."""
    if args.run_dir:
        vae, config, _ = load_trained_model(args.run_dir)
        if not isinstance(vae, VAE):
            raise PyroVAEError(f"the hand-written loop is the VAE's; {args.run_dir} holds a {type(vae).__name__}")
        test = load_run_data(config).test
    else:
        pyro.set_rng_seed(0)
        vae = VAE()
        test = load_dataset("binarized-mnist").test
    vae.eval().to(args.device)
    if not 1 <= args.num_images <= len(test):
        raise PyroVAEError(f"--num-images must be from 1 to {len(test)}, got {args.num_images}")
    images = Split(test.images[:args.num_images].to(args.device))
    return vae, list(iterate_batches(images, EVAL_BATCH_SIZE))


def time_sides(sides: dict, batches: list[tuple], rounds: int) -> tuple[dict, dict, dict, dict]:
    """Wall-clock and CPU seconds and minor page faults of every side ``run(batches)`` in every round, after a
    warm-up call of each on the first image, and each side's last estimate."""
    for run in sides.values():
        run([tuple(arg[:1] for arg in batches[0])])
    seconds, cpu, faults = ({name: [] for name in sides} for _ in range(3))
    estimates = {}
    for _ in range(rounds):
        for name, run in sides.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            estimates[name] = run(batches)
            seconds[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start_faults)
    return seconds, cpu, faults, estimates


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds in which each side evaluates every image once "
                                                              "(default 5)")
    parser.add_argument("--num-images", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--num-samples", "-K", type=int, default=5000,
                        help="importance samples per image (default 5000)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--run-dir", help="evaluate the VAE trained in this run directory (default: a fresh VAE())")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both sides evaluate")
    parser.add_argument("--hand-rows", type=int, default=2500,
                        help="rows (particles x images) per decoder call of the hand-written loop (default 2500)")
    parser.add_argument("--no-jit", action="store_true",
                        help="run the library uncompiled (pyro-vae evaluate compiles the built-in structures)")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.num_samples < 1:
        parser.error("--rounds must be at least 2 and --num-samples positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    vae, batches = load(args)
    K = args.num_samples
    jit = not args.no_jit and type(vae) in MODELS.values()  # what pyro-vae evaluate does (cli/runs.py _evaluate)
    sides = {
        "pyro-vae evaluate" + ("" if jit else " (no JIT)"): lambda some: library_nll(vae, some, K, jit),
        HAND: lambda some: hand_written_nll(vae, some, K, args.hand_rows),
    }
    load_before = load_average()
    seconds, cpu, faults, estimates = time_sides(sides, batches, args.rounds)
    samples = args.num_images * K
    print(f"{args.rounds} rounds of {args.num_images} images x K = {K}, {torch.get_num_threads()} threads, "
          f"batches of {EVAL_BATCH_SIZE}, hand-written chunks of {args.hand_rows} rows; load average "
          f"{load_before} before, {load_average()} after")
    print(f"{'side':<31} {'samples/s':>10} {'ratio to pytorch':>17} {'quartiles':>11} {'K=5000 x 10,000':>16} "
          f"{'CPU-time ratio':>15} {'samples/CPU-s':>14} {'page faults':>12} {'NLL (nats)':>11}")
    result = {}
    for name, times in seconds.items():
        ratios = [t / h for t, h in zip(times, seconds[HAND])]
        cpu_ratio = statistics.median(c / h for c, h in zip(cpu[name], cpu[HAND]))
        low, _, high = statistics.quantiles(ratios, n=4)
        rate = samples / statistics.median(times)
        cpu_rate = samples / statistics.median(cpu[name])
        minutes = TARGET_IMAGES * TARGET_SAMPLES / rate / 60
        print(f"{name:<31} {rate:>10.0f} {statistics.median(ratios):>17.3f} {low:>5.2f}-{high:<5.2f} "
              f"{minutes:>12.2f} min {cpu_ratio:>15.3f} {cpu_rate:>14.0f} {statistics.median(faults[name]):>12.0f} "
              f"{estimates[name]:>11.2f}")
        result[name] = {"samples_per_second": rate, "ratio": statistics.median(ratios), "quartiles": (low, high),
                        "minutes": minutes, "cpu_ratio": cpu_ratio, "samples_per_cpu_second": cpu_rate,
                        "page_faults": statistics.median(faults[name]), "nll": estimates[name]}
    print("ratio: the library's wall-clock time over the hand-written loop's in the same round (median, quartiles); "
          "K=5000 x 10,000: the whole test set at K = 5000 at the median samples/s. CPU-time ratio and samples/"
          "CPU-s: the same with the process's CPU time, steadier than wall-clock time when other processes share "
          "the cores (with one thread, close to what an idle core gives). Page faults: minor page faults per "
          "round (median): memory that the C allocator gave back to the system and took again, which costs time")
    return result


if __name__ == "__main__":
    main()
