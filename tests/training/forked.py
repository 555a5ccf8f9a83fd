"""Processes of a distributed job forked from an interpreter that has already imported torch and pyro_vae.

Starting ``python worker.py`` spends seconds of CPU importing torch (about 4 s of CPU a process, most of a small
job's time, two processes a job, ten jobs in test_distributed.py); a fork of an interpreter that did it once
starts at once.
multiprocessing's forkserver is that interpreter: a fresh one (not the test's process, whose torch has run
threads), which imports the modules below and nothing else, and forks a child for each process of a job. The
child is then what ``subprocess.Popen([sys.executable, script, *args], env=env)`` would start, less the imports:
its own environment and ``sys.argv``, its output to files, the script run as ``__main__``, its exit status that
of ``sys.exit`` or ``os._exit`` (1 after an uncaught exception, with its traceback on stderr).
"""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

#: what every process of the jobs imports anyway, the forkserver once: torch._dynamo too, which the first
#: optimizer imports (torch.optim.Optimizer is wrapped in torch._disable_dynamo), nearly as long as torch itself
PRELOAD = ["torch", "torch._dynamo", "pyro", "pyro_vae.config", "pyro_vae.distributed", "pyro_vae.training",
           "forked"]


def _child(script: str, args: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the forked process: become ``python script *args`` with the environment ``env``."""
    import runpy

    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(env)
    multiprocessing.set_start_method(None, force=True)  # a fresh interpreter's, not the forkserver's
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).parent))  # as the interpreter puts the script's folder first
    runpy.run_path(script, run_name="__main__")


def job(script: Path, args: list[str], envs: list[dict[str, str]], folder: Path, *,
        timeout: float) -> list[subprocess.CompletedProcess]:
    """``python script *args`` as one process per environment of ``envs``, forked; their output goes to files
    in ``folder``. Returns each process's result, in order, once all have ended (any still running after
    ``timeout`` seconds is killed, as is any left when this returns)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    procs, outputs = [], []
    for i, env in enumerate(envs):
        out, err = folder / f"process-{i}.out", folder / f"process-{i}.err"
        procs.append(context.Process(target=_child, args=(str(script), args, env, str(out), str(err))))
        outputs.append((out, err))
    try:
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                raise subprocess.TimeoutExpired([sys.executable, str(script), *args], timeout)
    finally:  # a process still running here (a timeout) must not outlive the test
        for proc in procs:
            if proc.exitcode is None and proc.pid is not None:
                proc.kill()
                proc.join()
    return [subprocess.CompletedProcess([sys.executable, str(script), *args], proc.exitcode, out.read_text(),
                                        err.read_text()) for proc, (out, err) in zip(procs, outputs)]
