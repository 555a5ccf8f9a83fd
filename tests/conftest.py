import gzip
import os
import shutil
from pathlib import Path

import pytest

# torch, Pyro and pyro_vae are imported where they are used, not here: pytest-xdist's controller reads this file
# too, runs no test, and would spend seconds of CPU importing them beside its workers (see pytest_configure).

#: the repository's root, wherever a test file sits below tests/
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_pyro_state():
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def small_data():
    """300 images per split of the shipped binarized MNIST."""
    from pyro_vae.data import load_dataset

    return load_dataset(subset=300)


@pytest.fixture
def batch(small_data):
    return small_data.test.images[:50]


def write_torchvision_mnist(root, folder: str = "MNIST"):
    """The files torchvision's MNIST (or FashionMNIST, KMNIST: ``folder``) reads from ``root/folder/raw``, made
    from the shipped official test release (no download); returns ``root``."""
    from pyro_vae.data import _package_file

    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for kind in ("images-idx3", "labels-idx1"):
        source = _package_file("mnist") / f"t10k-{kind}-ubyte.gz"
        for prefix in ("train", "t10k"):
            with gzip.open(source) as src, open(raw / f"{prefix}-{kind}-ubyte", "wb") as dst:
                shutil.copyfileobj(src, dst)
    return root


@pytest.fixture
def mnist_dir(tmp_path):
    """A torchvision MNIST folder built from the shipped official test release (no download)."""
    return write_torchvision_mnist(tmp_path)


def run_cli(*argv):
    from pyro_vae.cli import main

    return main([str(a) for a in argv])


@pytest.fixture
def cli(capsys):
    """Run the command line in-process; returns (exit code, stdout, stderr)."""

    def call(*argv):
        try:
            code = run_cli(*argv)
        except SystemExit as exit:  # argparse errors
            code = exit.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


#: a tiny training run. z-dim 3, not 2: a run of a 2-D code also draws its latent manifold and scatter, which took
#: 1.9 s of each such training's 2.7 s (the manifold's 400 decoded digits, most of it PNG encoding), in about 30
#: trainings of the suite; the tests of those pictures ask for --z-dim 2 themselves
TINY = ["--subset", 300, "--epochs", 1, "--hidden-dims", 32, "--z-dim", 3, "--batch-size", 50,
        "--eval-samples", 4, "--no-progress"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The run ``pyro-vae train --run-dir RUN *TINY`` writes, trained once per session: by the first of
    pytest-xdist's workers to ask, in the folder their temporary folders share, while the others wait for it. A
    test that needs some trained run to resume, evaluate, damage or refuse copies it (``shutil.copytree``) instead
    of training its own: about 1 to 3 s of CPU each. Never change it in place."""
    import fcntl

    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent
    run, done = shared / "tiny-run" / "run", shared / "tiny-run" / "trained"
    with open(shared / "tiny-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(run.parent, ignore_errors=True)  # what a worker that failed here left
            run.parent.mkdir()
            assert run_cli("train", "--run-dir", run, *TINY) == 0
            done.touch()
    return run


def assert_one_sentence_error(code, err, *fragments):
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# The cores shared among pytest-xdist's workers: two workers of two torch threads each on two cores made every
# test several times slower (OpenMP threads spin while they wait for a core; a small eager ELBO took 15x as long).
# CLI commands the tests start as processes inherit the number through OMP_NUM_THREADS.
_THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["OMP_NUM_THREADS"] = str(_THREADS)


def pytest_configure(config):
    if getattr(config.option, "tx", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller: its workers run the tests
    import torch

    torch.set_num_threads(_THREADS)


def trace_losses(x, structures, *, seed, kl_weight=None):
    """Trace_ELBO's loss on ``x`` of each of ``structures`` ({name: structure}), each from the torch seed
    ``seed`` (so on the same draws), under the KL warm-up weight ``kl_weight`` if one is given."""
    import contextlib

    import torch

    from pyro_vae.inference import make_elbo
    from pyro_vae.scaling import scale_latents

    losses = {}
    for name, structure in structures.items():
        torch.manual_seed(seed)
        with contextlib.nullcontext() if kl_weight is None else scale_latents(torch.tensor(kl_weight)):
            losses[name] = make_elbo("trace").loss(structure.model, structure.guide, x)
    return losses


def assert_measured_alike(structure, reference, seed=2):
    """The ELBO and the importance-sampled NLL the library reports of ``structure`` equal those of ``reference``
    on the same draws: for structures whose training-only terms must not reach measurements."""
    import torch

    from pyro_vae.evaluation import elbo_per_datapoint, negative_log_likelihood

    batches = [(torch.bernoulli(torch.full((6, 784), 0.2), generator=torch.Generator().manual_seed(seed)),)]
    results = []
    for candidate in (structure, reference):
        torch.manual_seed(seed)
        elbo = elbo_per_datapoint(candidate.model, candidate.guide, batches)
        torch.manual_seed(seed)
        nll = negative_log_likelihood(candidate.model, candidate.guide, batches, num_samples=20)
        results.append((elbo, nll))
    assert results[0] == pytest.approx(results[1], rel=1e-6)


#: the files that hold the suite's longest tests (several seconds each, processes or real training), run first:
#: pytest-xdist hands the tests out in collection order, and one of them handed out last kept one worker busy
#: while the other had nothing left to do. The order within each file is kept (its module fixtures set up once).
LONGEST_FIRST = ("training/test_distributed.py", "disentanglement/test_measure.py", "cli/test_hardening.py",
                 "training/test_recipe.py", "models/test_discrete.py", "disentanglement/test_metrics.py",
                 "benchmarks/test_disentanglement_metrics.py", "studies/test_estimators.py", "cli/test_edges.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests = Path(__file__).resolve().parent

    def key(item):
        try:
            return rank.get(item.path.resolve().relative_to(tests).as_posix(), len(rank))
        except ValueError:  # a test outside tests/
            return len(rank)

    items.sort(key=key)  # stable: every other file keeps its place
