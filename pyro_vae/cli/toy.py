"""``pyro-vae reparam-toy``: the score function against the reparameterization trick on d/dtheta E[x^2],
x ~ N(theta, 1), with the analytic variances beside the measured ones."""
from __future__ import annotations

import argparse
import time

from pyro_vae.cli.tables import TOY_FILES, _output_dir, _print_table
from pyro_vae.config import check_seed
from pyro_vae.files import write_csv, write_json

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


def reparam_toy_command(args: argparse.Namespace) -> int:
    import pyro
    from tqdm.auto import tqdm

    from pyro_vae.studies.toy import TOY_ESTIMATORS, check_toy_table, estimated_seconds, toy_table
    from pyro_vae.plots.estimators import plot_toy_variances

    from pyro_vae.studies.toy import MAX_ELEMENTS
    from pyro_vae.limits import check_toy_fits, duration_text

    check_toy_table(args.theta, args.repeats, args.sample_sizes)
    check_seed(args.seed)
    check_toy_fits(args.repeats, args.sample_sizes, len(TOY_ESTIMATORS), MAX_ELEMENTS)
    out_dir = _output_dir(args.out, TOY_FILES)
    expected = estimated_seconds(args.repeats, args.sample_sizes)
    if expected > 60:
        print(f"R x sum(N) = {args.repeats * sum(args.sample_sizes):.3g} samples per estimator: "
              f"{duration_text(expected)} on one core here (memory stays bounded); Ctrl-C stops it", flush=True)
    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    rows = toy_table(args.theta, args.repeats, args.sample_sizes,
                     progress=None if args.no_progress else
                     lambda jobs: tqdm(jobs, desc="N, estimator", leave=False, disable=None))
    seconds = time.perf_counter() - start
    columns = [("num_samples", "N", "d")]
    for name in TOY_ESTIMATORS:
        columns += [(f"{name}_mean", f"{name} mean", ".4f"), (f"{name}_variance", f"{name} var", ".4g"),
                    (f"{name}_variance_analytic", f"{name} var (analytic)", ".4g")]
    columns += [("variance_ratio", "ratio", ".2f"), ("variance_ratio_analytic", "ratio (analytic)", ".2f")]
    _print_table(rows, columns)
    print(f"theta = {args.theta}, true gradient {2 * args.theta:g}, R = {args.repeats} repeats per N; "
          f"{seconds:.1f} s")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out_dir / TOY_FILES[0])
    write_json({"theta": args.theta, "repeats": args.repeats, "seed": args.seed, "seconds": seconds,
                 "rows": rows}, out_dir / TOY_FILES[1])
    plot_toy_variances(rows, out_dir / TOY_FILES[2],
                       title=f"d/dθ E[x²], x ~ N(θ={args.theta:g}, 1): variance over R={args.repeats} estimates")
    print("results: " + ", ".join(str(out_dir / name) for name in TOY_FILES))
    return 0
