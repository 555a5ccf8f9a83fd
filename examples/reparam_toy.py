"""Score function against reparameterization on d/dtheta E[x^2], x ~ N(theta, 1), from Python.

    python examples/reparam_toy.py [--theta 2] [--repeats 1000] [--out runs/reparam-toy-example/reparam_toy.png]

The same numbers as ``pyro-vae reparam-toy``: both estimates come from Pyro's ELBOs (Trace_ELBO through the
reparameterized sample, TraceGraph_ELBO with the site made non-reparameterized).
"""
import argparse
from pathlib import Path

import pyro

from pyro_vae.studies.toy import toy_table
from pyro_vae.plots.estimators import plot_toy_variances


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--theta", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--sample-sizes", type=lambda text: [int(n) for n in text.split(",")],
                        default=[10, 100, 1000, 10_000, 100_000], help="comma-separated N")
    parser.add_argument("--out", default="runs/reparam-toy-example/reparam_toy.png",
                        help="the plot (its folder is created)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(0)
    rows = toy_table(theta=args.theta, num_repeats=args.repeats, sample_sizes=args.sample_sizes)
    print(f"{'N':>7} {'score var':>11} {'analytic':>11} {'reparam var':>12} {'analytic':>11} {'ratio':>7}")
    for row in rows:
        print(f"{row['num_samples']:>7} {row['score_variance']:>11.4g} {row['score_variance_analytic']:>11.4g} "
              f"{row['reparam_variance']:>12.4g} {row['reparam_variance_analytic']:>11.4g} "
              f"{row['variance_ratio']:>7.2f}")
    print(f"plot: {plot_toy_variances(rows, out)}")


if __name__ == "__main__":
    main()
