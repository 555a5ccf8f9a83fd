"""What the estimator commands run on: their shared options checked before any work, and the data with a fresh
and a trained structure (from --run-dir, or trained here for a few epochs)."""
from __future__ import annotations

import argparse
from typing import Callable, Optional

from pyro_vae.cli.common import existing_run_dir
from pyro_vae.config import TrainConfig, check_positive, check_positive_finite, check_seed
from pyro_vae.errors import PyroVAEError

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run (see cli/runs.py).


def _check_common(args: argparse.Namespace) -> None:
    """The options compare-estimators and discrete-estimators share, checked before any work."""
    from pyro_vae.training import check_config, resolve_device

    defaults = vars(args).pop("model_defaults", {})
    given = [f"--{name.replace('_', '-')}" for name in (*defaults, "model_option") if getattr(args, name) is not None]
    if args.run_dir is not None and given:
        raise PyroVAEError(f"--run-dir takes the model, its structure and its data settings from the run, so "
                           f"{', '.join(given)} would be ignored; drop {'it' if len(given) == 1 else 'them'}")
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    check_seed(args.seed)
    check_positive_finite(args.lr, "--lr")
    resolve_device(args.device)
    if args.run_dir is not None:
        existing_run_dir(args.run_dir, "--run-dir ")
    if args.run_dir is None:
        config = TrainConfig(model=args.model, z_dim=args.z_dim, hidden_dims=args.hidden_dims,
                             activation=args.activation, model_options=dict(args.model_option or []),
                             subset=args.subset, lr=args.lr, seed=args.seed)
        check_config(config)


def _dataset_and_states(args: argparse.Namespace, *, check: Optional[Callable] = None) -> tuple:
    """The data, the freshly initialised structure, and a trained one: loaded from --run-dir (with its data
    settings), or trained here for --train-epochs with the structure's default ELBO from that same
    initialisation (--train-epochs 0, where ``args.allow_untrained``: no trained one). ``check(structure,
    dataset)`` runs on the fresh structure before any training."""
    import copy
    import tempfile

    import pyro
    import torch

    from pyro_vae.training import Trainer, load_run_data, load_trained_model

    if args.run_dir:
        trained, config, _ = load_trained_model(args.run_dir, args.device)
        dataset = load_run_data(config, subset=args.subset, device=args.device)
        pyro.set_rng_seed(args.seed)
        if check:
            check(trained, dataset)
        _check_gradient_memory(trained, args)
        fresh = type(trained)(**trained.config()).to(args.device)  # the run's structure, from the checkpoint's source
        with torch.no_grad():  # the run's own starting point, data-dependent initialisation included
            fresh.initialize(dataset.train.images, torch.Generator().manual_seed(config.seed))
        return dataset, {"fresh": fresh, "trained": trained}
    if not (getattr(args, "allow_untrained", False) and args.train_epochs == 0):
        check_positive(args.train_epochs, "--train-epochs")
    config = TrainConfig(dataset=args.dataset, binarize=args.binarize, subset=args.subset, model=args.model,
                         z_dim=args.z_dim, hidden_dims=args.hidden_dims, activation=args.activation,
                         model_options=dict(args.model_option or []), epochs=max(args.train_epochs, 1),
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)
    dataset = load_run_data(config, device=args.device)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, progress=False if args.no_progress else None, dataset=dataset)
        _check_gradient_memory(trainer.model, args)
        fresh = copy.deepcopy(trainer.model)
        if check:
            check(fresh, dataset)
        if args.train_epochs == 0:
            return dataset, {"fresh": fresh}
        print(f"training {config.model} for {config.epochs} epochs on {len(dataset.train)} images "
              f"(--elbo {config.elbo})")
        trainer.fit()
    return dataset, {"fresh": fresh, "trained": trainer.model}


def _check_gradient_memory(model, args: argparse.Namespace) -> None:
    """The repeated gradient estimates are kept, one flat gradient of every parameter per repeat (and stacked
    once): refuse, before any training, a --repeats whose gradients cannot fit."""
    from pyro_vae.limits import FLOAT_BYTES, check_fits

    repeats = getattr(args, "repeats", None)
    if repeats is None:
        return
    params = sum(p.numel() for p in model.parameters())
    check_fits(2 * repeats * params * FLOAT_BYTES, f"--repeats {repeats:,} gradient estimates of the {params:,} "
               "parameters", "use fewer --repeats or a smaller model", args.device)


def _data_batch(dataset, batch_size: int, with_labels: bool) -> tuple:
    from pyro_vae.data import iterate_batches

    return next(iterate_batches(dataset.train, batch_size, binarize=dataset.binarize, with_labels=with_labels))
