"""Declare your own latent structure in one file, outside the library, and use everything on it.

The structure below is a VAE with a heavy-tailed Laplace prior, p(z) = prod_i Laplace(z_i; 0, 1), instead
of N(0, I). Nothing else changes, and the library's training, evaluation, sampling, pictures and
command line work on it without knowing what it is:

    python examples/custom_structure.py --epochs 5                 # through the Python API
    pyro-vae train --model examples/custom_structure.py:LaplacePriorVAE --epochs 5 --name laplace
    pyro-vae evaluate runs/laplace -K 1000
    pyro-vae sample runs/laplace
    pyro-vae compare-estimators --run-dir runs/laplace --repeats 50 --train-steps 200

The contract (see pyro_vae/models/base.py): subclass LatentStructure (here: VAE, to reuse its encoder,
decoder and guide); write model(x, ...) and guide(x, ...) with the observation site "x" and every
per-image site inside pyro.plate("data", batch_size); accept the keyword arguments x_dim, z_dim,
hidden_dims, activation; return them from config(). Because it inherits the VAE's constructor, which takes
image_shape, likelihood and net, and its model observes x through self.observe, this file also trains on
grey or colour images with any --likelihood and --net conv:

    pyro-vae train --model examples/custom_structure.py:LaplacePriorVAE --dataset mnist-test-release \
        --likelihood continuous-bernoulli --net conv --epochs 5 --name laplace-conv
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import pyro.distributions as dist

from pyro_vae.models import VAE


class LaplacePriorVAE(VAE):
    """The VAE's encoder, decoder and guide, with p(z) = prod_i Laplace(z_i; 0, 1): only the model changes."""

    def model(self, x):
        x = self.check_batch(x)  # (N, x_dim), whether the batch came flat or as images (N, C, H, W)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Laplace(x.new_zeros(self.z_dim), 1.0).to_event(1))
            self.observe(self.decoder(z), x)  # pyro.sample("x", p(x | z), obs=x) with the run's --likelihood


def main(argv=None) -> dict:
    from pyro_vae.evaluation import evaluate_model
    from pyro_vae.studies.comparison import gradient_table
    from pyro_vae.plots.training import plot_images
    from pyro_vae.training import TrainConfig, Trainer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--subset", type=int, default=None, help="images per split, for a quick run")
    parser.add_argument("--z-dim", type=int, default=20)
    parser.add_argument("--hidden-dims", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--num-samples", type=int, default=500, help="importance samples per test image")
    parser.add_argument("--repeats", type=int, default=50, help="gradient estimates per estimator")
    parser.add_argument("--run-dir", default="runs/laplace-prior-vae-example")
    args = parser.parse_args(argv)

    # The model is named by file and class, so the checkpoint can rebuild it later.
    config = TrainConfig(model=f"{Path(__file__).resolve()}:LaplacePriorVAE", epochs=args.epochs,
                         subset=args.subset, z_dim=args.z_dim, hidden_dims=args.hidden_dims)
    trainer = Trainer(config, args.run_dir)
    trainer.fit()
    structure = trainer.model.eval()
    result = evaluate_model(structure, list(trainer.batches("test")), num_samples=args.num_samples)
    plot_images(structure.generate(64), Path(args.run_dir) / "samples.png", title="Laplace-prior VAE samples")
    print(f"test ELBO {result['elbo']:.2f}, test NLL {result['nll']:.2f} nats/image (K={args.num_samples}); "
          f"samples in {args.run_dir}/samples.png")
    batch = (trainer.dataset.train.images[:100],)
    rows = gradient_table(structure.model, structure.guide, batch, ["reparam", "score", "score-avg-baseline"],
                          num_repeats=args.repeats, baseline_warmup=args.repeats)
    for row in rows:
        print(f"{row['estimator']:>20}: encoder gradient total variance {row['guide_total_variance']:.3g}")
    return {**result, "gradients": rows}


if __name__ == "__main__":
    main()
