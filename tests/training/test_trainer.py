"""The SVI trainer: loss goes down, resume equals uninterrupted, checkpoints load weights-only, divergence stops."""
import io
import json

import pyro
import pytest
import torch

from pyro_vae import VAE
from pyro_vae.errors import CheckpointError, InvalidDataError, PyroVAEError, TrainingDiverged
from pyro_vae.files import read_checkpoint_payload, save_checkpoint
from pyro_vae.models import MODELS
from pyro_vae.training import CHECKPOINT, METRICS, TrainConfig, Trainer, load_checkpoint


def tiny_config(**overrides):
    settings = dict(subset=300, z_dim=2, hidden_dims=[32], batch_size=50, epochs=2, seed=7)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.parametrize("options", [{}, {"elbo": "meanfield"}, {"optimizer": "clipped-adam"}, {"jit": False}])
def test_training_lowers_the_loss_and_writes_metrics(tmp_path, options):
    trainer = Trainer(tiny_config(epochs=3, **options), tmp_path / "run", progress=False, log=lambda _: None)
    history = trainer.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["valid_elbo"] > history[0]["valid_elbo"]
    rows = [json.loads(line) for line in (tmp_path / "run" / METRICS).read_text().splitlines()]
    assert rows == history


def test_checkpoint_loads_weights_only_and_holds_everything_to_resume(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "run", progress=False, log=lambda _: None).fit()
    payload = read_checkpoint_payload(tmp_path / "run" / CHECKPOINT)  # after its SHA-256 header
    checkpoint = torch.load(io.BytesIO(payload), weights_only=True)
    assert checkpoint["epoch"] == 1
    assert checkpoint["config"]["z_dim"] == 2
    assert set(checkpoint) >= {"model_state", "optim_state", "rng_state", "history", "model_config"}
    assert not list((tmp_path / "run").glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["trace", "meanfield"])  # both JIT-compiled by default, traced again on resume
def test_resumed_run_equals_uninterrupted_run(tmp_path, elbo):
    whole = Trainer(tiny_config(epochs=3, elbo=elbo), tmp_path / "whole", progress=False, log=lambda _: None)
    whole.fit()
    pyro.clear_param_store()
    Trainer(tiny_config(epochs=1, elbo=elbo), tmp_path / "split", progress=False, log=lambda _: None).fit()
    pyro.clear_param_store()
    resumed = Trainer(tiny_config(epochs=3, elbo=elbo), tmp_path / "split", resume=True, progress=False,
                      log=lambda _: None)
    assert resumed.epoch == 1
    resumed.fit()
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["train_loss"] for r in whole.history] == [r["train_loss"] for r in resumed.history]


def test_fused_adam_trains_what_adam_trains_up_to_rounding_and_resumes_exactly(tmp_path):
    def fit(name, epochs, optimizer, resume=False):
        pyro.clear_param_store()
        trainer = Trainer(tiny_config(epochs=epochs, optimizer=optimizer), tmp_path / name, resume=resume,
                          progress=False, log=lambda _: None)
        trainer.fit()
        return trainer

    adam, fused = fit("adam", 2, "adam"), fit("fused", 2, "fused-adam")
    fit("split", 1, "fused-adam")
    resumed = fit("split", 2, "fused-adam", resume=True)
    assert fused.optimizer.optimizer.defaults["fused"] and not adam.optimizer.optimizer.defaults["fused"]
    for (name, a), (_, b), (_, c) in zip(fused.model.state_dict().items(), resumed.model.state_dict().items(),
                                         adam.model.state_dict().items()):
        assert torch.equal(a, b), name  # the checkpoint carries the fused optimizer's state exactly
        assert torch.allclose(a, c, rtol=1e-4, atol=1e-5), name  # the same rule as adam, rounded differently
    assert [r["train_loss"] for r in fused.history] == [r["train_loss"] for r in resumed.history]
    assert [r["train_loss"] for r in fused.history] == pytest.approx([r["train_loss"] for r in adam.history],
                                                                     rel=1e-5)


def test_jit_is_the_default_for_built_in_structures_with_trace_elbo():
    assert TrainConfig().uses_jit() and TrainConfig(model="hierarchical-vae").uses_jit()
    assert TrainConfig(elbo="meanfield").uses_jit() and not TrainConfig(elbo="tracegraph").uses_jit()
    assert not TrainConfig(model="my_model.py:MyVAE").uses_jit()
    assert not TrainConfig(jit=False).uses_jit() and not TrainConfig(elbo="meanfield", jit=False).uses_jit()
    assert TrainConfig(elbo="iwae").uses_jit() and not TrainConfig(elbo="iwae", model="my_model.py:MyVAE").uses_jit()


def test_compiling_draws_no_random_numbers_and_leaves_no_gradients(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path / "run", progress=False, log=lambda _: None)
    batch = next(iter(trainer.batches("train")))
    state = torch.get_rng_state()
    assert trainer.compile(batch) > 0 and trainer.compile(batch) == 0.0  # traced once
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_a_fresh_run_never_overwrites_an_existing_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    with pytest.raises(PyroVAEError, match="already exists and holds no checkpoint.pt to resume from"):
        Trainer(tiny_config(), run, progress=False)
    assert (run / "notes.txt").read_text() == "keep me"


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(epochs=1), run, progress=False, log=lambda _: None).fit()
    good = (run / CHECKPOINT).read_bytes()
    checkpoint = load_checkpoint(run / CHECKPOINT)
    checkpoint["model_state"]["encoder.loc.weight"] = torch.zeros(3, 3)
    save_checkpoint(checkpoint, run / CHECKPOINT)
    with pytest.raises(CheckpointError, match="does not match the model"):
        Trainer(tiny_config(), run, resume=True, progress=False)
    (run / CHECKPOINT).write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged.*truncated"):
        Trainer(tiny_config(), run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(tiny_config(), tmp_path / "elsewhere", resume=True, progress=False)


class ExplodingVAE(VAE):
    """A VAE that diverges at its 12th model call: the log-joint (``mode="loss"``) or the decoder (``"params"``)
    becomes NaN."""

    calls = 0
    mode = "loss"

    def model(self, x):
        ExplodingVAE.calls += 1
        if ExplodingVAE.calls >= 12 and self.mode == "params":
            torch.nn.init.constant_(self.decoder.net[0].weight, float("nan"))
        super().model(x)
        if ExplodingVAE.calls >= 12 and self.mode == "loss":
            pyro.factor("boom", torch.tensor(float("nan")))


@pytest.mark.parametrize("validate_every_step", [False, True])
@pytest.mark.parametrize("mode", ["loss", "params"])
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, mode, validate_every_step):
    monkeypatch.setitem(MODELS, "exploding", ExplodingVAE)
    monkeypatch.setattr(ExplodingVAE, "calls", 0)
    monkeypatch.setattr(ExplodingVAE, "mode", mode)
    run = tmp_path / "run"
    # Two calls before training (the structure's contract is checked, then its latent sites sorted), then 6 steps
    # per epoch plus one validation call: the 12th model call is step 3 of epoch 2. The model
    # explodes through a Python counter, which a JIT trace would freeze, so it runs without JIT.
    config = tiny_config(model="exploding", epochs=3, jit=False, validate_every_step=validate_every_step)
    trainer = Trainer(config, run, progress=False, log=lambda _: None)
    with pytest.raises(TrainingDiverged, match=r"at step 9 \(epoch 2, batch 3\).*last good checkpoint \(epoch 1\)"):
        trainer.fit()
    assert load_checkpoint(run / CHECKPOINT)["epoch"] == 1


def test_data_with_nan_is_refused(tmp_path, small_data):
    import copy

    broken = copy.deepcopy(small_data)
    broken.train.images[0, 0] = float("nan")
    with pytest.raises(InvalidDataError, match="NaN or Inf"):
        Trainer(tiny_config(), tmp_path / "run", dataset=broken, progress=False)


@pytest.mark.parametrize("field, value, message", [("batch_size", 0, "batch-size must be a positive"),
                                                    ("lr", -1.0, r"learning rate\) must be a positive, finite number"),
                                                    ("optimizer", "sgd", "unknown optimizer"),
                                                    ("elbo", "kl-only", "unknown ELBO")])
def test_bad_config_values(tmp_path, field, value, message):
    with pytest.raises(PyroVAEError, match=message):
        Trainer(tiny_config(**{field: value}), tmp_path / "run", progress=False)


def test_resume_refuses_a_config_that_contradicts_the_checkpoint(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path / "run", progress=False, log=lambda _: None).fit()
    with pytest.raises(CheckpointError, match="trained with z_dim=2, but z_dim=5"):
        Trainer(tiny_config(z_dim=5), tmp_path / "run", resume=True, progress=False)


def test_resume_to_fewer_epochs_than_done_is_refused(tmp_path):
    Trainer(tiny_config(epochs=2), tmp_path / "run", progress=False, log=lambda _: None).fit()
    with pytest.raises(CheckpointError, match="already at epoch 2; --epochs 1 would train nothing"):
        Trainer(tiny_config(epochs=1), tmp_path / "run", resume=True, progress=False)
    said = []
    Trainer(tiny_config(epochs=2), tmp_path / "run", resume=True, progress=False, log=said.append).fit()
    assert said == ["already trained to 2 epochs; nothing to train"]
