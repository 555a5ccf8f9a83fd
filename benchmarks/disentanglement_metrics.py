"""Seconds per disentanglement metric at disentanglement_lib's sizes, on this machine.

    python benchmarks/disentanglement_metrics.py [--num-codes 10000] [--dims 10] [--seed 0] [--dci-trees both]
        [--with-model]

MIG, DCI, SAP and modularity / explicitness are timed on ``--num-codes`` codes of ``--dims`` dimensions that
depend on the dSprites factors of the same samples (a noisy random linear map of them, so that the
classifiers have something to learn); the BetaVAE and FactorVAE scores at their default sizes (10,000 training
points, 5,000 evaluation points, batches of 64) with that same map as the representation, so their rows are
the metrics' own cost. ``--with-model`` adds the two scores with the representation a run would use: the
factors rendered as 32 x 32 dSprites images and encoded by a conv VAE (untrained: the cost does not depend
on the weights), which is what ``pyro-vae disentanglement`` spends most of its time on.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pyro_vae.data.dsprites import FACTOR_SIZES, render, sample_factors
from pyro_vae.disentanglement import metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-codes", type=int, default=10_000, help="codes for MIG, DCI, SAP, modularity")
    parser.add_argument("--dims", type=int, default=10, help="code dimensions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-points", type=int, default=10_000, metavar="N",
                        help="training points of the BetaVAE and FactorVAE scores (N / 2 to evaluate; default 10,000, "
                             "the published setting)")
    parser.add_argument("--dci-trees", choices=("both", "gbt", "histogram"), default="both",
                        help="which trees DCI is timed with: the exact gradient-boosted ones, scikit-learn's histogram "
                             "ones (pyro-vae disentanglement --dci-trees histogram), or both (default)")
    parser.add_argument("--with-model", action="store_true",
                        help="also time the BetaVAE and FactorVAE scores through rendering and a conv encoder")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    mixing = rng.normal(size=(len(FACTOR_SIZES), args.dims))

    def represent(factors: np.ndarray) -> np.ndarray:
        scaled = np.asarray(factors, dtype=float) / np.maximum(np.array(FACTOR_SIZES) - 1, 1)
        return scaled @ mixing + 0.05 * rng.normal(size=(len(factors), args.dims))

    def draw(num: int, generator: np.random.Generator) -> np.ndarray:
        return sample_factors(num, generator).numpy()

    points = {"num_train": args.score_points, "num_eval": max(args.score_points // 2, 1)}
    factors = draw(args.num_codes, rng)
    codes = represent(factors)
    dci_rows = [("DCI (gradient-boosted trees)", lambda: metrics.dci(codes, factors, FACTOR_SIZES)),
                ("DCI (histogram trees, --dci-trees histogram)",
                 lambda: metrics.dci(codes, factors, FACTOR_SIZES, trees="histogram"))]
    dci_rows = {"both": dci_rows, "gbt": dci_rows[:1], "histogram": dci_rows[1:]}[args.dci_trees]
    rows = [("MIG", lambda: metrics.mig(codes, factors, FACTOR_SIZES)),
            *dci_rows,
            ("SAP", lambda: metrics.sap_score(codes, factors, FACTOR_SIZES)),
            ("modularity and explicitness", lambda: metrics.modularity_explicitness(codes, factors, FACTOR_SIZES)),
            (f"BetaVAE score ({points['num_train']:,} / {points['num_eval']:,} points)",
             lambda: metrics.beta_vae_score(draw, represent, FACTOR_SIZES, np.random.default_rng(1), **points)),
            (f"FactorVAE score ({points['num_train']:,} / {points['num_eval']:,} points)",
             lambda: metrics.factor_vae_score(draw, represent, FACTOR_SIZES, np.random.default_rng(1), **points))]
    if args.with_model:
        from pyro_vae.models import VAE

        vae = VAE(x_dim=32 * 32, z_dim=args.dims, image_shape=(1, 32, 32), net="conv").eval()

        @torch.no_grad()
        def encode(batch_factors: np.ndarray) -> np.ndarray:
            return vae.encode(render(batch_factors, 32)).double().numpy()

        rows += [("BetaVAE score, rendered + conv encoder",
                  lambda: metrics.beta_vae_score(draw, encode, FACTOR_SIZES, np.random.default_rng(1), **points)),
                 ("FactorVAE score, rendered + conv encoder",
                  lambda: metrics.factor_vae_score(draw, encode, FACTOR_SIZES, np.random.default_rng(1), **points))]
    print(f"{args.num_codes:,} codes of {args.dims} dimensions, dSprites factors {FACTOR_SIZES}, "
          f"{torch.get_num_threads()} torch threads")
    print(f"{'metric':<45} {'seconds':>8}  result")
    for name, run in rows:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        print(f"{name:<45} {seconds:>8.2f}  " + ", ".join(f"{k} {v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
