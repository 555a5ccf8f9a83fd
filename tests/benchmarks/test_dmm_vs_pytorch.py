"""The DMM benchmark's hand-written losses are the library's -ELBO (Trace_ELBO), value and gradients, on the same
draw, and the benchmark runs on tiny sizes and writes its JSON (no timing is asserted)."""
import importlib.util
import json

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from conftest import REPO
from pyro_vae.models import DMM

spec = importlib.util.spec_from_file_location("dmm_vs_pytorch", REPO / "benchmarks" / "dmm_vs_pytorch.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

T, D = 6, 5


def small_dmm() -> DMM:
    torch.manual_seed(0)
    dmm = DMM(x_dim=T * D, z_dim=3, hidden_dims=[8], transition_dim=8, rnn_dim=7, image_shape=(T, D))
    with torch.no_grad():  # the learned starting points away from zero, so that they count
        for p in (dmm.z_0, dmm.z_q_0, dmm.h_0):
            p.normal_()
    return dmm


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([6, 2, 4, 1, 5])
    steps = torch.bernoulli(torch.full((5, T, D), 0.4))
    steps = steps * (torch.arange(T) < lengths.reshape(-1, 1)).unsqueeze(-1)  # zeros after each end
    return steps.reshape(5, T * D), lengths


@pytest.mark.parametrize("loss", ["dmm_loss", "vectorized_dmm_loss"])
def test_the_hand_written_dmm_loss_has_the_librarys_value_and_gradients_on_the_same_draw(loss):
    dmm = small_dmm()
    x, lengths = padded_batch()
    params = list(dmm.parameters())
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    expected = Trace_ELBO().loss_and_grads(dmm.model, dmm.guide, x, lengths)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    pyro.set_rng_seed(1)  # the guide draws eps_t one step after another
    eps = torch.stack([torch.randn(5, dmm.z_dim) for _ in range(T)])
    hand = getattr(benchmark, loss)(dmm, x, lengths, eps)
    hand.backward()
    pyro.clear_param_store()
    assert hand.item() == pytest.approx(expected, rel=1e-5)
    for p, g in zip(params, grads):
        assert torch.allclose(p.grad, g, atol=1e-4, rtol=1e-4)


def test_the_fixed_draw_check_agrees_on_a_padded_batch():
    losses = benchmark.losses_on_a_fixed_draw(small_dmm(), *padded_batch())
    assert len(losses) == 3
    for value in losses.values():
        assert value == pytest.approx(losses["Trace_ELBO"], rel=1e-5)


def test_the_benchmark_runs_on_tiny_sizes_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "dmm.json"
    # --no-jit: the JIT row's compilation of T = 20 steps alone takes seconds; no --threads, which would set the
    # torch threads of the whole test session
    benchmark.main(["--rounds", "2", "--chunk", "1", "--batch-size", "4", "--z-dim", "2",
                    "--hidden-dims", "4", "--transition-dim", "4", "--rnn-dim", "4", "--no-jit", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {benchmark.REFERENCE, benchmark.VECTORIZED, f"{benchmark.LIBRARY} --no-jit"}
    for row in result["variants"].values():
        assert len(row["ms_per_step_by_round"]) == 2 and row["ms_per_step"] > 0 and row["ratio"] > 0
        assert "ratio_to_vectorized" in row
    assert result["variants"][benchmark.REFERENCE]["ratio"] == 1.0
    assert result["elbo_class"][f"{benchmark.LIBRARY} --no-jit"] == "Trace_ELBO"
    assert result["steps"] == 20 and result["z_dim"] == 2 and result["threads"] == torch.get_num_threads()
    assert "ratio to pytorch" in capsys.readouterr().out
