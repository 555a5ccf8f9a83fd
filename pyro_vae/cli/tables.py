"""What the estimator commands share: the output files, parsers of value lists, the output folder, progress bars
and printed tables."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from pyro_vae.catalog import ESTIMATOR_SUMMARIES, is_estimator_name
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import check_can_create_dir

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


TOY_FILES = ("reparam_toy.csv", "reparam_toy.json", "reparam_toy.png")
COMPARISON_FILES = ("gradient_statistics.csv", "training_curves.csv", "comparison.json",
                    "gradient_statistics.png", "training_curves.png")
SNR_FILES = ("snr.csv", "snr_slopes.csv", "snr.json", "snr.png")
DISCRETE_FILES = ("discrete_estimators.csv", "discrete_estimators.json", "discrete_estimators.png")
NOT_APPLICABLE_COLUMN = ("not_applicable", "not applicable because", "s")


def _positive_ints(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 10,100,1000, got {text!r}")
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive whole numbers, got {text!r}")
    return values


def _positive_floats(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,0.5,0.1, got {text!r}")
    if not values or not all(0 < value < float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _estimator_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no estimator in {text!r}; choose among {', '.join(ESTIMATOR_SUMMARIES)}")
    for name in names:
        if not is_estimator_name(name):
            raise argparse.ArgumentTypeError(f"unknown estimator {name!r}; choose among "
                                             f"{', '.join(ESTIMATOR_SUMMARIES)} (concrete-T for any temperature T > 0)")
    return names


def _output_dir(out: str, names: Sequence[str]) -> Path:
    """Refuse, before any work, to overwrite earlier results or to write where nothing can be written."""
    out_dir = Path(out)
    check_can_create_dir(out_dir, "--out")
    existing = [name for name in names if (out_dir / name).exists()]
    if existing:
        raise PyroVAEError(f"{out_dir / existing[0]} already exists; choose another --out or remove the old results")
    return out_dir


def _progress(args: argparse.Namespace):
    """A tqdm bar factory ``(description, total) -> wrapper``, or None with --no-progress."""
    from tqdm.auto import tqdm

    if args.no_progress:
        return None
    # disable=None: the bars show on a terminal only, never in a log file (as train's)
    return lambda description, total: (lambda it: tqdm(it, desc=description, total=total, leave=False,
                                                       disable=None))


def _print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print ``rows`` as a markdown table; ``columns`` are (key, header, format). Rows of an estimator that
    does not apply say why in a last column."""
    if any(NOT_APPLICABLE_COLUMN[0] in row for row in rows):
        columns = [*columns, NOT_APPLICABLE_COLUMN]
    print("| " + " | ".join(header for _, header, _ in columns) + " |")
    print("|" + "|".join("---:" for _ in columns) + "|")
    for row in rows:
        cells = [format(row[key], fmt) if key in row else "" for key, _, fmt in columns]
        print("| " + " | ".join(cells) + " |")
