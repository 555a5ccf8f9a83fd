"""The trainer's step on Pyro's compiled graph (CompiledStep) trains exactly what SVI.step trains."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO

from pyro_vae.inference import make_elbo, optim
from pyro_vae.inference.compiled_step import CompiledStep
from pyro_vae.training import TrainConfig, Trainer


def fit(tmp_path, name, fast: bool, monkeypatch, **options):
    """A 1-epoch run of the tiny default VAE; with ``fast=False`` every step goes through SVI.step."""
    if not fast:
        monkeypatch.setattr(CompiledStep, "of", classmethod(lambda cls, elbo, optimizer: None))
    pyro.clear_param_store()
    config = TrainConfig(subset=300, z_dim=2, hidden_dims=[32], batch_size=50, epochs=1, seed=7, **options)
    trainer = Trainer(config, tmp_path / name, progress=False, log=lambda _: None)
    svi_steps = []
    step = trainer.svi.step
    monkeypatch.setattr(trainer.svi, "step", lambda *args: svi_steps.append(1) or step(*args))
    trainer.fit()
    monkeypatch.undo()
    return trainer, len(svi_steps)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{}, {"kl_warmup": 2},  # with a warm-up, the KL weight is one more argument
                                     {"elbo": "meanfield"}, {"elbo": "meanfield", "kl_warmup": 2}])
def test_compiled_step_trains_bit_for_bit_what_svi_step_trains(tmp_path, monkeypatch, options):
    fast, fast_svi_steps = fit(tmp_path, "fast", True, monkeypatch, **options)
    slow, slow_svi_steps = fit(tmp_path, "slow", False, monkeypatch, **options)
    assert fast.compiled_step is not None and slow.compiled_step is None
    # 300 training images in batches of 50, 6 steps an epoch: SVI.step only on the validated steps 1, 2, 4 and 6
    # (powers of two, and the last)
    assert (fast_svi_steps, slow_svi_steps) == (4, 6)
    assert [r["train_loss"] for r in fast.history] == [r["train_loss"] for r in slow.history]
    for (name, a), (_, b) in zip(fast.model.state_dict().items(), slow.model.state_dict().items()):
        assert torch.equal(a, b), name
    for name, state in fast.optimizer.get_state().items():
        assert torch.equal(state["exp_avg_sq"], slow.optimizer.get_state()[name]["exp_avg_sq"]), name


def test_an_epoch_run_in_pieces_validates_the_steps_of_the_whole_epoch_and_trains_the_same(tmp_path, monkeypatch):
    """What the speed benchmarks do: ``first_step`` keeps each piece's place in the epoch."""
    trainers = []
    for name, pieces in [("whole", [6]), ("pieces", [2, 3, 1])]:
        pyro.clear_param_store()
        config = TrainConfig(subset=300, z_dim=2, hidden_dims=[32], batch_size=50, epochs=1, seed=7)
        trainer = Trainer(config, tmp_path / name, progress=False, log=lambda _: None)
        batches = list(trainer.batches("train"))
        validated = []
        svi_step = trainer._svi_step
        monkeypatch.setattr(trainer, "_svi_step",
                            lambda args, validate: validated.append(validate) or svi_step(args, validate))
        done, losses = 0, []
        for size in pieces:
            losses.append(trainer.run_steps(batches[done:done + size], first_step=done + 1))
            done += size
        trainers.append((trainer, validated, sum(losses)))
    (whole, validated_whole, loss_whole), (pieces, validated_pieces, loss_pieces) = trainers
    assert validated_whole == validated_pieces == [True] * 4  # steps 1, 2, 4 and the last, 6: not 1, 2, 1, 2, 1
    assert loss_whole == loss_pieces
    for (key, a), (_, b) in zip(whole.model.state_dict().items(), pieces.model.state_dict().items()):
        assert torch.equal(a, b), key


def test_compiled_step_is_only_for_a_compiled_jit_trace_elbo(tmp_path):
    trainer = Trainer(TrainConfig(subset=300, z_dim=2, hidden_dims=[32], batch_size=50, epochs=1, jit=False),
                      tmp_path / "run", progress=False, log=lambda _: None)
    trainer.fit()
    assert trainer.compiled_step is None
    assert CompiledStep.of(JitTrace_ELBO(), optim.Adam({"lr": 0.1})) is None  # nothing compiled yet


def test_compiled_step_follows_a_parameter_replaced_in_the_store():
    def model(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x):
        pass

    optimizer = optim.Adam({"lr": 0.1})
    elbo = make_elbo("trace", jit=True)
    svi = SVI(model, guide, optimizer, loss=elbo)
    x = torch.full((4,), 3.0)
    svi.step(x)  # compiles
    step = CompiledStep.of(elbo, optimizer)
    loss = step(x)
    # -log N(x | loc, 1) summed over 4 points, at loc after one Adam step of lr 0.1 from 0
    assert loss == pytest.approx(4 * (0.5 * (3.0 - 0.1) ** 2 + 0.5 * torch.log(torch.tensor(2 * torch.pi)).item()),
                                 rel=1e-5)
    assert pyro.param("loc").item() == pytest.approx(0.2, abs=1e-3)  # two Adam steps of about lr
    pyro.get_param_store()["loc"] = torch.tensor(10.0)  # a new tensor under the same name
    step(x)
    assert pyro.param("loc").item() == pytest.approx(9.9, abs=1e-3)  # the new tensor moved, towards 3
    assert step(x, x) is None  # no graph for two arguments: the caller takes SVI.step


@pytest.mark.slow
def test_a_batch_of_one_image_trains_under_the_compiled_enumerated_elbo_as_uncompiled(tmp_path):
    """81 images in batches of 40: the epoch's last batch holds one image, whose enumerated sum the graph compiled
    on 40 cannot take (a dimension of size one broadcasts; it once ended the run with TorchScript's traceback). It
    steps uncompiled, so the compiled run trains what the uncompiled one trains, up to float rounding."""
    options = {"model": "bernoulli-mixture", "subset": 81, "hidden_dims": [16], "z_dim": 3, "batch_size": 40,
               "epochs": 2}
    runs, histories = [], []
    for jit in (True, False):  # one after the other: the two share Pyro's parameter store
        runs.append(Trainer(TrainConfig(**options, jit=jit), tmp_path / f"jit-{jit}", progress=False,
                            log=lambda line: None))
        histories.append(runs[-1].fit())
    compiled, eager = histories
    assert runs[0].svi_single is not None and runs[1].svi_single is None
    for row_compiled, row_eager in zip(compiled, eager):
        assert row_compiled["train_loss"] == pytest.approx(row_eager["train_loss"], rel=1e-6)
        assert row_compiled["valid_elbo"] == pytest.approx(row_eager["valid_elbo"], rel=1e-6)
