"""Data-parallel training on several processes with ``torch.distributed``.

    pyro-vae train --nproc-per-node 2 --epochs 10 --name two-processes     # starts its 2 processes itself
    torchrun --nproc-per-node 2 -m pyro_vae train --epochs 10 --name two-processes
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m pyro_vae train ...

``pyro-vae train --nproc-per-node N`` first checks, in the process it was started as, everything ``train``
checks before training (the options, ``PYRO_VAE_DIST_TIMEOUT``, the run directory, a checkpoint to resume, the
data and the structure, as rank 0 of N processes: :class:`Rehearsal`), so that a mistake is one sentence from
one process with status 2 and no process started; then it starts N processes on this machine with torch's
elastic launcher, in that same process (:func:`launch`: a standalone rendezvous on localhost, as ``torchrun
--standalone``), each running ``python -m pyro_vae train`` with the same options but ``--nproc-per-node``. When a
process fails, the command ends with that process's exit status after that process's own sentence (one killed
by a signal, which says nothing, gets a sentence from the launcher), without torch's ``ChildFailedError``
report. Each process runs ``OMP_NUM_THREADS`` torch threads: the machine's cores divided among the processes
unless it is set. ``torchrun`` still starts the same processes (several machines, say); then only the first
process on each machine (``LOCAL_RANK`` 0) reports a mistake that every process meets alike (an option, the run
directory): the others end with status 2 silently (:func:`pyro_vae.cli.is_later_process`).

How a step of N processes equals a step of one process with the whole batch:

* every process builds the structure from the same seed, and rank 0's parameters are broadcast to the others
  before the first step, so all start from the same point;
* every epoch's shuffle depends on (seed, epoch) only, so all processes draw the same permutation; each global
  batch of ``--batch-size`` images is cut into N contiguous shards and process r trains on shard r
  (:func:`shard_of`);
* each process's ELBO is the sum over its shard (Pyro's ``plate("data", shard size)``), so the sum of the N
  gradients is the gradient of the global batch's ELBO: the optimizer all-reduces (sums) the gradients of
  every parameter in the fixed order of their parameter-store names before stepping, as Pyro's Horovod
  example does (:meth:`Distributed.sum_gradients`). An all-reducing optimizer rather than DDP around the ELBO:
  the parameters live in Pyro's parameter store, the ELBO is not one ``nn.Module`` forward, and JIT-compiled
  and enumerated ELBOs work unchanged;
* the latent noise differs across processes (each draws from its own random state, seeded with
  seed + rank after the parameters are made), and every process's random state goes into the checkpoint, so
  ``--resume`` with the same number of processes equals an uninterrupted run;
* the training loss and the validation ELBO (each process takes every N-th validation batch) are summed
  across processes; rank 0 alone writes checkpoints, metrics and pictures and evaluates at the end.

Collectives time out after ``PYRO_VAE_DIST_TIMEOUT`` seconds (default 300): a process that dies or hangs ends
the others' run with one sentence instead of a hang (:class:`CollectiveFailure`, said by every process left,
whatever its rank), which names the epoch that ``checkpoint.pt`` really holds; the last checkpoint stays as it
was written. (With gloo; nccl's watchdog may end a process on a timed-out collective rather than raise, so on
GPUs the run ends without the sentence.) The sentence comes within about a second of the timeout; the job ends
once the launcher has ended the stalled process, which cannot answer its SIGTERM when it is stopped (SIGSTOP)
or stuck in the kernel: ``--nproc-per-node`` kills it :data:`SHUTDOWN_SECONDS` later (a 5 s timeout: the
sentence after 5.0 s, the job over after 9.5 s), while torchrun waits 30 s for it first (a 20 s timeout ended
torchrun's job after 51 s), whatever ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` says: torch 2.14 passes no timeout on
that path, which :func:`launch` caps. A NaN in any process's gradient shows in the summed gradients, so every
process stops at the same step with the divergence message.

Structures whose model couples the images of a batch (``batch_coupled``: beta-TCVAE's minibatch estimate of
the total correlation, FactorVAE's codes shuffled across the batch) compute that coupling within each
process's shard, so N processes do not equal one process on the whole batch for them; training says so when it
starts.
"""
from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Optional

import torch

from pyro_vae.errors import PyroVAEError

#: seconds a collective operation may wait for the other processes
DEFAULT_TIMEOUT = 300
TIMEOUT_ENV = "PYRO_VAE_DIST_TIMEOUT"
#: seconds :func:`launch` gives the other processes to end after one failed, before it kills them (torchrun's
#: 30 s kept the job of a stopped process alive that long after the survivor's sentence)
SHUTDOWN_SECONDS = 3


class CollectiveFailure(PyroVAEError):
    """A collective failed: another process of the job died, or did not answer within the timeout."""


@dataclass
class Distributed:
    """This process's place in a ``torch.distributed`` job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives -----------------------------------------------------------------------------------------

    def sum_gradients(self, params: Iterable[torch.Tensor]) -> bool:
        """Sum every parameter's gradient over the processes, in the order given (the same on every process),
        in one all-reduce; returns whether the sums are all finite (the same answer on every process, so that
        all stop together on a NaN). A parameter without a gradient here contributes zeros; one that had no
        gradient on any process is left without one, so that the optimizer skips it as one process would."""
        import torch.distributed as dist

        params = list(params)
        if not params:
            return True
        had = [p.grad is not None for p in params]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor(had, dtype=grads[0].dtype, device=grads[0].device)])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset:offset + g.numel()].view_as(g).clone()
            offset += g.numel()
        for p, anywhere in zip(params, flat[offset:].tolist()):
            if not anywhere:
                p.grad = None
        return bool(torch.isfinite(flat).all())

    def sum(self, *values: float) -> list[float]:
        """Each number summed over the processes (float64)."""
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.collective_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every process."""
        import torch.distributed as dist

        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order, on every process."""
        import torch.distributed as dist

        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    @property
    def collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Leave the job together: a barrier first, so that no process tears down its connections while another
        still uses them (gloo then aborted a process at exit now and then), then the process group. Even so an
        exit through the interpreter aborted now and then (:func:`exit_process`)."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def abandon(self) -> None:
        """Let go of a process group whose peers are gone, so that this process can exit normally (a broken
        gloo group left to the interpreter's exit aborts it)."""
        import torch.distributed as dist

        global _abandoned
        _abandoned = True
        try:
            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:  # the group is broken already; nothing more to release
            pass


#: set once a process let go of a broken process group (:meth:`Distributed.abandon`)
_abandoned = False
#: set once this process joined a process group (:func:`from_environment`)
_joined = False


def exit_process(code: int) -> int:
    """``code``, for a process that never joined a process group; a process of a distributed job ends here and
    now with ``code``, its output flushed, without the interpreter's exit. That exit runs the C++ destructors
    of what torch.distributed leaves behind, and now and then one of them finds a thread still running and
    aborts the process ('terminate called without an active exception', SIGABRT instead of the exit status):
    about one exit in four on this machine after a broken group (a peer that stalled past the timeout still
    holds its connections), and rarely, even after :meth:`Distributed.close`, after a job that went well (once
    in CI, with both processes' results written; not reproduced in 300 exits here)."""
    if joined():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
                pass
        os._exit(code)
    return code


def joined() -> bool:
    """Whether this process joined a process group (whether or not it has left it since)."""
    return _joined or _abandoned


class Rehearsal(Distributed):
    """Rank 0 of a job of ``world_size`` processes that has not started: what ``pyro-vae train --nproc-per-node``
    gives the Trainer it builds to check everything before it starts the processes (the batch against the
    processes, the processes of a checkpoint to resume, ``--init-from``). No process group: its only collective
    in the Trainer's construction, the parameters' broadcast, does nothing."""

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        pass


def launch(worker_args: list[str], processes: int) -> tuple[int, Optional[tuple[int, int]]]:
    """Run ``python -m pyro_vae WORKER_ARGS`` as ``processes`` processes of one job on this machine, with torch's
    elastic launcher in this process (``elastic_launch``, a standalone c10d rendezvous on localhost as
    ``torchrun --standalone``, no restarts); their output goes where this process's goes.

    Returns ``(0, None)`` when all succeeded; else the status this command ends with and, where the process
    that failed first (torch's "root cause") was killed by a signal and so said nothing, ``(rank, signal)``
    for the caller to say it (``(None, signal)``: this process was stopped by a signal other than Ctrl-C's).
    Torch's own logs and its ``ChildFailedError`` report are left out: each process says what went wrong itself.
    This process's signal handlers, environment and loggers are restored after."""
    import logging
    import signal
    import tempfile
    import threading
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import PContext, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    handled = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")
    handlers = {name: signal.getsignal(getattr(signal, name)) for name in handled}
    environment = dict(os.environ)
    loggers = {name: logger for name, logger in logging.Logger.manager.loggerDict.items()
               if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher"))
               and isinstance(logger, logging.Logger)}
    disabled = {name: logger.disabled for name, logger in loggers.items()}
    for logger in loggers.values():  # "Sending process ... closing signal", "failed (exitcode: 2)", ...
        logger.disabled = True
    # When a process fails, torch's process context ends the others with close(), whose SIGTERM is followed by
    # SIGKILL after 30 s whatever shutdown_timeout says (torch 2.14: SubprocessContext._poll and the agent's
    # _stop_workers pass no timeout): a stopped process, which cannot answer the SIGTERM, kept the job alive
    # 30 s after the survivor's sentence. Here every close waits SHUTDOWN_SECONDS at most.
    close = PContext.__dict__.get("close")
    if close is not None:
        def close_in_time(context, death_sig=None, timeout: float = SHUTDOWN_SECONDS) -> None:
            close(context, death_sig, min(timeout, SHUTDOWN_SECONDS))

        PContext.close = close_in_time
    try:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
        with tempfile.TemporaryDirectory(prefix="pyro-vae-launch-") as logs:  # torch's, not to be left behind
            config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=uuid.uuid4().hex,
                                  rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                                  logs_specs=DefaultLogsSpecs(log_dir=logs), shutdown_timeout=SHUTDOWN_SECONDS,
                                  signals_to_handle=",".join(handled))
            try:
                elastic_launch(config, sys.executable)("-u", "-m", "pyro_vae", *worker_args)
            except ChildFailedError as err:
                rank, failure = err.get_first_failure()
                if failure.exitcode < 0:
                    return 128 - failure.exitcode, (rank, -failure.exitcode)
                return failure.exitcode, None
            except SignalException as err:  # the launcher was stopped, and ended the processes with that signal
                # Ctrl-C reached the processes too, and rank 0 said what was kept; another signal did not
                return 128 + int(err.sigval), None if err.sigval == signal.SIGINT else (None, int(err.sigval))
        return 0, None
    finally:
        if close is not None:
            PContext.close = close
        os.environ.clear()
        os.environ.update(environment)
        for name, handler in handlers.items():  # (torch's agent sets its own in the main thread only)
            if handler is not None and threading.current_thread() is threading.main_thread():
                signal.signal(getattr(signal, name), handler)
        for name, logger in loggers.items():
            logger.disabled = disabled[name]


def from_environment(device: str = "cpu") -> Optional[Distributed]:
    """The job ``torchrun`` started this process in (``WORLD_SIZE`` > 1), its process group made: gloo on CPUs,
    nccl with one GPU per local rank for ``--device cuda``; None for a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    global _joined
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    _joined = True
    return Distributed(rank, world_size, local_rank, backend)


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise PyroVAEError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


def shard_of(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Process ``rank``'s contiguous part of a global batch's ``index``: ``world_size`` parts of (nearly) equal
    size, the first ones one longer when the batch does not divide."""
    return index.tensor_split(world_size)[rank]


#: words of the errors gloo and nccl raise when a peer is gone or a collective times out
FAILURE_WORDS = ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "broken pipe", "socket")


def is_collective_failure(err: BaseException) -> bool:
    text = str(err).lower()
    return any(word in text for word in FAILURE_WORDS)


def kept_checkpoint(kept_epoch: Optional[int], checkpoint) -> str:
    """What a run that ended early kept, in words: ``kept_epoch`` is the epoch ``checkpoint`` holds, 0 for none
    written, None where this process cannot tell (rank 0 writes it, perhaps on another machine)."""
    if kept_epoch is None:
        return f"the checkpoint process 0 last wrote, if any, is kept in {checkpoint}"
    return f"the last checkpoint (epoch {kept_epoch}) is kept in {checkpoint}" if kept_epoch else \
        "no checkpoint had been written yet"


def collective_failure(err: BaseException, dist_info: Distributed, kept_epoch: Optional[int],
                       checkpoint) -> CollectiveFailure:
    """One sentence for a collective that failed: another process died, or stalled past the timeout;
    ``kept_epoch`` is the epoch that ``checkpoint`` really holds (:func:`kept_checkpoint`)."""
    cause = " ".join(str(err).split())[:200]
    return CollectiveFailure(f"process {dist_info.rank} of {dist_info.world_size} lost the others: one of them "
                             f"stopped, or did not answer within {timeout_seconds():g} s ({TIMEOUT_ENV}); "
                             f"{kept_checkpoint(kept_epoch, checkpoint)} ({cause})")
