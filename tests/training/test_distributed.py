"""Data-parallel training on 2 gloo processes on this machine (loopback only), spawned inside the tests (issue 13)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import forked
import pytest
import torch

from pyro_vae import PyroVAEError
from pyro_vae.config import TrainConfig
from pyro_vae.training import Trainer, load_checkpoint

WORKER = textwrap.dedent('''
    import faulthandler, json, os, sys
    faulthandler.enable()  # should a process still abort, its stack says where
    import torch
    torch.set_num_threads(1)
    from pyro_vae.config import TrainConfig
    from pyro_vae.distributed import exit_process, from_environment
    from pyro_vae.training import Trainer

    options, run_dir, resume, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3] == "resume", sys.argv[4]
    distributed = from_environment()
    fault = options.pop("fault", None)  # (what, step[, rank]): process 1 (or rank) dies, hangs or diverges there
    try:
        trainer = Trainer(TrainConfig(**options), run_dir, resume=resume, progress=False, log=lambda line: None,
                          distributed=distributed)
    except Exception as err:
        print(f"ERROR {type(err).__name__}: {err}", flush=True)
        sys.exit(exit_process(2))
    if fault is not None and fault[0] == "die-validating":
        validate = trainer.validation_elbo
        def dying(*args, **kwargs):  # dies validating epoch fault[1]: the epoch counted, its checkpoint not written
            if trainer.epoch >= fault[1]:
                os._exit(3)
            return validate(*args, **kwargs)
        if distributed.rank == fault[2]:
            trainer.validation_elbo = dying
    elif fault is not None and distributed.rank == 1:
        what, at_step = fault
        steps = trainer.run_steps
        def faulty(batches, **kwargs):
            if trainer.step >= at_step:
                if what == "die":
                    os._exit(3)  # as a process killed mid-epoch
                if what == "hang":
                    import time
                    time.sleep(at_step)  # as a process stuck mid-epoch, past the others' timeout
                if what == "nan":
                    with torch.no_grad():
                        next(trainer.model.decoder.parameters()).fill_(float("nan"))  # this process alone diverges
            return steps(batches, **kwargs)
        trainer.run_steps = faulty
    try:
        history = trainer.fit()
    except Exception as err:
        print(f"ERROR {type(err).__name__}: {err}", flush=True)
        sys.exit(exit_process(2))  # as the command line ends: at once where the process group broke
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, f"{out}-rank{distributed.rank}.pt")
    with open(f"{out}-rank{distributed.rank}.json", "w") as f:
        json.dump(history, f)
    distributed.close()
    sys.exit(exit_process(0))  # as the command line ends
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, options: dict, run_dir: Path, out: str, *, processes: int, resume: bool = False,
         timeout: float = 240, extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Train with the worker above in a job of ``processes`` processes; returns each process's result. The
    processes are forked from an interpreter that imported torch once (forked.py): they test the Trainer's
    processes, not the interpreter's start, which cost most of a job's time (the command line's own processes
    below are started as torchrun starts them)."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    folder = tmp_path / f"{out}-output"
    folder.mkdir()
    return forked.job(worker, [json.dumps(options), str(run_dir), "resume" if resume else "fresh",
                               str(tmp_path / out)], _environments(processes, extra_env), folder, timeout=timeout)


def _environments(processes: int, extra_env: dict | None = None) -> list[dict[str, str]]:
    """The environment torchrun gives each of ``processes`` processes of one job on the loopback, in rank order."""
    port = _free_port()
    return [{**os.environ, "OMP_NUM_THREADS": "1", **(extra_env or {}), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes)}
            for rank in range(processes)]


def _job(command: list[str], *, processes: int, timeout: float = 240,
         extra_env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """``command`` run as ``processes`` processes of one job on the loopback, with the environment torchrun
    gives them; returns each process's result, in rank order."""
    procs = []
    for env in _environments(processes, extra_env):
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    finally:  # a process still running here (a timeout) must not outlive the test
        for proc in procs:
            proc.kill()
    return results


def _train_here(options: dict, run_dir: Path, *, resume: bool = False) -> Trainer:
    """One process, no process group: this test's own process (no start-up or imports to pay again), on one
    thread as the spawned processes run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(TrainConfig(**options), run_dir, resume=resume, progress=False, log=lambda line: None)
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    return trainer


def _state(tmp_path: Path, out: str, rank: int = 0) -> dict:
    return torch.load(tmp_path / f"{out}-rank{rank}.pt")


def _history(tmp_path: Path, out: str, rank: int = 0) -> list:
    return json.loads((tmp_path / f"{out}-rank{rank}.json").read_text())


SMALL = {"subset": 200, "hidden_dims": [16], "z_dim": 3, "batch_size": 40}


@pytest.mark.slow
def test_two_processes_of_half_batches_take_the_steps_of_one_process_with_the_whole_batch(tmp_path):
    """The Bernoulli mixture's ELBO is an exact sum over its components (no noise at all), so the parameters
    after 2 epochs of 2 processes x 20 images must be those of 1 process x 40 images. 201 images: the last
    batch holds one, so one process's shard of it is empty and it steps with zeros."""
    options = {**SMALL, "subset": 201, "model": "bernoulli-mixture", "epochs": 2}
    for result in _run(tmp_path, options, tmp_path / "two", "two", processes=2):
        assert result.returncode == 0, result.stdout + result.stderr
    single = _train_here(options, tmp_path / "one")
    one, two_rank0, two_rank1 = single.model.state_dict(), _state(tmp_path, "two", 0), _state(tmp_path, "two", 1)
    for name, value in one.items():
        assert torch.equal(two_rank0[name], two_rank1[name]), name  # every process holds the same parameters
        # and they are one process's, up to the order of float32 sums (measured: at most 1.7e-6 after Adam)
        assert torch.allclose(two_rank0[name], value, rtol=1e-5, atol=1e-5), name
    for row_one, row_two in zip(single.history, _history(tmp_path, "two")):
        assert row_two["train_loss"] == pytest.approx(row_one["train_loss"], rel=1e-6)
        assert row_two["valid_elbo"] == pytest.approx(row_one["valid_elbo"], rel=1e-6)
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["processes"] == 2


@pytest.mark.slow
def test_with_latent_noise_the_processes_stay_equal_and_resume_equals_an_uninterrupted_run(tmp_path):
    options = {**SMALL, "model": "vae"}
    for result in _run(tmp_path, {**options, "epochs": 2}, tmp_path / "whole", "whole", processes=2):
        assert result.returncode == 0, result.stdout + result.stderr
    whole0, whole1 = _state(tmp_path, "whole", 0), _state(tmp_path, "whole", 1)
    assert all(torch.equal(whole0[name], whole1[name]) for name in whole0)
    for result in _run(tmp_path, {**options, "epochs": 1}, tmp_path / "part", "first", processes=2):
        assert result.returncode == 0, result.stdout + result.stderr
    for result in _run(tmp_path, {**options, "epochs": 2}, tmp_path / "part", "resumed", processes=2, resume=True):
        assert result.returncode == 0, result.stdout + result.stderr
    resumed = _state(tmp_path, "resumed", 0)
    assert all(torch.equal(resumed[name], whole0[name]) for name in whole0)

    def numbers(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert numbers(_history(tmp_path, "resumed")) == numbers(_history(tmp_path, "whole"))
    # the same run resumed by one process is refused with a sentence
    with pytest.raises(PyroVAEError, match=r"was trained by 2 process\(es\) and is resumed by 1"):
        _train_here({**options, "epochs": 3}, tmp_path / "part", resume=True)


@pytest.mark.slow
def test_a_process_that_dies_ends_the_run_with_one_sentence_and_keeps_the_last_checkpoint(tmp_path):
    options = {**SMALL, "model": "vae", "epochs": 3, "fault": ["die", 5]}  # 5 steps an epoch: dies entering epoch 2
    survivor, dead = _run(tmp_path, options, tmp_path / "run", "run", processes=2, timeout=120,
                          extra_env={"PYRO_VAE_DIST_TIMEOUT": "20"})
    assert dead.returncode == 3
    assert survivor.returncode == 2, survivor.stdout + survivor.stderr
    assert "process 0 of 2 lost the others" in survivor.stdout
    assert "the last checkpoint (epoch 1) is kept" in survivor.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


@pytest.mark.slow
def test_a_process_that_hangs_ends_the_others_run_within_the_timeout(tmp_path):
    import time

    options = {**SMALL, "model": "vae", "epochs": 3, "fault": ["hang", 5]}  # rank 1 sleeps 5 s entering epoch 2
    start = time.perf_counter()
    survivor, _ = _run(tmp_path, options, tmp_path / "run", "run", processes=2, timeout=120,
                       extra_env={"PYRO_VAE_DIST_TIMEOUT": "2"})
    assert survivor.returncode == 2, survivor.stdout + survivor.stderr
    assert "did not answer within 2 s" in survivor.stdout
    assert time.perf_counter() - start < 60
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


@pytest.mark.parametrize("options", [
    {"model": "bernoulli-mixture", "elbo": "tracegraph", "baseline": "neural"},  # score function, own baselines
    {"model": "ss-vae", "num_labelled": 100},  # enumerated and labelled batches
])
@pytest.mark.slow
def test_score_function_and_semi_supervised_training_run_on_two_processes(tmp_path, options):
    """201 images in batches of 40: the last batch holds one image, so one process's shard is empty (and a
    single process meets a batch of one, which TraceGraph_ELBO's baselines once refused)."""
    options = {**SMALL, "subset": 201, "epochs": 2, **options}
    _train_here(options, tmp_path / "p1")
    for result in _run(tmp_path, options, tmp_path / "p2", "p2", processes=2):
        assert result.returncode == 0, result.stdout + result.stderr
    first, second = _state(tmp_path, "p2", 0), _state(tmp_path, "p2", 1)
    assert all(torch.equal(first[name], second[name]) for name in first)


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process_at_the_same_step(tmp_path):
    options = {**SMALL, "model": "vae", "epochs": 3, "fault": ["nan", 5], "jit": False}
    results = _run(tmp_path, options, tmp_path / "run", "run", processes=2, timeout=120,
                   extra_env={"PYRO_VAE_DIST_TIMEOUT": "30"})
    for result in results:
        assert result.returncode == 2, result.stdout + result.stderr
        assert "TrainingDiverged: the loss became nan at step 6 (epoch 2, batch 1)" in result.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1


@pytest.mark.slow
def test_a_process_whose_group_broke_ends_at_once_with_its_status_and_its_output():
    """After a broken process group the command line skips the interpreter's exit (gloo's destructors aborted
    such a process now and then, SIGABRT instead of status 2), but its sentence is still printed."""
    code = textwrap.dedent('''
        import atexit, sys
        import pyro_vae.distributed as distributed
        from pyro_vae.cli import main
        atexit.register(lambda: print("the interpreter's exit ran"))
        distributed.Distributed(0, 2, 0, "gloo").abandon()  # no group: abandoning it only marks the process
        sys.exit(main(["train", "--epochs", "0"]))
    ''')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "pyro-vae train: error: epochs must be a positive whole number" in result.stderr
    assert "the interpreter's exit ran" not in result.stdout
    # an error no sentence foresaw: its traceback, status 1, and still no interpreter's exit
    unforeseen = code.replace('sys.exit(main(["train", "--epochs", "0"]))', textwrap.dedent('''
        import pyro_vae.cli as cli
        def broken(argv):
            raise ValueError("something no check foresaw")
        cli._main = broken
        sys.exit(main([]))
    '''))
    result = subprocess.run([sys.executable, "-c", unforeseen], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ValueError: something no check foresaw" in result.stderr
    assert "the interpreter's exit ran" not in result.stdout


CLI_PROCESS = textwrap.dedent('''
    import atexit, sys
    from pyro_vae.cli import main
    atexit.register(lambda: print("the interpreter's exit ran"))
    sys.exit(main(sys.argv[1:]))
''')


@pytest.mark.slow
def test_the_command_line_trains_on_two_processes_and_each_ends_with_its_status_without_the_interpreters_exit(
        tmp_path):
    """``torchrun --nproc-per-node 2 -m pyro_vae train``, as torchrun starts it: rank 0 says what it trains,
    writes the run and evaluates; rank 1 trains its shards and prints nothing. Both end with status 0 without
    the interpreter's exit (gloo's destructors aborted a process of a job that had gone well, once in CI)."""
    run_dir = tmp_path / "run"
    argv = ["train", "--subset", "200", "--hidden-dims", "16", "--z-dim", "3", "--batch-size", "40", "--epochs", "1",
            "--no-progress", "--run-dir", str(run_dir)]
    first, second = _job([sys.executable, "-c", CLI_PROCESS, *argv], processes=2)
    (out0, err0), (out1, err1) = (first.stdout, first.stderr), (second.stdout, second.stderr)
    assert [first.returncode, second.returncode] == [0, 0], out0 + err0 + out1 + err1
    assert "with JitTrace_ELBO, 2 processes (gloo) into" in out0 and "test NLL (K=100)" in out0
    assert out1 == ""
    assert "the interpreter's exit ran" not in out0 + out1
    assert load_checkpoint(run_dir / "checkpoint.pt")["processes"] == 2
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    assert evaluation["epoch"] == 1 and evaluation["images"] == 200
    assert 0 < evaluation["nll"] <= -evaluation["elbo"]  # the K = 100 bound on log p(x) is above the ELBO


# -- issue 22, theme 5: train --nproc-per-node, one sentence from one process, the epoch really kept, stalls ------

LAUNCH_OPTIONS = ["--subset", "300", "--hidden-dims", "32", "--z-dim", "3", "--batch-size", "50", "--eval-samples",
                  "4", "--no-progress"]  # z-dim 3: no latent map pictures to draw (conftest.TINY)


def _launcher(argv: list[str], tmp_path: Path, **env) -> subprocess.Popen:
    """``pyro-vae train --nproc-per-node 2 ARGV`` as a user starts it, its temporary files under tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "pyro_vae", "train", "--nproc-per-node", "2", *argv],
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp"), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _child_with_rank(parent: int, rank: int) -> int:
    """The pid of the process ``parent`` started with ``RANK=rank`` in its environment (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(stat.parent.name)
    raise AssertionError(f"no process of rank {rank} started by {parent}")


@pytest.mark.slow
def test_train_nproc_per_node_starts_the_processes_itself_and_says_nothing_of_its_own(tmp_path):
    """The launcher in the command's own process: the job trains as under torchrun (rank 0 speaks, writes and
    evaluates), nothing of torch's launcher on stderr, its log folder removed; the processes get the options
    without --nproc-per-node (else each would launch again)."""
    run_dir = tmp_path / "run"
    proc = _launcher([*LAUNCH_OPTIONS, "--epochs", "1", "--run-dir", str(run_dir)], tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, out + err
    assert out.count("with JitTrace_ELBO, 2 processes (gloo) into") == 1 and "test NLL (K=4)" in out
    assert "Traceback" not in err and "torch.distributed" not in err and "pyro-vae" not in err, err
    assert load_checkpoint(run_dir / "checkpoint.pt")["processes"] == 2
    left = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith(("pyro-vae-launch", "torchelastic"))]
    assert left == []


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the processes in /proc")
def test_a_stopped_process_ends_the_launched_job_within_its_timeout_naming_the_epoch_kept(tmp_path):
    """Rank 0 stopped (SIGSTOP: it cannot even answer a SIGTERM) mid-training: rank 1 says so within the timeout,
    it alone (a later process still says that it lost the others), naming the epoch that checkpoint.pt holds,
    read from the file that rank 0 writes; the job ends a few seconds later with rank 1's status. Torch's
    launcher waited 30 s more for the stopped process (a 20 s timeout ended the job after 51 s)."""
    import signal
    import time

    timeout, run_dir, stopped = 3, tmp_path / "run", None
    proc = _launcher([*LAUNCH_OPTIONS, "--epochs", "200", "--run-dir", str(run_dir)], tmp_path,
                     PYRO_VAE_DIST_TIMEOUT=str(timeout))
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/"):
                break
        stopped = _child_with_rank(proc.pid, 0)
        os.kill(stopped, signal.SIGSTOP)
        start = time.perf_counter()
        out, err = proc.communicate(timeout=120)
        took = time.perf_counter() - start
    finally:
        proc.kill()
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:  # the launcher killed it, as it should
                pass
    kept = load_checkpoint(run_dir / "checkpoint.pt")["epoch"]
    assert proc.returncode == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pyro-vae train: error: process 1 of 2 lost the others")
    assert f"did not answer within {timeout} s" in lines[0]
    assert f"the last checkpoint (epoch {kept}) is kept in {run_dir / 'checkpoint.pt'}" in lines[0]
    assert took < timeout + 12, took


@pytest.mark.slow
def test_the_survivor_names_the_epoch_that_the_checkpoint_really_holds(tmp_path):
    """Rank 1 dies while epoch 2 is validated: the epoch is counted, its checkpoint not yet written. Rank 0 names
    epoch 1, the last it wrote, which checkpoint.pt holds (it said epoch 2). (A later rank reads the file: the
    stopped rank 0 of the test below.)"""
    options = {**SMALL, "model": "vae", "epochs": 2, "fault": ["die-validating", 2, 1]}
    survivor, dead = _run(tmp_path, options, tmp_path / "run", "run", processes=2, timeout=120,
                          extra_env={"PYRO_VAE_DIST_TIMEOUT": "20"})
    assert dead.returncode == 3, dead.stdout + dead.stderr
    assert survivor.returncode == 2, survivor.stdout + survivor.stderr
    assert "process 0 of 2 lost the others" in survivor.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    assert "the last checkpoint (epoch 1) is kept" in survivor.stdout, survivor.stdout


@pytest.mark.slow
def test_under_torchrun_a_mistake_is_said_once_by_the_first_process(tmp_path):
    """Every process meets the mistake (here the run directory, once the job formed): the first says it, the
    other ends with status 2 without a word (both said it, glued on one line)."""
    from conftest import assert_one_sentence_error

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "metrics.jsonl").write_text("")
    first, second = _job([sys.executable, "-c", CLI_PROCESS, "train", *LAUNCH_OPTIONS, "--run-dir", str(taken)],
                         processes=2, timeout=120)
    assert [first.returncode, second.returncode] == [2, 2], first.stderr + second.stderr
    assert_one_sentence_error(first.returncode, first.stderr, "already exists and holds no checkpoint.pt")
    assert second.stderr == ""


@pytest.mark.parametrize("argv, fragment", [(["--epochs", "0"], "epochs must be a positive whole number"),
                                            (["--epochs", "x"], "invalid int value: 'x'")])
def test_a_later_process_of_a_job_ends_silently_on_a_mistake(cli, monkeypatch, argv, fragment):
    """In this process, as a later (LOCAL_RANK 1) and as the first process of a job: the first says it."""
    import pyro_vae.cli.common

    from conftest import assert_one_sentence_error

    monkeypatch.setattr(pyro_vae.cli.common, "QUIET_EXIT_SECONDS", 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert cli("train", *argv) == (2, "", "")
    monkeypatch.setenv("LOCAL_RANK", "0")
    code, _, err = cli("train", *argv)
    assert_one_sentence_error(code, err, fragment)


def test_the_processes_get_the_options_without_nproc_per_node():
    from pyro_vae.cli.train import _without_option

    argv = ["--epochs", "2", "--nproc-per-node", "2", "--name", "x", "--nproc=3", "--no-progress", "--", "--np"]
    assert _without_option(argv, "--nproc-per-node") == ["--epochs", "2", "--name", "x", "--no-progress", "--", "--np"]


def test_launch_mistakes_of_the_environment_are_one_sentence_before_any_process(cli, tmp_path, monkeypatch):
    from conftest import assert_one_sentence_error

    run_dir = tmp_path / "run"
    monkeypatch.setenv("PYRO_VAE_DIST_TIMEOUT", "soon")
    code, _, err = cli("train", "--nproc-per-node", "2", "--run-dir", run_dir, *LAUNCH_OPTIONS)
    assert_one_sentence_error(code, err, "PYRO_VAE_DIST_TIMEOUT must be a positive number of seconds, got 'soon'")
    monkeypatch.delenv("PYRO_VAE_DIST_TIMEOUT")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = cli("train", "--nproc-per-node", "2", "--run-dir", run_dir, *LAUNCH_OPTIONS)
    assert_one_sentence_error(code, err, "already one of a job started by torchrun; drop --nproc-per-node")
    assert not run_dir.exists()
