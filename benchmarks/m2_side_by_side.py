"""Pyro's M2 example and pyro-vae's ss-vae side by side: validation and test accuracy by epoch (issue 21).

Reads the log of ``benchmarks/pyro_ss_vae_m2/ss_vae_M2.py`` (one line per epoch ending "validation accuracy V
test accuracy T") and the ``metrics.jsonl`` of pyro-vae runs (``valid_accuracy`` each epoch; the test accuracy of
the epoch that validation chose is in the run's ``evaluation.json``), prints a table of each run's best
validation epoch and last epoch, and draws the validation accuracy of every run by epoch:

    python benchmarks/m2_side_by_side.py --pyro pyro-100-s0.log --ours runs/ss-vae-100 [--ours ...] --out m2.png

and, with ``--targets RUN_DIR ...``, the held-out accuracy of several runs (label counts, seeds) as one table of
means and spreads by number of labels.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LOG_LINE = re.compile(r"^(\d+) epoch: .* validation accuracy ([0-9.]+) test accuracy ([0-9.]+)\s*$")


def read_pyro_log(path: Path) -> list[dict]:
    """Rows {"epoch" (1-based), "valid_accuracy", "test_accuracy"} of the script's log."""
    rows = []
    for line in path.read_text().splitlines():
        match = LOG_LINE.match(line)
        if match:
            rows.append({"epoch": int(match[1]) + 1, "valid_accuracy": float(match[2]),
                         "test_accuracy": float(match[3])})
    if not rows:
        raise SystemExit(f"{path} holds no epoch line of Pyro's ss_vae_M2.py")
    return rows


def read_run(run_dir: Path) -> tuple[list[dict], dict | None, dict | None]:
    """A pyro-vae run's metrics rows, its final evaluation (of the epoch validation chose) and an evaluation of its
    last epoch (``pyro-vae evaluate RUN --checkpoint last``); None for those not made."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows or "valid_accuracy" not in rows[0]:
        raise SystemExit(f"{run_dir} is not a semi-supervised run that records validation accuracy")
    evaluation = run_dir / "evaluation.json"
    lasts = sorted(run_dir.glob("evaluation-test-*-last.json"))
    return (rows, json.loads(evaluation.read_text()) if evaluation.is_file() else None,
            json.loads(lasts[0].read_text()) if lasts else None)


def best(rows: list[dict]) -> dict:
    """The first epoch with the highest validation accuracy, as pyro-vae's ``--select-by accuracy`` picks."""
    return max(rows, key=lambda row: row["valid_accuracy"])


def table(pyro: dict[str, list[dict]], ours: dict[str, tuple]) -> str:
    lines = ["| program | epochs | best validation epoch | its validation accuracy | its test accuracy | "
             "last epoch's validation / test accuracy |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, rows in pyro.items():
        chosen, last = best(rows), rows[-1]
        lines.append(f"| {name} | {last['epoch']} | {chosen['epoch']} | {100 * chosen['valid_accuracy']:.2f} % | "
                     f"{100 * chosen['test_accuracy']:.2f} % | {100 * last['valid_accuracy']:.2f} / "
                     f"{100 * last['test_accuracy']:.2f} % |")
    for name, (rows, evaluation, last_evaluation) in ours.items():
        chosen, last = best(rows), rows[-1]
        test = ("not evaluated" if evaluation is None or evaluation.get("epoch") != chosen["epoch"]
                else f"{100 * evaluation['accuracy']:.2f} %")
        last_test = ("(not measured)" if last_evaluation is None or last_evaluation.get("epoch") != last["epoch"]
                     else f"{100 * last_evaluation['accuracy']:.2f} %")
        lines.append(f"| {name} | {last['epoch']} | {chosen['epoch']} | {100 * chosen['valid_accuracy']:.2f} % | "
                     f"{test} | {100 * last['valid_accuracy']:.2f} / {last_test} |")
    return "\n".join(lines)


def targets_table(run_dirs: list[Path]) -> str:
    """One row per number of labels over the given runs (seeds): the held-out accuracy of the epoch each run chose
    on validation (its ``evaluation.json``), their mean and spread, and the training time."""
    import statistics

    groups: dict[int, list[tuple[int, float, int, float]]] = {}
    for run_dir in run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        rows, evaluation, _ = read_run(run_dir)
        if evaluation is None or "accuracy" not in evaluation:
            raise SystemExit(f"{run_dir} has no final evaluation with an accuracy; run pyro-vae evaluate on it")
        groups.setdefault(config["num_labelled"], []).append(
            (config["seed"], evaluation["accuracy"], evaluation["epoch"], rows[-1]["seconds"]))
    lines = ["| labels | seeds | held-out accuracy, mean | spread (sample sd; min - max) | per seed (epoch chosen) | "
             "training time per run |", "| ---: | ---: | ---: | --- | --- | --- |"]
    for labels, runs in sorted(groups.items()):
        runs.sort()
        accuracies = [100 * accuracy for _, accuracy, _, _ in runs]
        sd = f"{statistics.stdev(accuracies):.2f}" if len(runs) > 1 else "-"
        per_seed = ", ".join(f"{a:.2f} % (s{seed}, ep {epoch})" for (seed, _, epoch, _), a in zip(runs, accuracies))
        seconds = [s for *_, s in runs]
        lines.append(f"| {labels} | {len(runs)} | **{statistics.mean(accuracies):.2f} %** | {sd}; "
                     f"{min(accuracies):.2f} - {max(accuracies):.2f} | {per_seed} | "
                     f"{min(seconds):,.0f} - {max(seconds):,.0f} s |")
    return "\n".join(lines)


def plot(pyro: dict[str, list[dict]], ours: dict[str, tuple], path: Path,
         title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, rows in pyro.items():
        ax.plot([r["epoch"] for r in rows], [100 * r["valid_accuracy"] for r in rows], "s-", ms=3, label=name)
    for name, (rows, *_) in ours.items():
        ax.plot([r["epoch"] for r in rows], [100 * r["valid_accuracy"] for r in rows], "o-", ms=3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy on the 1,000 labelled validation images (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyro", action="append", default=[], metavar="[NAME=]LOG",
                        help="a log of Pyro's ss_vae_M2.py (repeatable)")
    parser.add_argument("--ours", action="append", default=[], metavar="[NAME=]RUN_DIR",
                        help="a pyro-vae ss-vae run directory (repeatable)")
    parser.add_argument("--targets", nargs="+", type=Path, metavar="RUN_DIR",
                        help="instead: a table of the held-out accuracy by number of labels over these runs (seeds)")
    parser.add_argument("--out", type=Path, help="draw the validation accuracy by epoch into this PNG")
    parser.add_argument("--title", default="M2 with 100 labels: Pyro's script and pyro-vae on the same data")
    args = parser.parse_args(argv)

    def named(spec: str) -> tuple[str, Path]:
        name, sep, path = spec.partition("=")
        return (name, Path(path)) if sep else (Path(spec).stem, Path(spec))

    if args.targets:
        for run_dir in args.targets:
            if not (run_dir / "metrics.jsonl").is_file():
                parser.error(f"{run_dir} is not a run directory (no metrics.jsonl)")
        print(targets_table(args.targets))
        return 0
    if not args.pyro and not args.ours:
        parser.error("give at least one --pyro LOG or --ours RUN_DIR (or --targets RUN_DIR ...)")
    for spec in args.pyro + args.ours:
        if not named(spec)[1].exists():
            parser.error(f"{named(spec)[1]} does not exist")
    pyro = {name: read_pyro_log(path) for name, path in map(named, args.pyro)}
    ours = {name: read_run(path) for name, path in map(named, args.ours)}
    print(table(pyro, ours))
    if args.out:
        plot(pyro, ours, args.out, args.title)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
