"""Train one structure with every gradient estimator on the same data and budget, and measure each model's test NLL.

    python benchmarks/train_estimators.py --out runs/estimator-training --epochs 10 --draws 8
    python benchmarks/train_estimators.py --model bernoulli-mixture --out runs/estimator-training-discrete \
        --results docs/results/estimators-discrete --epochs 10 --draws 8

Runs ``pyro-vae train`` once per estimator (same structure, data, epochs, batches, learning rate and seed; the
multi-sample estimators draw ``--draws`` samples per image, MIWAE and PIWAE as M = 2 bounds of K = draws / 2),
then ``pyro-vae evaluate -K 5000`` on ``--test-images`` evenly spaced test images of each run's best epoch. Runs
already finished are kept (re-running the script continues where it stopped, and a run whose config, metrics and
evaluation are in ``--results`` is not trained again); an unfinished run is resumed. Writes
``estimators.csv`` and ``estimators.md`` (one table) to ``--out`` and copies each run's config, per-epoch metrics
and evaluation to ``--results`` (docs/results/estimators by default).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def estimators(draws: int) -> list[tuple[str, list[str]]]:
    half = max(draws // 2, 1)
    return [
        ("trace", ["--elbo", "trace"]),
        ("stl", ["--elbo", "stl", "--num-particles", str(draws)]),
        ("iwae", ["--elbo", "iwae", "--num-particles", str(draws), "--no-jit"]),
        ("dreg", ["--elbo", "dreg", "--num-particles", str(draws)]),
        ("miwae", ["--elbo", "miwae", "--outer-particles", "2", "--num-particles", str(half)]),
        ("piwae", ["--elbo", "piwae", "--outer-particles", "2", "--num-particles", str(half)]),
        ("ciwae", ["--elbo", "ciwae", "--ciwae-beta", "0.5", "--num-particles", str(draws)]),
        ("rws", ["--elbo", "rws", "--num-particles", str(draws)]),
        ("renyi", ["--elbo", "renyi", "--alpha", "0.5", "--num-particles", str(draws)]),
        ("tmc", ["--elbo", "tmc", "--num-particles", str(draws)]),
    ]


def discrete_estimators(draws: int) -> list[tuple[str, list[str]]]:
    """The estimators for a structure whose latent sites are all discrete (the Bernoulli mixture): the exact sum,
    the score function with a baseline, and the two multi-sample estimators that serve discrete sites."""
    return [
        ("enum", ["--elbo", "enum"]),
        ("tracegraph", ["--elbo", "tracegraph", "--baseline", "average"]),
        ("rws", ["--elbo", "rws", "--num-particles", str(draws)]),
        ("vimco", ["--elbo", "vimco", "--num-particles", str(draws)]),
    ]


def run(command: list[str], log) -> None:
    print("$ " + " ".join(command), file=log, flush=True)
    subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/estimator-training")
    parser.add_argument("--results", default="docs/results/estimators")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--draws", type=int, default=8, help="samples per image of the multi-sample estimators")
    parser.add_argument("--subset", type=int, help="training images (default: all 50,000)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--eval-samples", type=int, default=5000)
    parser.add_argument("--only", help="comma-separated estimators (default: all)")
    parser.add_argument("--model", default="vae", help="the structure; bernoulli-mixture (all sites discrete) "
                                                       "trains enum, tracegraph, rws and vimco instead")
    args = parser.parse_args()
    out, results = Path(args.out), Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    chosen = args.only.split(",") if args.only else None
    rows = []
    with open(out / "log.txt", "a") as log:
        table = discrete_estimators(args.draws) if args.model == "bernoulli-mixture" else estimators(args.draws)
        for name, options in table:
            options = [*options, "--model", args.model] if args.model != "vae" else options
            if chosen and name not in chosen:
                continue
            run_dir = out / name
            common = [sys.executable, "-m", "pyro_vae"]
            evaluation = run_dir / f"test-K{args.eval_samples}-{args.test_images}.json"
            target = results / name
            copied = [target / file for file in ("config.json", "metrics.jsonl", evaluation.name)]
            if not evaluation.exists() and all(file.exists() for file in copied):
                run_dir = target  # measured before, kept in --results although --out was lost
                evaluation = copied[-1]
            if not evaluation.exists():
                start = time.time()
                train = [*common, "train", "--run-dir", str(run_dir), "--epochs", str(args.epochs), "--eval-samples",
                         "100", "--no-progress", *options]
                if args.subset:
                    train += ["--subset", str(args.subset)]
                if (run_dir / "checkpoint.pt").exists():
                    train = [*common, "train", "--run-dir", str(run_dir), "--resume", "--no-progress"]
                run(train, log)
                run([*common, "evaluate", str(run_dir), "-K", str(args.eval_samples), "--subset",
                     str(args.test_images), "--out", str(evaluation)], log)
                print(f"{name}: {time.time() - start:.0f} s", file=log, flush=True)
            result = json.loads(evaluation.read_text())
            metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            seconds = max((m.get("seconds", 0.0) for m in metrics), default=0.0)  # cumulative per epoch
            rows.append({"estimator": name, "options": " ".join(options), "epoch": result["epoch"],
                         "train_seconds": round(seconds), "test_elbo": round(result["elbo"], 2),
                         "test_nll": round(result["nll"], 2), "eval_samples": result["num_samples"],
                         "test_images": result["images"]})
            if run_dir != target:
                target.mkdir(exist_ok=True)
                for file in ("config.json", "metrics.jsonl", evaluation.name):
                    shutil.copy(run_dir / file, target / file)
    with open(out / "estimators.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| estimator | options | best epoch | training s | test ELBO | test NLL (K = %d) |" % args.eval_samples,
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['estimator']} | `{r['options']}` | {r['epoch']} | {r['train_seconds']} | {r['test_elbo']:.2f} | "
              f"{r['test_nll']:.2f} |" for r in sorted(rows, key=lambda r: r["test_nll"])]
    (out / "estimators.md").write_text("\n".join(lines) + "\n")
    shutil.copy(out / "estimators.md", results / "estimators.md")
    shutil.copy(out / "estimators.csv", results / "estimators.csv")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
