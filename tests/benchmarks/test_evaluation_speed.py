"""The evaluation benchmark's hand-written loop computes exactly what ``log_likelihood_iwae`` computes, and the
compiled chunks that ``pyro-vae evaluate`` runs (and the benchmark times) compute what the uncompiled ones do."""
import importlib.util

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from torch.distributions import constraints

from conftest import REPO
from pyro_vae import VAE
from pyro_vae.evaluation.bounds import _Chunks, latent_sites, log_likelihood_iwae
from pyro_vae.models import build_model

spec = importlib.util.spec_from_file_location(
    "evaluation_speed", REPO / "benchmarks" / "evaluation_speed.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def tiny_vae_and_images(num_images):
    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=[16])
    return vae, torch.bernoulli(torch.full((num_images, 784), 0.3))


def test_the_hand_written_estimate_is_the_librarys_on_the_same_draw():
    vae, x = tiny_vae_and_images(5)
    pyro.set_rng_seed(1)
    library = log_likelihood_iwae(vae.model, vae.guide, (x,), num_samples=7)  # 35 rows: one call
    pyro.set_rng_seed(1)
    hand = benchmark.hand_written_log_likelihood(vae, x, 7, rows=35)
    assert hand.dtype == torch.float64
    torch.testing.assert_close(hand.float(), library, rtol=1e-6, atol=1e-4)
    pyro.set_rng_seed(2)  # another draw gives another estimate: the agreement is not a coincidence of the seeds
    assert not torch.allclose(benchmark.hand_written_log_likelihood(vae, x, 7, rows=35).float(), library)


def test_chunks_accumulate_to_the_same_estimate_on_both_sides():
    vae, x = tiny_vae_and_images(1)
    pyro.set_rng_seed(3)
    library = log_likelihood_iwae(vae.model, vae.guide, (x,), num_samples=10, max_rows=4)  # chunks of 4, 4, 2
    pyro.set_rng_seed(3)
    hand = benchmark.hand_written_log_likelihood(vae, x, 10, rows=4)
    torch.testing.assert_close(hand.float(), library, rtol=1e-6, atol=1e-4)


# ---------------------------------------------------------------- the compiled chunks that pyro-vae evaluate times


def same_draw(structure_or_programs, batch, particles=4, register_first=None):
    """One chunk compiled and uncompiled from the same seed (after a first compiled call, which records it)."""
    model, guide = structure_or_programs
    if register_first is not None:  # another structure's parameters under the same names in Pyro's store
        poutine.trace(register_first.guide).get_trace(batch[0])
    particle_dim = -latent_sites(model, guide, batch).max_plate_nesting - 1
    chunks = _Chunks(model, guide, jit=True)
    with torch.no_grad(), pyro.validation_enabled(False):
        chunks(batch, particles, particle_dim)
        pyro.set_rng_seed(5)
        compiled = chunks(batch, particles, particle_dim)
        pyro.set_rng_seed(5)
        uncompiled = chunks.eager(batch, particles, particle_dim)
    return chunks, compiled, uncompiled


@pytest.mark.parametrize("name", ["vae", "cvae", "gmvae"])
def test_a_compiled_chunk_draws_and_weighs_as_the_uncompiled_one(name):
    structure = build_model(name, z_dim=2, hidden_dims=[8])
    _, x = tiny_vae_and_images(3)
    batch = (x, torch.tensor([1, 4, 7])) if structure.needs_labels else (x,)
    chunks, compiled, uncompiled = same_draw((structure.model, structure.guide), batch)
    assert chunks.jit and compiled.dtype == torch.float64
    torch.testing.assert_close(compiled, uncompiled, rtol=0, atol=0)


def test_compiling_reads_the_structures_own_parameters_whatever_the_store_holds():
    stale, _ = tiny_vae_and_images(2)
    structure = VAE(z_dim=4, hidden_dims=[16])  # the same parameter names, other values
    chunks, compiled, uncompiled = same_draw((structure.model, structure.guide), (tiny_vae_and_images(2)[1],),
                                             register_first=stale)
    assert chunks.jit  # recorded, not fallen back
    torch.testing.assert_close(compiled, uncompiled, rtol=0, atol=0)


def test_pyro_parameters_outside_modules_are_inputs_of_the_compiled_graph_too():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        scale = pyro.param("scale", torch.tensor(0.7), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x, scale))

    x = torch.randn(4)
    chunks, compiled, uncompiled = same_draw((model, guide), (x,))
    assert chunks.jit
    torch.testing.assert_close(compiled, uncompiled, rtol=0, atol=0)
    pyro.get_param_store()["scale"] = torch.tensor(2.0)  # a new value reaches the compiled graph
    with torch.no_grad(), pyro.validation_enabled(False):
        pyro.set_rng_seed(6)
        again = chunks((x,), 4, -2)
        pyro.set_rng_seed(6)
        torch.testing.assert_close(again, chunks.eager((x,), 4, -2), rtol=0, atol=0)


def test_programs_that_cannot_be_recorded_run_uncompiled_with_a_warning():
    hidden = torch.nn.Linear(3, 2)  # read by the guide without pyro.module: a constant that wants gradients

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True) * torch.ones(3), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(hidden(x), 1.0).to_event(1))

    x = torch.randn(5, 3)
    with pytest.warns(UserWarning, match="runs uncompiled"):
        estimate = log_likelihood_iwae(model, guide, (x,), num_samples=20, jit=True)
    assert torch.isfinite(estimate).all() and estimate.shape == (5,)


@pytest.mark.slow
def test_the_compiled_estimate_agrees_with_the_uncompiled_one():
    vae, x = tiny_vae_and_images(20)
    compiled = log_likelihood_iwae(vae.model, vae.guide, (x,), num_samples=2000, jit=True)
    uncompiled = log_likelihood_iwae(vae.model, vae.guide, (x,), num_samples=2000)
    assert compiled.mean().item() == pytest.approx(uncompiled.mean().item(), abs=0.05)


@pytest.mark.slow
def test_the_benchmark_runs_and_both_sides_estimate_the_same_nll(capsys):
    result = benchmark.main(["--num-images", "3", "--rounds", "2", "-K", "200"])
    library, hand = result["pyro-vae evaluate"], result[benchmark.HAND]
    assert library["nll"] == pytest.approx(hand["nll"], abs=1.0)  # 3 images, K = 200: Monte Carlo noise
    assert hand["ratio"] == 1.0 and library["samples_per_second"] > 0 and library["minutes"] > 0
    assert "K=5000 x 10,000" in capsys.readouterr().out
