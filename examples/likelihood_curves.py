"""The validation curves of the reproducibility table's runs, from their kept metrics.

    python examples/likelihood_curves.py [--results docs/results] [--out docs/figures/likelihood/validation_curves.png]

Reads the ``*-metrics.jsonl`` that the reproducibility table (docs/results.md) keeps in ``docs/results/`` (one row per
epoch, as ``pyro-vae train`` writes them) and plots minus the validation ELBO per image by epoch for each
run, and minus the validation IWAE bound where a run trained it (a fine-tuned run is drawn from the epoch of
the run it started from). Lower is better; the best epoch of each run is marked.
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pyro_vae.config import best_row, selection_key  # noqa: E402
from pyro_vae.plots.training import save_figure  # noqa: E402


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(results: Path) -> dict[str, dict]:
    """Per run in ``results``: its epochs (shifted by the best epoch of the run it started from, for
    ``--init-from``), the metric it picks its best epoch by ("valid_bound" or "valid_elbo"), and its rows."""
    found = {}
    for path in sorted(results.glob("*-metrics.jsonl")):
        name = path.name.removesuffix("-metrics.jsonl")
        rows = read_rows(path)
        config_path = results / f"{name}-config.json"
        offset = 0
        if config_path.is_file():
            init_from = json.loads(config_path.read_text()).get("init_from")
            source = results / f"{Path(init_from).name}-metrics.jsonl" if init_from else None
            if source is not None and source.is_file():  # start where the run it came from had its best epoch
                offset = best_row(read_rows(source))["epoch"]
        key = selection_key(rows)
        found[name] = {"epochs": [offset + row["epoch"] for row in rows], "key": key, "rows": rows}
    return found


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="docs/results", help="folder of the runs' *-metrics.jsonl")
    parser.add_argument("--out", default="docs/figures/likelihood/validation_curves.png")
    args = parser.parse_args(argv)
    runs = curves(Path(args.results))
    if not runs:
        parser.error(f"no *-metrics.jsonl in {args.results}")
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, run in runs.items():
        epochs, key, rows = run["epochs"], run["key"], run["rows"]
        values = [-row[key] for row in rows]
        label = f"{name}: -{'IWAE bound' if key == 'valid_bound' else 'ELBO'}"
        (line,) = ax.plot(epochs, values, "-", lw=1.2, label=label)
        best = rows.index(best_row(rows))
        ax.plot(epochs[best], values[best], "o", color=line.get_color())
        if key == "valid_bound":
            ax.plot(epochs, [-row["valid_elbo"] for row in rows], ":", color=line.get_color(), lw=1,
                    label=f"{name}: -ELBO")
    ax.set_xscale("log")
    ax.set_ylim(84, 110)
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("validation nats per image (lower is better)")
    ax.set_title("Statically binarized MNIST, validation bounds (dots: best epochs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"written to {save_figure(fig, out)}")


if __name__ == "__main__":
    main()
