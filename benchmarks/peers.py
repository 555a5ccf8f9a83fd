"""Milliseconds per training step of the same VAE in pythae's own trainer, Pyro's textbook SVI loop and
``pyro-vae train``'s loop, on the same batches, interleaved in rounds.

    pip install -e ".[peers]"          # pythae
    python benchmarks/peers.py [--rounds 20] [--chunk 20] [--batch-size 100] [--threads N] [--clock wall|thread]
                               [--nll-images 200] [--nll-samples 100]

The network is the default VAE's, 784-200-200-50 with ReLU and Bernoulli pixels, on the shipped binarized MNIST.
pythae's side is its ``VAE`` with ``reconstruction_loss="bce"`` and encoder/decoder modules holding the same
layers (``pythae.models.nn.BaseEncoder`` / ``BaseDecoder``), trained by ``BaseTrainer.train_step`` (one call: one
pass over a chunk of batches, Adam at the same learning rate, shuffling off so both see the same batches). Pyro's
textbook loop is ``SVI(Trace_ELBO)`` with ``pyro.optim.Adam``; pyro-vae's is ``Trainer.run_steps`` with its
defaults, and with ``--optimizer fused-adam``. As in ``svi_vs_pytorch.py``, variants take turns in each round, and
each round's time is divided by pythae's; the table gives the median and quartiles of the ratios. Then the
importance-sampled NLL of one model on ``--nll-images`` test images with K = ``--nll-samples``: pythae's
``get_nll`` against ``pyro_vae.evaluation``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import pyro
import torch
from torch import nn

_spec = importlib.util.spec_from_file_location("svi_vs_pytorch", Path(__file__).with_name("svi_vs_pytorch.py"))
svi_vs_pytorch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(svi_vs_pytorch)

from pyro_vae.evaluation import negative_log_likelihood  # noqa: E402
from pyro_vae.models import VAE  # noqa: E402


def pythae_vae(structure: VAE):
    """pythae's VAE whose encoder and decoder run ``structure``'s layers (log-variance = 2 log scale)."""
    from pythae.models import VAE as PythaeVAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = structure.encoder

        def forward(self, x):
            loc, scale = self.net(x.reshape(x.shape[0], -1))
            return ModelOutput(embedding=loc, log_covariance=2 * scale.log())

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = structure.decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).reshape(z.shape[0], 1, 28, 28))

    config = VAEConfig(input_dim=(1, 28, 28), latent_dim=structure.z_dim, reconstruction_loss="bce")
    return PythaeVAE(config, encoder=Encoder(), decoder=Decoder())


class PythaeTrainer(svi_vs_pytorch.Variant):
    """pythae's BaseTrainer: ``train_step`` runs one pass over the chunk it is given."""

    elbo = "pythae VAE (bce)"

    def __init__(self, lr: float, batch_size: int, workdir: Path):
        self.lr, self.batch_size, self.workdir = lr, batch_size, workdir
        self.trainers = {}

    def prepare(self, structure: nn.Module) -> None:
        self.model = pythae_vae(structure)

    def _trainer(self, batches):
        from pythae.data.datasets import BaseDataset
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        key = id(batches)
        if key not in self.trainers:
            images = torch.cat([x for (x,) in batches]).reshape(-1, 1, 28, 28)
            config = BaseTrainerConfig(output_dir=str(self.workdir), learning_rate=self.lr,
                                       per_device_train_batch_size=self.batch_size, num_epochs=1,
                                       train_dataloader_num_workers=0, no_cuda=True)
            trainer = BaseTrainer(self.model, BaseDataset(images, torch.zeros(len(images))), training_config=config)
            trainer.prepare_training()  # what train() sets up before its epochs: optimizer, callbacks, output folder
            trainer.train_loader = torch.utils.data.DataLoader(trainer.train_dataset, batch_size=self.batch_size,
                                                               shuffle=False)
            if not self.trainers:
                self.optimizer = trainer.optimizer
            trainer.optimizer = self.optimizer  # one Adam for every chunk, as the other variants keep theirs
            trainer.amp_context = contextlib.nullcontext()
            self.trainers[key] = trainer
        return self.trainers[key]

    def run(self, batches) -> None:
        self._trainer(batches).train_step(epoch=1)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    svi_vs_pytorch.add_timing_arguments(parser)
    svi_vs_pytorch.add_clock_argument(parser)
    parser.add_argument("--nll-images", type=int, default=200, help="test images of the NLL comparison")
    parser.add_argument("--nll-samples", type=int, default=100, help="importance samples K per image")
    parser.set_defaults(chunk=20)
    args = parser.parse_args(argv)
    if args.clock == "thread" and args.threads != 1:
        parser.error("--clock thread counts the CPU time of one thread only: pass --threads 1")
    try:
        import pythae  # noqa: F401
    except ImportError:
        parser.error("this benchmark needs pythae: pip install -e '.[peers]'")
    data, chunks = svi_vs_pytorch.load_chunks(args)
    workdir = Path(tempfile.mkdtemp(prefix="peers-benchmark-"))
    variants = {
        "pythae BaseTrainer.train_step": PythaeTrainer(args.lr, args.batch_size, workdir),
        "plain SVI loop (pyro.optim)": svi_vs_pytorch.PlainSVI(args.lr),
        "pyro-vae train (default)": svi_vs_pytorch.TrainerSteps(data, args.lr, args.batch_size, workdir),
        "pyro-vae train --optimizer fused-adam": svi_vs_pytorch.TrainerSteps(data, args.lr, args.batch_size, workdir,
                                                                             optimizer="fused-adam"),
    }
    pyro.set_rng_seed(0)
    seconds = svi_vs_pytorch.time_variants(variants, VAE().to(args.device), chunks, args.rounds,
                                           svi_vs_pytorch.CLOCKS[args.clock])
    svi_vs_pytorch.print_table(variants, seconds, args, reference="pythae BaseTrainer.train_step",
                               title="ratios to pythae's step: ", ratio_label="ratio to pythae")

    # evaluation: the NLL of one trained model (pythae's, which shares the layers of the structure it wraps)
    structure = variants["pythae BaseTrainer.train_step"].model
    model = VAE()
    model.encoder, model.decoder = structure.encoder.net, structure.decoder.net
    model.eval()
    test = data.test.images[:args.nll_images]
    timings = {}
    start = time.perf_counter()
    torch.manual_seed(0)
    ours = negative_log_likelihood(model.model, model.guide, [(test,)], num_samples=args.nll_samples)
    timings["pyro-vae negative_log_likelihood"] = time.perf_counter() - start
    start = time.perf_counter()
    torch.manual_seed(0)
    theirs = -structure.get_nll(test.reshape(-1, 1, 28, 28), n_samples=args.nll_samples, batch_size=args.nll_images)
    timings["pythae get_nll"] = time.perf_counter() - start
    print(f"\nNLL of one model, {args.nll_images} test images, K = {args.nll_samples}: pyro-vae {ours:.2f} in "
          f"{timings['pyro-vae negative_log_likelihood']:.2f} s, pythae {float(theirs):.2f} in "
          f"{timings['pythae get_nll']:.2f} s (ratio {timings['pyro-vae negative_log_likelihood'] / timings['pythae get_nll']:.3f})")


if __name__ == "__main__":
    main()
