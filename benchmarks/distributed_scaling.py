"""Training images per second against the number of processes of data-parallel training (torchrun).

    python benchmarks/distributed_scaling.py [--processes 1,2] [--threads 1] [--epochs 3] [--subset 10000]
                                             [--batch-size 100] [--net mlp] [-- EXTRA TRAIN OPTIONS]

For each process count P it runs ``torchrun --nproc-per-node P -m pyro_vae train`` (plain ``pyro-vae train``
for P = 1) on the same data, batch (the global batch: P shards of batch-size / P) and epochs, each process
with ``--threads`` torch threads, and reads the training seconds the run recorded in metrics.jsonl (the
epochs' wall time, without start-up, data loading or the final evaluation), from the end of the first epoch (which
also compiles and warms up) to the end of the last.
It prints images per second, the speed-up over one process and the efficiency (speed-up / P). Also one
process with P x threads threads, the fair comparison on a machine with P x threads cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def run(processes: int, threads: int, args: argparse.Namespace, extra: list[str], folder: Path) -> float:
    """Training images per second of one run."""
    run_dir = folder / f"p{processes}-t{threads}"
    train = ["train", "--subset", str(args.subset), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
             "--net", args.net, "--no-progress", "--eval-samples", "1", "--run-dir", str(run_dir), *extra]
    if processes == 1:
        command = [sys.executable, "-m", "pyro_vae", *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-port", str(29500 + processes + 10 * threads), "-m", "pyro_vae", *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # from the end of the first epoch, which also compiled the JIT and warmed up
    return (len(rows) - 1) * args.subset / (rows[-1]["seconds"] - rows[0]["seconds"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, at least 2 (the first is not timed)")
    parser.add_argument("--subset", type=int, default=10_000, help="training images (default 10,000)")
    parser.add_argument("--batch-size", type=int, default=100, help="the global batch (default 100)")
    parser.add_argument("--net", default="mlp", help="mlp or conv (default mlp)")
    args, extra = parser.parse_known_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch, which compiles, is not timed")
    extra = [a for a in extra if a != "--"]
    counts = [int(p) for p in args.processes.split(",")]
    with tempfile.TemporaryDirectory(prefix="scaling-") as folder:
        base = run(1, args.threads, args, extra, Path(folder))
        print(f"{args.subset:,} images x {args.epochs} epochs, global batch {args.batch_size}, --net {args.net}, "
              f"{args.threads} thread(s) per process")
        print(f"{'processes':>9} {'images/s':>10} {'speed-up':>9} {'efficiency':>11}")
        print(f"{1:>9} {base:>10.0f} {1.0:>9.2f} {1.0:>11.2f}")
        for count in counts:
            if count == 1:
                continue
            speed = run(count, args.threads, args, extra, Path(folder))
            print(f"{count:>9} {speed:>10.0f} {speed / base:>9.2f} {speed / base / count:>11.2f}")
            single = run(1, count * args.threads, args, extra, Path(folder))
            print(f"  (one process with {count * args.threads} threads: {single:.0f} images/s, "
                  f"{single / base:.2f}x)")


if __name__ == "__main__":
    main()
