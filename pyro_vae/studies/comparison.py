"""Comparing gradient estimators on a latent structure: gradient statistics, and training with each.

Generic over any model/guide pair: the gradients come from :mod:`pyro_vae.studies.estimators`, the
training from ``SVI``, and the validation ELBO from :func:`pyro_vae.evaluation.elbo_per_datapoint`. Each
estimator runs in its own scope of Pyro's parameter store, so baselines and optimizer state never leak
from one estimator to the next, and the caller's parameter store is left as it was. An estimator that does not
apply to the structure's sites (see :func:`~pyro_vae.studies.estimators.applicability`) gets one row with the
reason under ``not_applicable`` instead of numbers.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Optional, Sequence

import pyro
import torch
from pyro.infer import SVI

from pyro_vae import catalog
from pyro_vae.data import Dataset, Split, iterate_batches
from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation import elbo_per_datapoint
from pyro_vae.limits import SampleProgress
from pyro_vae.studies.estimators import (BASELINE_LR_FACTOR, ESTIMATORS, Estimator, applicability,
                                           check_positive, estimator_spec)
from pyro_vae.studies.gradients import gradient_statistics, sample_gradients
from pyro_vae.models import LatentStructure

DEFAULT_ESTIMATORS = catalog.DEFAULT_ESTIMATORS
EVAL_BATCH_SIZE = 1000

#: ``progress(description, total)`` returns a wrapper for a loop (e.g. a tqdm bar), or None for no bar
Progress = Callable[[str, int], Callable]


def _check_estimators(names: Sequence[str]) -> None:
    if not names:
        raise PyroVAEError("no gradient estimator was given; choose among " + ", ".join(ESTIMATORS))
    for name in names:
        estimator_spec(name)


def check_repeats(num_repeats: int) -> None:
    check_positive(num_repeats, "the number of repeated gradient estimates")
    if num_repeats < 2:
        raise PyroVAEError("a variance needs at least 2 repeated gradient estimates, got 1")


def _check_training(train: Split, num_steps: int, batch_size: int, eval_every: int) -> None:
    for value, what in ((num_steps, "the number of training steps"), (eval_every, "the evaluation interval"),
                        (batch_size, "the batch size")):
        check_positive(value, what)
    if batch_size > len(train):
        raise PyroVAEError(f"the batch size {batch_size} is larger than the {len(train)} training images")


def _loop(progress: Optional[Progress], description: str, total: int) -> Optional[Callable]:
    return progress(description, total) if progress else None


def gradient_table(model: Callable, guide: Callable, batch: tuple, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
                   *, num_repeats: int = 100, baseline_warmup: int = 100,
                   baseline_lr: float = BASELINE_LR_FACTOR * 1e-3,
                   progress: Optional[Progress] = None) -> list[dict]:
    """One row per estimator: statistics of ``num_repeats`` gradient estimates on ``batch`` for the guide's
    and the model's parameters (see :func:`gradient_statistics`), and seconds per gradient."""
    _check_estimators(estimators)
    check_repeats(num_repeats)
    rows = []
    for name in estimators:
        reason = applicability(name, model, guide, batch)
        if reason is not None:
            rows.append({"estimator": name, "not_applicable": reason})
            continue
        with pyro.get_param_store().scope():
            estimator = Estimator(name, model, guide, batch)
            result = sample_gradients(estimator, batch, num_repeats, baseline_warmup=baseline_warmup,
                                      baseline_lr=baseline_lr, progress=_loop(progress, name, num_repeats))
        row = {"estimator": name}
        for group, samples in result.samples.items():
            if samples.shape[1]:
                row.update({f"{group}_{key}": value for key, value in gradient_statistics(samples).items()})
        row["seconds_per_gradient"] = result.seconds_per_gradient
        rows.append(row)
    return rows


def _training_batches(dataset: Dataset, batch_size: int, seed: int, with_labels: bool) -> Iterator[tuple]:
    """Shuffled batches, epoch after epoch, all of ``batch_size`` images: the decaying-average baseline
    keeps one value per position in the batch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for batch in iterate_batches(dataset.train, batch_size, shuffle=True, generator=generator,
                                     binarize=dataset.binarize, with_labels=with_labels):
            if batch[0].shape[0] == batch_size:
                yield batch


def training_curves(structure: LatentStructure, dataset: Dataset, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
                    *, num_steps: int = 1000,
                    batch_size: int = 100, lr: float = 1e-3, eval_every: int = 100, seed: int = 0,
                    progress: Optional[Progress] = None, say: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Train ``structure`` with each estimator for ``num_steps`` SVI steps (Adam, ``lr``) from its current
    parameters, on the same batches; rows of (estimator, step, seconds, validation ELBO in nats per image).

    Seconds count SVI steps only, not the evaluations; the validation ELBO sums out the sites the structure
    marks for enumeration, whatever estimator trains. ``structure`` is left with the parameters it had. ``say``
    (e.g. ``print``) hears, once the first seconds show the pace, how long all the training will take when that
    is more than a minute.
    """
    _check_estimators(estimators)
    _check_training(dataset.train, num_steps, batch_size, eval_every)
    initial = copy.deepcopy(structure.state_dict())
    valid_batches = list(iterate_batches(dataset.valid, EVAL_BATCH_SIZE, with_labels=structure.needs_labels))
    rows = []
    pace = SampleProgress(num_steps * len(estimators), say=say or (lambda line: None), unit="SVI steps",
                          what=f"training with {len(estimators)} estimator(s) for {num_steps:,} steps each")
    for name in estimators:
        structure.load_state_dict(initial)
        with pyro.get_param_store().scope():
            def record(step: int, seconds: float) -> None:
                rows.append({"estimator": name, "step": step, "seconds": seconds,
                             "valid_elbo": elbo_per_datapoint(structure.model, structure.guide, valid_batches)})

            pyro.set_rng_seed(seed)
            batches = _training_batches(dataset, batch_size, seed, structure.needs_labels)
            first = next(batches)
            reason = applicability(name, structure.model, structure.guide, first)
            if reason is not None:
                rows.append({"estimator": name, "not_applicable": reason})
                continue
            record(0, 0.0)
            estimator = Estimator(name, structure.model, structure.guide, first)
            svi = SVI(estimator.model, estimator.guide, estimator.optimizer(lr), loss=estimator.elbo)
            seconds = 0.0
            steps = (_loop(progress, f"train {name}", num_steps) or iter)(range(1, num_steps + 1))
            for step, batch in zip(steps, itertools.chain([first], batches)):
                start = time.perf_counter()
                loss = svi.step(*batch)
                seconds += time.perf_counter() - start
                pace(1)
                if not math.isfinite(loss):
                    rows.append({"estimator": name, "step": step, "seconds": seconds, "valid_elbo": math.nan})
                    break
                if step % eval_every == 0 or step == num_steps:
                    record(step, seconds)
    structure.load_state_dict(initial)
    return rows


@dataclass
class EstimatorComparison:
    """Gradient statistics per model state and estimator, and training curves per estimator."""

    gradients: list[dict] = field(default_factory=list)
    training: list[dict] = field(default_factory=list)


def compare_estimators(states: Mapping[str, LatentStructure], dataset: Dataset,
                       estimators: Sequence[str] = DEFAULT_ESTIMATORS, *, train_from: Optional[str] = None,
                       batch_size: int = 100, num_repeats: int = 100, baseline_warmup: int = 100,
                       num_steps: int = 1000, eval_every: int = 100, lr: float = 1e-3, seed: int = 0,
                       progress: Optional[Progress] = None,
                       say: Optional[Callable[[str], None]] = None) -> EstimatorComparison:
    """Gradient statistics of every estimator for each model state (e.g. ``{"fresh": vae, "trained": vae2}``)
    on the first ``batch_size`` training images (binarized as ``dataset`` says); then, if ``train_from``
    names a state, training curves of every estimator from that state's parameters (``num_steps=0``: none);
    ``say`` hears how long the training will take, as for :func:`training_curves`."""
    _check_estimators(estimators)
    check_repeats(num_repeats)
    if train_from is not None:
        if train_from not in states:
            raise PyroVAEError(f"train_from={train_from!r} is not one of the model states {', '.join(states)}")
        if num_steps:
            _check_training(dataset.train, num_steps, batch_size, eval_every)
    comparison = EstimatorComparison()
    for label, structure in states.items():
        pyro.set_rng_seed(seed)  # the same batch for every state, also when binarization samples it
        batch = next(iterate_batches(dataset.train, batch_size, binarize=dataset.binarize,
                                     with_labels=structure.needs_labels))
        rows = gradient_table(structure.model, structure.guide, batch, estimators, num_repeats=num_repeats,
                              baseline_warmup=baseline_warmup, baseline_lr=BASELINE_LR_FACTOR * lr,
                              progress=(lambda d, n: progress(f"{label}: {d}", n)) if progress else None)
        comparison.gradients += [{"model": label, **row} for row in rows]
    if train_from is not None and num_steps:
        comparison.training = training_curves(states[train_from], dataset, estimators,
                                              num_steps=num_steps, batch_size=batch_size, lr=lr,
                                              eval_every=eval_every, seed=seed, progress=progress, say=say)
    return comparison
