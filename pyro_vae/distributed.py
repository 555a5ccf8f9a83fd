"""Data-parallel training on several processes with ``torch.distributed`` (launched by ``torchrun``).

    torchrun --nproc-per-node 2 -m pyro_vae train --epochs 10 --name two-processes
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m pyro_vae train ...

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
the others' run with one sentence instead of a hang; the last checkpoint stays as it was written. (With gloo;
nccl's watchdog may end a process on a timed-out collective rather than raise, so on GPUs the run ends without
the sentence.) A NaN in any process's gradient shows in the summed gradients, so every process stops at the same
step with the divergence message.

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


def collective_failure(err: BaseException, dist_info: Distributed, epoch: int, checkpoint) -> PyroVAEError:
    """One sentence for a collective that failed: another process died, or stalled past the timeout."""
    kept = (f"the last checkpoint (epoch {epoch}) is kept in {checkpoint}" if epoch else
            "no checkpoint had been written yet")
    cause = " ".join(str(err).split())[:200]
    return PyroVAEError(f"process {dist_info.rank} of {dist_info.world_size} lost the others: one of them stopped, or "
                        f"did not answer within {timeout_seconds():g} s ({TIMEOUT_ENV}); {kept} ({cause})")
