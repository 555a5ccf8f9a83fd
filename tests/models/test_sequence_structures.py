"""Structures over sequences against exact likelihoods: the HMM's enumeration against a forward algorithm written
here, a linear-Gaussian state-space model (declared in a file, the DMM's shape with linear maps) against a Kalman
filter written here, and masks: a padded sequence has the likelihood of the unpadded one."""
import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.evaluation.bounds import elbo_per_datapoint, log_likelihood_iwae, negative_log_likelihood
from pyro_vae.inference.sites import check_programs
from pyro_vae.models import build_model
from pyro_vae.models.sequences import SequenceStructure

T, D = 5, 3


def padded_batch(n=6, steps=T, seed=0):
    """Binary sequences of lengths 1..steps, zeros after their ends, flat (n, steps * D)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((n, steps, D), 0.4), generator=generator)
    lengths = torch.randint(1, steps + 1, (n,), generator=generator)
    lengths[0] = steps
    x[torch.arange(steps) >= lengths[:, None]] = 0
    return x.reshape(n, -1), lengths


@torch.no_grad()
def hand_forward(hmm, x, lengths):
    """log p(x_{1:L}) by the forward recursion, one sequence and one state at a time, in float64."""
    init = torch.softmax(hmm.init_logits.double(), -1)
    trans = torch.softmax(hmm.trans_logits.double(), -1)
    probs = torch.sigmoid(hmm.emissions().double())  # (K, D): Bernoulli emissions
    steps = x.double().reshape(len(x), T, D)
    out = []
    for n in range(len(x)):
        def emit(t, k):
            return torch.prod(probs[k] ** steps[n, t] * (1 - probs[k]) ** (1 - steps[n, t]))
        alpha = [init[k] * emit(0, k) for k in range(hmm.num_states)]
        for t in range(1, int(lengths[n])):
            alpha = [sum(alpha[i] * trans[i, j] for i in range(hmm.num_states)) * emit(t, j)
                     for j in range(hmm.num_states)]
        out.append(math.log(sum(alpha)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def hmm():
    torch.manual_seed(1)
    model = build_model("hmm", x_dim=T * D, image_shape=[T, D], num_states=3, hidden_dims=[7])
    with torch.no_grad():  # away from the symmetric start, so that a wrong sum shows
        model.init_logits.normal_()
        model.trans_logits.normal_()
    return model


def test_the_hmm_enumeration_equals_the_forward_algorithm_written_by_hand(hmm):
    x, lengths = padded_batch()
    exact = hand_forward(hmm, x, lengths)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(hmm.model, hmm.guide, x, lengths)
    assert -loss == pytest.approx(exact.sum().item(), abs=1e-5 * len(x))
    assert torch.allclose(hmm.log_likelihood(x, lengths).double(), exact, atol=1e-5)
    # what evaluate reports: exact, whatever K (pyro.markov's recycled dimensions contracted, not tabulated)
    per_sequence = log_likelihood_iwae(hmm.model, hmm.guide, (x, lengths), num_samples=7)
    assert torch.allclose(per_sequence.double(), exact, atol=1e-5)
    assert negative_log_likelihood(hmm.model, hmm.guide, [(x, lengths)], num_samples=3) == pytest.approx(
        -exact.mean().item(), abs=1e-5)
    assert elbo_per_datapoint(hmm.model, hmm.guide, [(x, lengths)]) == pytest.approx(exact.mean().item(), abs=1e-5)


def test_the_hmm_sums_to_one_over_every_sequence(hmm):
    """All 2^(T' D) binary sequences of a short length T': their probabilities sum to one."""
    steps = 2
    short = build_model("hmm", x_dim=steps * D, image_shape=[steps, D], num_states=3, hidden_dims=[7])
    short.load_state_dict(hmm.state_dict())
    every = torch.tensor(list(itertools.product([0.0, 1.0], repeat=steps * D)))
    assert short.log_likelihood(every).double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_padding_changes_no_likelihood(hmm):
    """The same sequences stored with T = 5 and padded to T = 8: the HMM's exact likelihood, and the DMM's ELBO and
    importance-sampled likelihood drawn with the same seed, are the same."""
    x, lengths = padded_batch()
    padded = torch.cat([x, torch.zeros(len(x), 3 * D)], 1)
    longer = build_model("hmm", x_dim=8 * D, image_shape=[8, D], num_states=3, hidden_dims=[7])
    longer.load_state_dict(hmm.state_dict())
    assert torch.allclose(hmm.log_likelihood(x, lengths), longer.log_likelihood(padded, lengths), atol=1e-5)

    options = dict(z_dim=2, hidden_dims=[8], transition_dim=8, rnn_dim=8)
    torch.manual_seed(2)
    dmm = build_model("dmm", x_dim=T * D, image_shape=[T, D], **options)
    dmm_long = build_model("dmm", x_dim=8 * D, image_shape=[8, D], **options)
    dmm_long.load_state_dict(dmm.state_dict())
    results = []
    for structure, data in ((dmm, x), (dmm_long, padded)):
        pyro.set_rng_seed(3)
        elbo = -Trace_ELBO().loss(structure.model, structure.guide, data, lengths)
        pyro.set_rng_seed(4)
        results.append((elbo, log_likelihood_iwae(structure.model, structure.guide, (data, lengths), num_samples=50)))
    assert results[0][0] == pytest.approx(results[1][0], abs=1e-4)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)


def test_the_reversal_within_lengths_is_an_involution_that_keeps_the_padding():
    x = torch.arange(2 * 4 * 1.0).reshape(2, 4, 1)
    lengths = torch.tensor([4, 2])
    flipped = SequenceStructure.reversed_in_length(x, lengths)
    assert flipped[:, :, 0].tolist() == [[3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 6.0, 7.0]]
    assert torch.equal(SequenceStructure.reversed_in_length(flipped, lengths), x)


def test_sequence_structures_meet_the_contract_and_refuse_what_is_not_a_sequence(hmm):
    x, lengths = padded_batch()
    dmm = build_model("dmm", x_dim=T * D, image_shape=[T, D], z_dim=2, hidden_dims=[8], transition_dim=8, rnn_dim=8)
    for structure in (hmm, dmm):
        check_programs(structure.model, structure.guide, (x, lengths), "a sequence structure", binary=True)
        assert structure.generate(4).shape == (4, T * D)
        assert structure.reconstruct(x, lengths).shape == x.shape
    with pytest.raises(InvalidDataError, match="lengths must be from 1 to T = 5"):
        dmm.guide(x, lengths + 1)
    with pytest.raises(PyroVAEError, match="models sequences"):
        build_model("dmm", x_dim=784, image_shape=[1, 28, 28])
    with pytest.raises(PyroVAEError, match="models sequences"):
        build_model("hmm", x_dim=16, image_shape=[16])


LINEAR_GAUSSIAN = '''
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyro_vae.models.sequences import SequenceStructure


class LinearGaussian(SequenceStructure):
    """z_t = a z_{t-1} + N(0, q) (z_0 ~ N(0, q)), x_t = c z_t + N(0, r I); the guide is the one-step optimal
    proposal q(z_t | z_{t-1}, x_t), proportional to p(z_t | z_{t-1}) p(x_t | z_t)."""

    def __init__(self, x_dim, z_dim=1, hidden_dims=(1,), activation="relu", *, image_shape=None,
                 likelihood="gaussian", net="mlp"):
        super().__init__(x_dim, image_shape=image_shape, likelihood=likelihood, net=net)
        self.z_dim, self.hidden_dims, self.activation = z_dim, hidden_dims, activation
        self.a, self.q, self.r = 0.8, 0.5, 0.3
        self.register_buffer("c", torch.linspace(0.5, 1.5, self.step_dim))
        self.spread = nn.Parameter(torch.ones(()))  # 1: the optimal proposal's own scale

    def config(self):
        return {**self.image_config(), "z_dim": self.z_dim}

    def check_batch(self, x):  # real-valued steps: any finite number
        return x

    def model(self, x, lengths=None):
        steps, mask = self.sequences(x, lengths)
        pyro.module("lg", self)
        z = torch.zeros(steps.shape[0])
        with pyro.plate("data", steps.shape[0]):
            for t in pyro.markov(range(self.num_steps)):
                z = pyro.sample(f"z_{t}", dist.Normal(self.a * z, self.q ** 0.5).mask(mask[:, t]))
                pyro.sample(f"x_{t}", dist.Normal(z.unsqueeze(-1) * self.c, self.r ** 0.5).to_event(1)
                            .mask(mask[:, t]), obs=steps[:, t])

    def guide(self, x, lengths=None):
        steps, mask = self.sequences(x, lengths)
        pyro.module("lg", self)
        precision = 1 / self.q + (self.c ** 2).sum() / self.r
        z = torch.zeros(steps.shape[0])
        with pyro.plate("data", steps.shape[0]):
            for t in pyro.markov(range(self.num_steps)):
                loc = (self.a * z / self.q + (steps[:, t] * self.c).sum(-1) / self.r) / precision
                z = pyro.sample(f"z_{t}", dist.Normal(loc, self.spread * precision ** -0.5).mask(mask[:, t]))
'''


def kalman_log_likelihood(x, lengths, a, q, r, c):
    """log p(x_{1:L}) of each sequence by the Kalman filter, in float64."""
    out = []
    for n in range(len(x)):
        mean, var, total = 0.0, 0.0, 0.0
        for t in range(int(lengths[n])):
            mean, var = a * mean, a * a * var + q  # predict z_t
            covariance = var * torch.outer(c, c) + r * torch.eye(len(c), dtype=torch.float64)
            innovation = x[n, t] - c * mean
            total += torch.distributions.MultivariateNormal(torch.zeros(len(c), dtype=torch.float64),
                                                            covariance).log_prob(innovation).item()
            gain = var * torch.linalg.solve(covariance, c)
            mean, var = mean + (gain @ innovation).item(), var - (gain @ c).item() * var
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def test_a_linear_gaussian_state_space_model_from_a_file_against_the_kalman_filter(tmp_path):
    path = tmp_path / "linear_gaussian.py"
    path.write_text(LINEAR_GAUSSIAN)
    steps, dim, n = 8, 2, 16
    model = build_model(f"{path}:LinearGaussian", x_dim=steps * dim, image_shape=[steps, dim], z_dim=1,
                        hidden_dims=[1], activation="relu")
    c = model.c.double()
    with torch.no_grad():
        pyro.set_rng_seed(0)
        lengths = torch.randint(3, steps + 1, (n,))
        data = poutine_draw(model, n, lengths)
    exact = kalman_log_likelihood(data.double().reshape(n, steps, dim), lengths, model.a, model.q, model.r, c)
    pyro.set_rng_seed(1)
    estimate = log_likelihood_iwae(model.model, model.guide, (data, lengths), num_samples=5000).double()
    gap = (exact - estimate).mean().item()  # >= 0 in expectation: the estimate of log p(x) is biased down
    assert -0.05 < gap < 0.5, gap  # measured: -0.002 (the guide is the one-step optimal proposal)
    pyro.set_rng_seed(2)
    elbo = elbo_per_datapoint(model.model, model.guide, [(data, lengths)], num_particles=100)
    assert elbo < exact.mean().item() - 0.01  # measured: 0.26 nats below


def poutine_draw(model, n, lengths):
    """Sequences drawn from the model's prior, zeros after their lengths, flat (n, T * D)."""
    trace = pyro.poutine.trace(pyro.poutine.uncondition(model.model)).get_trace(
        torch.zeros(n, model.x_dim), lengths)
    steps = torch.stack([trace.nodes[f"x_{t}"]["value"] for t in range(model.num_steps)], 1)
    steps[torch.arange(model.num_steps) >= lengths[:, None]] = 0
    return steps.reshape(n, -1).float()


@pytest.mark.slow
@pytest.mark.parametrize("name, elbo", [("dmm", "trace"), ("hmm", "enum")])
def test_the_compiled_elbo_training_uses_agrees_at_another_batch_size(name, elbo):
    """Training compiles the built-in structures' ELBO: traced on 20 sequences, on 7 others it must give the plain
    ELBO (the HMM's exactly: nothing is drawn; the DMM's on average over 30 draws, within 4 standard errors)."""
    from pyro_vae.inference import make_elbo

    torch.manual_seed(5)
    structure = build_model(name, x_dim=T * D, image_shape=[T, D], z_dim=2, hidden_dims=[8], activation="gated",
                            **({"transition_dim": 8, "rnn_dim": 8} if name == "dmm" else {"num_states": 3}))
    assert any(type(m).__name__ == "GatedDense" for m in structure.modules())
    x, lengths = padded_batch(20)
    small, small_lengths = padded_batch(7, seed=1)
    compiled = make_elbo(elbo, jit=True, max_plate_nesting=1)
    compiled.loss_and_grads(structure.model, structure.guide, x, lengths)
    plain = make_elbo(elbo, max_plate_nesting=1)
    draws = 1 if name == "hmm" else 30
    a = torch.tensor([compiled.loss_and_grads(structure.model, structure.guide, small, small_lengths)
                      for _ in range(draws)])
    b = torch.tensor([plain.loss(structure.model, structure.guide, small, small_lengths) for _ in range(draws)])
    if name == "hmm":
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    else:
        assert abs(a.mean() - b.mean()) < 4 * (a.var() / draws + b.var() / draws).sqrt()
