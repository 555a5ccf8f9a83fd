"""``pyro-vae train``: one process, or N of them started with ``--nproc-per-node``, then the final evaluation and
pictures."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from pyro_vae.catalog import CHECKPOINT, METRICS
from pyro_vae.cli.options import _add_train_options, _given_options
from pyro_vae.config import TrainConfig, check_positive, selection_value
from pyro_vae.errors import PyroVAEError
from pyro_vae.files import check_can_create_dir, locked_run_dir, run_lock

# Only names above: torch, Pyro and matplotlib are imported by the commands when they run, so that the
# parser, --help and argparse's errors come at once.


def _run_dir(args: argparse.Namespace) -> Path:
    if args.run_dir:
        return Path(args.run_dir)
    if args.resume and not args.name:  # a name made up now would name no run
        raise PyroVAEError("--resume continues an earlier run: name it with --run-dir DIR (or --name NAME for "
                           "runs/NAME)")
    name = args.name or time.strftime("vae-%Y%m%d-%H%M%S")
    if Path(name).name != name or name in (".", ".."):
        raise PyroVAEError(f"--name {name!r} names a run under runs/, not a path; give --run-dir for a folder elsewhere")
    return Path("runs") / name


def train_command(args: argparse.Namespace) -> int:
    from pyro_vae.training import check_config, load_checkpoint

    check_positive(args.eval_samples, "--eval-samples", optional=True)
    _check_launch_option(args.nproc_per_node)
    given = _given_options(args)
    run_dir = _run_dir(args)
    if args.resume:  # options left out keep the checkpoint's values
        config = replace(TrainConfig.from_dict(load_checkpoint(run_dir / CHECKPOINT)["config"]), **given)
    else:
        config = TrainConfig(**given)  # the Trainer refuses a run directory that exists and is not empty
    check_config(config)  # every option, before the data are loaded
    if args.nproc_per_node is not None and args.nproc_per_node > 1:
        return _launch(args, config, run_dir)
    from pyro_vae.distributed import from_environment

    distributed = from_environment(config.device)  # under torchrun: this process's place in the job
    if distributed is not None and not distributed.is_main:
        return _train_alongside(args, config, run_dir, distributed)
    try:
        with locked_run_dir(run_dir):
            return _train(args, config, run_dir, distributed)
    finally:
        if distributed is not None:
            distributed.close()


def _train_alongside(args: argparse.Namespace, config: TrainConfig, run_dir: Path, distributed) -> int:
    """A process of a distributed job other than rank 0: trains its shards, writes nothing, prints nothing."""
    from pyro_vae.training import Trainer

    try:
        Trainer(config, run_dir, resume=args.resume, progress=False, log=lambda line: None,
                distributed=distributed).fit()
    finally:
        distributed.close()
    return 0


def _check_launch_option(processes) -> None:
    """``--nproc-per-node``: a positive number, at most this machine's cores, and not inside a job already."""
    import os

    if processes is None:
        return
    check_positive(processes, "--nproc-per-node")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        raise PyroVAEError("--nproc-per-node starts the processes itself, and this process is already one of a job "
                           "started by torchrun; drop --nproc-per-node, or start pyro-vae without torchrun")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if processes > 1 and processes > max(cores, 2):
        raise PyroVAEError(f"--nproc-per-node {processes} asks for more processes than the {cores} CPU cores this "
                           f"process may use; give at most {max(cores, 2)}")


def _launch(args: argparse.Namespace, config: TrainConfig, run_dir: Path) -> int:
    """``train --nproc-per-node N``: check here everything a process of the job would check before training, as
    rank 0 of N (the Trainer, built with :class:`~pyro_vae.distributed.Rehearsal`: the data, the structure, a
    checkpoint to resume and its number of processes, the batch against the processes), then start the N
    processes with torch's elastic launcher (:func:`pyro_vae.distributed.launch`); returns the status of the
    process that failed first, or 0."""
    import gc
    import signal
    import sys

    import pyro
    import torch

    from pyro_vae.distributed import Rehearsal, kept_checkpoint, launch, timeout_seconds
    from pyro_vae.training import Trainer

    processes = args.nproc_per_node
    if str(config.device).startswith("cuda"):
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if 0 < gpus < processes:
            raise PyroVAEError(f"--nproc-per-node {processes} with --device {config.device} gives each process a GPU "
                               f"of its own, and this machine has {gpus}; give at most {gpus}")
    timeout_seconds()  # PYRO_VAE_DIST_TIMEOUT, checked once here
    check_can_create_dir(run_dir, "the run directory")
    if run_dir.is_dir():
        with run_lock(run_dir):  # another process training there: said here, not by the job
            pass
    backend = "nccl" if str(config.device).startswith("cuda") else "gloo"
    rehearsal = Trainer(config, run_dir, resume=args.resume, progress=False, log=lambda line: None,
                        distributed=Rehearsal(0, processes, 0, backend))
    _check_evaluation_time(rehearsal, args.eval_samples)
    del rehearsal  # its data and parameters: the processes load their own
    pyro.clear_param_store()
    gc.collect()
    worker_args = _without_option(args.argv, "--nproc-per-node") + ["--run-dir", str(run_dir)]
    status, killed = launch(worker_args, processes)
    if killed is not None:  # the process that failed first said nothing
        rank, signum = killed
        who = "this command" if rank is None else f"process {rank} of {processes}"
        epoch = _epoch_on_disk(run_dir)
        resume = (f"; continue with: pyro-vae train --run-dir {run_dir} --resume --nproc-per-node {processes}"
                  if epoch else "")
        print(f"pyro-vae train: error: {who} was ended by {signal.Signals(signum).name}; "
              f"{kept_checkpoint(epoch, run_dir / CHECKPOINT)}{resume}", file=sys.stderr)
    return status


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option`` and its value (``--opt N`` or ``--opt=N``, or an abbreviation argparse took)."""
    kept, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--":
            kept.extend(argv[i:])
            break
        name, equals, _ = token.partition("=")
        if len(name) > 2 and name.startswith("--") and option.startswith(name):
            skip = not equals
            continue
        kept.append(token)
    return kept


def _epoch_on_disk(run_dir: Path):
    """The epoch of ``run_dir``'s checkpoint.pt: 0 where there is none, None where it cannot be read."""
    from pyro_vae.training import load_checkpoint

    if not (run_dir / CHECKPOINT).is_file():
        return 0
    try:
        return int(load_checkpoint(run_dir / CHECKPOINT)["epoch"])
    except Exception:  # damaged or half written: say where it is, without its epoch
        return None


#: the longest final evaluation ``train`` starts: a longer one is refused before training, as a mistake in K
MAX_EVALUATION_SECONDS = 30 * 86400


def _check_evaluation_time(trainer, samples: int) -> None:
    """Before training: the final evaluation's duration, measured on a few samples of the untrained structure;
    said when it is more than a minute, refused when it is more than :data:`MAX_EVALUATION_SECONDS`."""
    from pyro_vae.evaluation import evaluation_seconds
    from pyro_vae.limits import ANNOUNCE_SECONDS, duration_text

    seconds = evaluation_seconds(trainer.model, trainer.dataset, "test", samples)
    images = len(trainer.dataset.test)
    if seconds > MAX_EVALUATION_SECONDS:
        raise PyroVAEError(f"--eval-samples {samples:,}: the final evaluation ({samples:,} importance samples for "
                           f"each of {images:,} test images) would take {duration_text(seconds)} on this machine; give "
                           "a smaller --eval-samples (pyro-vae evaluate uses 5000)")
    if seconds > ANNOUNCE_SECONDS:
        print(f"note: the final evaluation with --eval-samples {samples:,} on {images:,} test images will take "
              f"{duration_text(seconds)} on this machine, after training")


def _train(args: argparse.Namespace, config: TrainConfig, run_dir: Path, distributed=None) -> int:
    from pyro_vae.training import Trainer

    trainer = Trainer(config, run_dir, resume=args.resume, progress=False if args.no_progress else None,
                      distributed=distributed)
    if distributed is None:  # under torchrun rank 0 would refuse alone; --nproc-per-node checked it before launching
        _check_evaluation_time(trainer, args.eval_samples)
    elbo = type(trainer.elbo).__name__
    labelled = trainer.dataset.labelled
    images = f"{len(trainer.dataset.train)} {trainer.dataset.item}s" + (f" + {len(labelled)} labelled" if labelled is not None else "")
    processes = f", {distributed.world_size} processes ({distributed.backend})" if distributed is not None else ""
    print(f"training {trainer.config.model} on {trainer.config.dataset} ({images}) with {elbo}{processes} "
          f"into {run_dir}")
    history = trainer.fit()
    if distributed is not None:
        distributed.close()  # the others are done; rank 0 evaluates and draws alone
        trainer.dist = None
    try:
        return _after_training(args, trainer, history, run_dir,
                               distributed.world_size if distributed is not None else 1)
    except KeyboardInterrupt as interrupt:
        interrupt.sentence = (f"interrupted after training, while evaluating and drawing; all {trainer.epoch} epochs "
                              f"are kept in {run_dir}; evaluate them with: pyro-vae evaluate {run_dir}")
        raise
    except Exception as err:  # noqa: BLE001 - a structure's mistake while evaluating: the sentence says what is kept
        err.kept = f"the {trainer.epoch} epoch(s) trained are kept in {run_dir}"
        raise


def _after_training(args: argparse.Namespace, trainer, history: list, run_dir: Path, processes: int = 1) -> int:
    """The end of ``train``: the test figures of the best epoch, and the run's pictures."""
    from pyro_vae.evaluation import describe_evaluation, evaluate
    from pyro_vae.files import write_json
    from pyro_vae.plots.training import write_run_pictures

    model = trainer.model
    best = trainer.load_best()
    if best is not None and best["epoch"] != trainer.epoch:
        key, name = trainer.selection()
        print(f"evaluating the best epoch, {best['epoch']} of {trainer.epoch} ({name} "
              f"{selection_value(key, best[key])}; the last epoch's model stays in {CHECKPOINT})")
    model.eval()
    result = evaluate(model, trainer.dataset, "test", args.eval_samples, show_progress=not args.no_progress,
                      extra={"checkpoint": "best" if best is not None else "last",
                             "epoch": best["epoch"] if best is not None else trainer.epoch})
    print(describe_evaluation(result, count=False))
    write_json(result, run_dir / "evaluation.json")
    pictures = write_run_pictures(model, trainer.dataset, history, run_dir, seed=trainer.config.seed)
    launch = f" --nproc-per-node {processes}" if processes > 1 else ""
    print(f"run:      {run_dir}  (checkpoint {CHECKPOINT}, resume with --run-dir {run_dir} --resume{launch})")
    print(f"metrics:  {run_dir / METRICS}, {run_dir / 'evaluation.json'}")
    print("pictures: " + ", ".join(str(p) for p in pictures))
    return 0


def add_train_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a VAE with SVI, then evaluate it and draw its pictures",
        description="Train a latent structure with pyro.infer.SVI. Each epoch writes metrics.jsonl and a checkpoint "
                    "to the run directory; at the end the test ELBO and importance-sampled NLL are written to "
                    "evaluation.json and the pictures (curves, samples, reconstructions, and for --z-dim 2 the "
                    "latent space) to PNG files.")
    _add_train_options(train)
    where = train.add_argument_group("run directory")
    where.add_argument("--name", help="run name: the run goes to runs/NAME under the current directory "
                                      "(default: vae-DATE-TIME)")
    where.add_argument("--run-dir", help="the run directory itself (overrides --name)")
    where.add_argument("--resume", action="store_true",
                       help="continue the run in --run-dir from its last checkpoint (options may be left out)")
    where.add_argument("--eval-samples", type=int, default=100,
                       help="importance samples K per test image for the final NLL; 'pyro-vae evaluate' uses 5000 "
                            "(default: 100)")
    where.add_argument("--no-progress", action="store_true", help="no progress bars")
    processes = train.add_argument_group("several processes")
    processes.add_argument("--nproc-per-node", type=int, metavar="N",
                           help="data-parallel training on N processes of this machine (gloo on CPUs; one GPU each "
                                "with --device cuda): every option, the run directory and the data are checked "
                                "here first, so that a mistake is one sentence, then torch's elastic launcher starts "
                                "N processes running 'python -m pyro_vae train' with the other options, as "
                                "'torchrun --standalone --nproc-per-node N -m pyro_vae train' would; when one fails, "
                                "the command ends with its exit status. Each runs OMP_NUM_THREADS torch threads, "
                                "the cores divided among the processes unless it is set. Resume with the same N. For "
                                "several machines call torchrun yourself (see docs/distributed.md) (default: 1, this process)")
    train.set_defaults(handler=train_command)
