"""Rainforth et al.'s Gaussian problem: its closed forms, and the SNR rates of IWAE and DReG measured on it."""
import math

import pyro
import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.inference.multisample import MIWAE_ELBO
from pyro_vae.studies.gaussian_snr import GaussianProblem
from pyro_vae.studies.snr import snr_against_particles


def test_the_iwae_bound_with_many_draws_reaches_the_closed_form_evidence():
    problem = GaussianProblem.make(dim=3, num_data=4, perturbation=0.0)
    # at the optimum mu is the data's mean (d/dmu log p(x) = 0) and the guide's mean the posterior's
    mu = problem.start["mu"].clone().requires_grad_()
    evidence = problem.log_evidence(mu)
    (gradient,) = torch.autograd.grad(evidence, mu)
    assert gradient.abs().max() < 1e-4
    assert torch.allclose(problem.start["b"], problem.x.mean(0) / 2) and torch.equal(problem.start["A"], torch.eye(3) / 2)
    pyro.set_rng_seed(0)
    bound = -MIWAE_ELBO(num_particles=20000, outer_particles=1, max_plate_nesting=1).loss(
        problem.model, problem.guide, problem.x)
    assert bound == pytest.approx(evidence.item(), abs=0.01)
    assert bound <= evidence.item() + 1e-3


@pytest.mark.slow
def test_iwae_guide_snr_falls_and_model_snr_rises_with_k_while_dregs_guide_snr_rises():
    # Rainforth et al.: IWAE's guide SNR ~ K^(-1/2), its model's ~ K^(+1/2); Tucker et al.: DReG's guide SNR grows.
    # From K = 10 to 1000 the first should shrink about 10 times, the others grow about 10 times.
    pyro.set_rng_seed(0)
    near = GaussianProblem.make(dim=5, num_data=8, perturbation=0.1, seed=0)
    rows = {(r["estimator"], r["num_particles"]): r for r in snr_against_particles(
        near.model, near.guide, (near.x,), ["iwae"], [10, 1000], num_repeats=100)}
    closer = GaussianProblem.make(dim=5, num_data=8, perturbation=0.01, seed=0)
    rows.update({(r["estimator"], r["num_particles"]): r for r in snr_against_particles(
        closer.model, closer.guide, (closer.x,), ["dreg"], [10, 1000], num_repeats=100)})
    assert rows["iwae", 1000]["guide_snr"] < rows["iwae", 10]["guide_snr"] / 3
    assert rows["iwae", 1000]["model_snr"] > rows["iwae", 10]["model_snr"] * 3
    assert rows["dreg", 1000]["guide_snr"] > rows["dreg", 10]["guide_snr"] * 3


@pytest.mark.parametrize("options, message", [
    ({"dim": 0}, "the dimension D must be a positive whole number"),
    ({"num_data": 2.5}, "the number of data points must be a positive whole number"),
    ({"perturbation": -1.0}, "the perturbation must be a finite number >= 0"),
])
def test_bad_problem_sizes_are_one_sentence(options, message):
    with pytest.raises(PyroVAEError, match=message):
        GaussianProblem.make(**options)
