"""The edges of issue 22: sizes checked before they reach the allocator, no wrong number with exit 0, structure
files checked at the door, consistent runs after a half-done write, and Ctrl-C that says what was kept.

The table at the top is the new-user audit's cases (and neighbours): each ends with exit 2, one line on stderr,
the trained run byte for byte as it was, and no new run directory. The sizes are absurd on purpose (terabytes),
so that they are refused on any machine; an estimate that refuses allocates nothing (checked below).
"""
import json
import shutil
import textwrap

import pytest
import torch

from conftest import TINY, assert_one_sentence_error, run_cli
from test_hardening import check_refused, trained, tree_hash  # noqa: F401 (trained: the tiny run, a fixture)
from pyro_vae.catalog import BEST_CHECKPOINT, CHECKPOINT, METRICS

STRUCTURES = textwrap.dedent('''
    import pyro
    import pyro.distributions as dist
    from pyro_vae.models import VAE


    class NoX(VAE):  # observes the pixels under another name
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("pixels", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


    class NoPlate(VAE):  # no data plate in the model
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(2))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(2), obs=x)


    class GuideOnly(VAE):  # the guide samples a site the model lacks
        def guide(self, x):
            x = self.check_batch(x)
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0]):
                loc, scale = self.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))
                pyro.sample("w", dist.Normal(x.new_zeros(x.shape[0]), 1.0))


    class ModelOnly(VAE):  # the model samples a latent the guide lacks
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("w", dist.Normal(x.new_zeros(x.shape[0]), 1.0))
                self.observe(self.decoder(z), x)


    class NanFactor(VAE):  # a NaN log-factor
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.factor("penalty", x.new_full((x.shape[0],), float("nan")))
                self.observe(self.decoder(z), x)


    class HalfPlate(VAE):  # the guide's data plate is another size than the batch
        def guide(self, x):
            x = self.check_batch(x)
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", x.shape[0] // 2):
                loc, scale = self.encoder(x[: x.shape[0] // 2])
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


    class Subsampled(VAE):  # the data plate declared as the data set's size, subsampled: each image counts 600 times
        def guide(self, x):
            import torch
            x = self.check_batch(x)
            pyro.module("encoder", self.encoder)
            with pyro.plate("data", 60000, subsample=torch.arange(x.shape[0])):
                loc, scale = self.encoder(x)
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))


    class Raises(VAE):  # the guide raises
        def guide(self, x):
            return 1 / 0


    class LooseParam(VAE):  # a pyro.param outside the structure's networks
        def model(self, x):
            import torch
            gain = pyro.param("gain", torch.ones(()))
            super().model(x * gain)


    class IgnoresZ(VAE):  # its constructor ignores z_dim
        def __init__(self, x_dim=784, z_dim=50, hidden_dims=(200, 200), activation="relu", **pixels):
            super().__init__(x_dim, 10, hidden_dims, activation, **pixels)


    class BrokenConfig(VAE):  # config() raises
        def config(self):
            raise RuntimeError("no config here")


    class NoXWithGradients(VAE):  # observes the pixels under another name only while gradients are on
        def model(self, x):
            import torch
            if not torch.is_grad_enabled():
                return super().model(x)
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("pixels", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


    class GrowsASite(VAE):  # from its tenth call on (a few steps into training), the guide samples a site the model lacks
        after = 9

        def guide(self, x):
            self.calls = getattr(self, "calls", 0) + 1
            super().guide(x)
            if self.calls > self.after:
                with pyro.plate("data_too", x.shape[0]):
                    pyro.sample("w", dist.Normal(x.new_zeros(x.shape[0]), 1.0))


    class GrowsASiteLate(GrowsASite):  # from its 15th call on, after the validated steps of a short epoch
        after = 14


    class DensityOnBits(VAE):  # a density observing binary pixels: its "NLL" came out at -4695 nats
        def model(self, x):
            x = self.check_batch(x)
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(self.decoder(z).sigmoid(), 1e-3).to_event(1), obs=x)


    class FailsOnThirdCall(VAE):  # passes the door (two calls), then raises while train measures its evaluation
        def model(self, x):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 3:
                raise ValueError("the third call fails")
            super().model(x)


    class FailsWhenEvaluated(VAE):  # trains, then raises in evaluation mode on the final evaluation's batch
        def model(self, x):
            if not self.training and x.shape[0] > 100:  # train's time probe takes 100 images
                raise ValueError("eval mode not supported")
            super().model(x)


    class FailsLater(VAE):  # its guide raises from its tenth call on (a few steps into training)
        def guide(self, x):
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls > 9:
                raise RuntimeError("a mistake that waited")
            super().guide(x)
''')

NEW = "{tmp}/new-run"
RUN = "{run}"
TB = "10000000000"  # sizes that no machine holds

CASES = [
    # sizes: refused with the estimate, before anything is allocated
    (["train", "--run-dir", NEW, "--num-particles", TB], "this run would need about"),
    (["train", "--run-dir", NEW, "--hidden-dims", "100000000"], "parameters with their gradients and Adam's moments"),
    (["train", "--run-dir", NEW, "--z-dim", "100000000000"], "would need about"),
    (["train", "--run-dir", NEW, "--batch-size", "100000", "--num-particles", "100000000"],
     "the activations of one step"),
    (["train", "--run-dir", NEW, "--model", "mixture-prior-vae", "--model-option", f"num_components={TB}"],
     "is available on this machine"),
    (["train", "--run-dir", NEW, "--model", "gmvae", "--model-option", "num_components=100000000"],
     "enumerated values"),
    (["train", "--run-dir", NEW, "--dataset", "dsprites-procedural", "--image-size", "100000"],
     "--image-size 100000 (900 images of 100,000 x 100,000 pixels) would need about"),
    (["sample", RUN, "--num", TB], "would need about"),
    (["sample", RUN, "--num", "100000"], "more than the 65,536 a side that picture viewers open"),
    (["reparam-toy", "--out", NEW, "--repeats", TB, "--sample-sizes", TB], "would need about"),
    (["reparam-toy", "--out", NEW, "--theta", "1e30"], "--theta must lie within +-1e+06"),
    (["reparam-toy", "--out", NEW, "--repeats", "2", "--sample-sizes", TB], "would need about"),
    (["compare-estimators", "--out", NEW, "--repeats", TB], "gradient estimates of the"),
    (["compare-estimators", "--out", NEW, "--train-steps", "0", "--eval-every", "10"],
     "--eval-every spaces the validation ELBOs of the training curves, and --train-steps 0 trains none"),
    (["compare-estimators", "--out", NEW, "--estimators", "reparam,meanfield", "--baseline-warmup", "5"],
     "--baseline-warmup lets baselines settle, and none of --estimators reparam,meanfield has one"),
    # no wrong number with exit 0
    (["train", "--run-dir", NEW, "--likelihood", "gaussian"], "images are binary (every value 0 or 1)"),
    (["train", "--run-dir", NEW, "--likelihood", "continuous-bernoulli"], "use --likelihood bernoulli"),
    (["train", "--run-dir", NEW, "--lr", "1e6"], "times its first value"),
    # structure files, at the door
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:NoX"], "its model has no observed site named 'x' "
                                                                "(observed sites: 'pixels')"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:NoPlate"], "the site 'z' of its model is outside "
                                                                    "pyro.plate('data', batch_size)"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:GuideOnly"], "its guide samples 'w', which its model lacks"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:ModelOnly"], "its model samples 'w', which its guide lacks"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:NanFactor"], "(the parameter log_factor of a Unit)"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:HalfPlate"], "raised ValueError"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:Subsampled"], "its guide declares pyro.plate('data') of "
                                                                       "60,000 subsampled to 50 at the site 'z'"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:Raises"], "raised ZeroDivisionError (line"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:LooseParam"], "pyro.param('gain') lives outside the "
                                                                       "structure's networks"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:IgnoresZ"], "was given z_dim=2 but built z_dim=10"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:BrokenConfig"], "its config() raised RuntimeError: no "
                                                                         "config here"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:NoXWithGradients"], "its model has no observed site "
                                                                             "named 'x' (observed sites: 'pixels')"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:GrowsASite"], "its guide samples 'w', which its model lacks, "
                                                                       "though its sites matched when training began"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:DensityOnBits"], "its model observes the binary pixels with a "
                                                                          "density (Normal), which grows without bound"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:FailsOnThirdCall"], "the structure's own code raised "
                                                                             "ValueError (s.py, line"),
    (["train", "--run-dir", NEW, "--model", "{tmp}/s.py:FailsLater"], "(epoch 1) its guide or model raised "
                                                                       "RuntimeError (line"),
    (["train", "--run-dir", NEW, "--hidden-dims", "32,,32"], "expected comma-separated layer widths"),
    (["train", "--run-dir", NEW, "--model-option", "z_dim=4"], "z_dim is not a model option but an option of its "
                                                               "own: give --z-dim instead of --model-option z_dim=..."),
    (["train", "--name", "../escape"], "--name '../escape' names a run under runs/, not a path"),
    (["train", "--run-dir", NEW, "--data-dir", "/nonexistent"], "--data-dir and --download say where mnist"),
    (["train", "--run-dir", NEW, "--binarize", "dynamic"], "--binarize dynamic draws binary pixels from grey ones, "
                                                           "and the pixels of binarized-mnist are binary already"),
    (["train", "--run-dir", NEW, "--eval-samples", "1000000000000000"],
     "the final evaluation (1,000,000,000,000,000 importance samples for each of"),
    # the command's own parser says an unknown option
    (["train", "--run-dir", NEW, "--bogus"], "pyro-vae train: error: unrecognized arguments: --bogus"),
    (["sample", RUN, "extra"], "pyro-vae sample: error: unrecognized arguments: extra"),
]

SMALL = ["--subset", "300", "--epochs", "1", "--hidden-dims", "32", "--z-dim", "2", "--batch-size", "50",
         "--eval-samples", "4", "--no-progress"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "s.py").write_text(STRUCTURES)
    return tmp_path


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(a)[:70] for a, _ in CASES])
def test_every_edge_is_one_sentence_and_exit_2_and_changes_nothing(capsys, trained, files, argv, fragment):
    small = {"train": SMALL, "compare-estimators": ["--subset", "100", "--no-progress"]}.get(argv[0], [])
    check_refused(capsys, trained, files, argv, fragment, prefix=small)


# -- the estimates ----------------------------------------------------------------------------------------

def test_parameters_are_counted_on_the_meta_device_exactly():
    """The estimate's parameter count is the real structure's, for every built-in structure."""
    from pyro_vae.config import TrainConfig
    from pyro_vae.limits import parameter_count
    from pyro_vae.models import MODELS, build_model

    for name, cls in MODELS.items():
        shape = (1, 28, 28) if cls.data_kind == "images" else (5, 3)  # sequences: T steps of D features
        config = TrainConfig(model=name, hidden_dims=[16, 8], z_dim=3)
        real = build_model(name, **config.model_kwargs(shape))
        expected = sum(p.numel() for p in real.parameters()) + sum(b.numel() for b in real.buffers())
        assert parameter_count(config, shape) == expected, name


def test_an_estimate_that_refuses_allocates_nothing():
    from pyro_vae.config import TrainConfig
    from pyro_vae.errors import PyroVAEError
    from pyro_vae.studies.toy import resident_mb
    from pyro_vae.limits import check_training_fits

    before = resident_mb()
    config = TrainConfig(model="mixture-prior-vae", model_options={"num_components": 10 ** 10}, hidden_dims=[10 ** 6])
    with pytest.raises(PyroVAEError, match="would need about"):
        check_training_fits(config, (1, 28, 28), 70_000)
    assert resident_mb() - before < 100  # megabytes; the structure alone would be 10^11 floats


def test_check_fits_refuses_above_the_usable_part_only():
    from pyro_vae.errors import PyroVAEError
    from pyro_vae.limits import USABLE_FRACTION, check_fits

    room = lambda device: 10 ** 9  # noqa: E731 - a machine with 1 GB available
    check_fits(USABLE_FRACTION * 10 ** 9 - 1, "this", "less", available=room)
    with pytest.raises(PyroVAEError, match=r"^this would need about 801 MB of memory, and 1 GB is available on this "
                                           r"machine, of which a command takes at most 80%; less$"):
        check_fits(USABLE_FRACTION * 10 ** 9 + 10 ** 6, "this", "less", available=room)


def test_the_default_vae_fits_with_room_to_spare():
    """The estimate of the default run is in the hundreds of megabytes: not a refusal waiting to happen."""
    from pyro_vae.config import TrainConfig
    from pyro_vae.limits import training_memory

    need, largest = training_memory(TrainConfig(), (1, 28, 28), 70_000, train_images=50_000)
    assert 100e6 < need < 1e9
    assert largest == "70,000 images of 784 pixels"


def test_evaluation_counts_every_importance_sample_and_says_how_long():
    """The progress counter sees exactly images x K samples, whatever the chunks; a slow one speaks once."""
    from pyro_vae.evaluation import negative_log_likelihood
    from pyro_vae.limits import SampleProgress
    from pyro_vae.models import VAE

    model = VAE(x_dim=784, z_dim=2, hidden_dims=[8])
    batches = [(torch.bernoulli(torch.full((n, 784), 0.3)),) for n in (7, 3)]
    seen = []
    negative_log_likelihood(model.model, model.guide, batches, num_samples=1234, max_rows=500, on_samples=seen.append)
    assert sum(seen) == 10 * 1234 and len(seen) > 2

    said, now = [], [0.0]
    progress = SampleProgress(1000, say=said.append, clock=lambda: now[0], what="sampling")
    now[0] = 60.0
    progress(10)  # the first chunk paid a minute of one-off costs (an ELBO pass, compilation): no pace yet
    now[0] = 63.0
    progress(10)  # then 10 samples in 3 s: 980 more take 294 s, 357 s in all (the pace from the start: 51 minutes)
    progress(10)
    assert said == ["sampling: 1,000 samples, about 6 minutes on this machine (about 5 minutes to go); "
                    "Ctrl-C stops it"]
    quick, said = SampleProgress(1000, say=said.append, clock=lambda: now[0]), []
    quick(10)
    now[0] += 3.0
    quick(900)
    assert said == []


# -- half-done writes -------------------------------------------------------------------------------------

def _checkpoint_epoch(path):
    from pyro_vae.training import load_checkpoint

    return load_checkpoint(path)["epoch"]


def test_a_best_checkpoint_lost_between_two_writes_is_rebuilt_from_the_checkpoint(trained, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    good_best = (run / BEST_CHECKPOINT).read_bytes()
    (run / BEST_CHECKPOINT).unlink()
    (run / METRICS).write_text("")  # and metrics.jsonl never written
    code, out, err = cli("evaluate", run, "-K", 2, "--subset", 10, "--out", tmp_path / "e.json")
    assert code == 0, err
    assert "repaired after an interrupted write: best.pt rewritten from checkpoint.pt (epoch 1, the best)" in out
    assert "metrics.jsonl rewritten from checkpoint.pt (epoch 1)" in out
    assert "(epoch 1 of 1," in out
    assert json.loads((run / METRICS).read_text().splitlines()[0])["epoch"] == 1
    from pyro_vae.training import load_checkpoint

    rebuilt, original = load_checkpoint(run / BEST_CHECKPOINT), load_checkpoint(trained / BEST_CHECKPOINT)
    assert rebuilt["epoch"] == original["epoch"] and rebuilt["valid_elbo"] == original["valid_elbo"]
    assert all(torch.equal(rebuilt["model_state"][k], v) for k, v in original["model_state"].items())
    assert len(good_best) > 0


def test_the_best_epoch_of_a_run_whose_checkpoint_is_damaged_can_still_be_evaluated(trained, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[:1000])  # truncated
    code, out, err = cli("evaluate", run, "-K", 2, "--subset", 10, "--out", tmp_path / "e.json")
    assert code == 0, err
    assert "is damaged" in out and "its best.pt is read as it is" in out
    code, _, err = cli("evaluate", run, "-K", 2, "--subset", 10, "--checkpoint", "last", "--out", tmp_path / "l.json")
    assert_one_sentence_error(code, err, "is damaged")
    code, _, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress")
    assert_one_sentence_error(code, err, "is damaged", "the run cannot be continued from it: train afresh in another "
                                                       "--run-dir")
    (run / CHECKPOINT).unlink()
    code, _, err = cli("evaluate", run, "-K", 2, "--subset", 10, "--checkpoint", "last", "--out", tmp_path / "m.json")
    assert_one_sentence_error(code, err, f"the run {run} has no checkpoint.pt (deleted?)", "--checkpoint best reads")


@pytest.mark.slow
def test_a_best_checkpoint_newer_than_the_checkpoint_is_repaired_on_resume(trained, tmp_path, cli):
    """What older versions left after a full disk during --resume: best.pt at epoch 2, checkpoint.pt at 1."""
    run, ahead = tmp_path / "run", tmp_path / "ahead"
    shutil.copytree(trained, run)
    shutil.copytree(trained, ahead)
    code, _, err = cli("train", "--run-dir", ahead, "--resume", "--epochs", 2, "--no-progress", "--eval-samples", 2)
    assert code == 0, err
    shutil.copy(ahead / BEST_CHECKPOINT, run / BEST_CHECKPOINT)
    assert _checkpoint_epoch(run / BEST_CHECKPOINT) == 2 and _checkpoint_epoch(run / CHECKPOINT) == 1
    code, out, err = cli("evaluate", run, "-K", 2, "--subset", 10, "--out", tmp_path / "e.json")
    assert code == 0, err
    assert "(epoch 1 of 1," in out  # never "epoch 2 of 1"
    assert _checkpoint_epoch(run / BEST_CHECKPOINT) == 1
    code, out, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress", "--eval-samples", 2)
    assert code == 0, err
    assert (run / BEST_CHECKPOINT).read_bytes() == (ahead / BEST_CHECKPOINT).read_bytes()


@pytest.mark.slow
def test_a_fresh_run_whose_best_write_fails_can_be_resumed(tmp_path, cli, monkeypatch):
    import pyro_vae.training.state as training
    from pyro_vae.files import FileSystemError

    real = training.save_checkpoint

    def full_disk_for_best(checkpoint, path):
        if path.name == BEST_CHECKPOINT:
            raise FileSystemError(f"cannot write {path}: no space left on device")
        return real(checkpoint, path)

    monkeypatch.setattr(training, "save_checkpoint", full_disk_for_best)
    run = tmp_path / "run"
    code, _, err = cli("train", "--run-dir", run, *TINY)
    assert_one_sentence_error(code, err, "no space left on device")
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [CHECKPOINT, "config.json", METRICS]
    monkeypatch.setattr(training, "save_checkpoint", real)
    code, out, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress", "--eval-samples", 2)
    assert code == 0, err
    assert "best.pt rewritten from checkpoint.pt (epoch 1, the best)" in out + err
    assert _checkpoint_epoch(run / CHECKPOINT) == 2


# -- Ctrl-C -----------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("at_epoch", [1, 2])
def test_ctrl_c_says_what_was_kept_and_how_to_continue(tmp_path, cli, monkeypatch, at_epoch):
    from pyro_vae.training import Trainer

    real = Trainer.run_steps

    def interrupted(self, batches, **kwargs):
        if self.epoch + 1 == at_epoch:
            raise KeyboardInterrupt
        return real(self, batches, **kwargs)

    monkeypatch.setattr(Trainer, "run_steps", interrupted)
    run = tmp_path / "run"
    code, _, err = cli("train", "--run-dir", run, *TINY, "--epochs", 2)
    assert code == 130
    if at_epoch == 1:
        assert err.strip() == (f"pyro-vae train: interrupted during epoch 1, before the first checkpoint; nothing was "
                               f"kept (the run directory {run} is left as it was), so train again from the start")
        assert not run.exists()
    else:
        assert err.strip() == (f"pyro-vae train: interrupted during epoch 2; epoch 1's checkpoint is kept in "
                               f"{run / CHECKPOINT}; continue with: pyro-vae train --run-dir {run} --resume")
        monkeypatch.setattr(Trainer, "run_steps", real)
        code, _, err = cli("train", "--run-dir", run, "--resume", "--no-progress", "--eval-samples", 2)
        assert code == 0, err
        assert _checkpoint_epoch(run / CHECKPOINT) == 2


# -- the new-user audit's second round ----------------------------------------------------------------------

def test_a_structure_that_fails_after_training_is_one_sentence_and_its_run_is_kept(files, cli):
    """What a structure file raises outside training (evaluating, drawing) names the file and line; the epochs
    trained are kept, and evaluate says the same sentence."""
    run = files / "run"
    code, _, err = cli("train", "--run-dir", run, "--model", f"{files}/s.py:FailsWhenEvaluated", *SMALL)
    assert_one_sentence_error(code, err, "the structure's own code raised ValueError (s.py, line",
                              f"eval mode not supported; the 1 epoch(s) trained are kept in {run}")
    assert _checkpoint_epoch(run / CHECKPOINT) == 1
    code, _, err = cli("evaluate", run, "-K", 2)
    assert_one_sentence_error(code, err, "raised ValueError (", "eval mode not supported")


def test_a_guide_that_gains_a_site_after_the_validated_steps_is_refused_by_the_evaluation(files, cli):
    """Past the steps Pyro validates, the measures themselves check the sites on every batch: no "ELBO" above
    log p(x) is reported (the audit's case gave an NLL 1.4 nats too low with exit 0)."""
    code, _, err = cli("train", "--run-dir", files / "run", "--model", f"{files}/s.py:GrowsASiteLate", *SMALL)
    assert_one_sentence_error(code, err, "the structure's model and guide disagree on a batch of 300 images: its "
                                         "guide samples 'w', which its model lacks")


def test_sample_writes_into_a_new_folder_named_with_a_trailing_slash(trained, tmp_path, cli):
    code, _, err = cli("sample", trained, "--num", 4, "--nrow", 2, "--out", f"{tmp_path}/pictures/")
    assert code == 0, err
    assert (tmp_path / "pictures" / "generated.png").stat().st_size > 0


def test_sample_out_naming_a_file_as_a_folder_is_one_sentence(trained, tmp_path, cli):
    code, _, err = cli("sample", trained, "--out", f"{trained / CHECKPOINT}/")
    assert_one_sentence_error(code, err, f"names a folder, and {trained / CHECKPOINT} is a file")


def test_a_run_directory_without_its_checkpoint_is_not_a_circle(files, cli):
    """Neither --resume nor a fresh run can use a folder whose checkpoint.pt is gone: the sentence says so, instead
    of sending a fresh run to --resume."""
    run = files / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"left over")
    code, _, err = cli("train", "--run-dir", run, *SMALL)
    assert_one_sentence_error(code, err, f"{run} already exists and holds no checkpoint.pt to resume from")
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]


def test_the_evaluation_estimate_before_training_leaves_the_random_state_as_it_was(small_data):
    """train measures the final evaluation's pace on the untrained model; the training that follows must draw what
    it would have drawn without the probe."""
    from pyro_vae import VAE
    from pyro_vae.evaluation import evaluation_seconds

    model = VAE(z_dim=2, hidden_dims=(16,))
    state = torch.get_rng_state()
    seconds = evaluation_seconds(model, small_data, "test", 1000)
    assert torch.equal(torch.get_rng_state(), state)
    assert 0 < seconds < 1000  # a hundred thousand samples of a tiny VAE: well under a second a thousand each


def test_an_allocation_that_fails_anyway_is_one_sentence(trained, cli, monkeypatch):
    """What the estimates cannot foresee (a ulimit, another process taking the memory) still ends in a sentence."""
    import pyro_vae.evaluation.report as report

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 400000000000 bytes")

    monkeypatch.setattr(report, "evaluate_model", no_memory)
    before = tree_hash(trained)
    code, _, err = cli("evaluate", trained, "-K", 2, "--subset", 5, "--out", trained.parent / "never.json")
    assert_one_sentence_error(code, err, "ran out of memory ([enforce fail", "choose smaller sizes")
    assert tree_hash(trained) == before


def test_the_address_space_limit_counts_as_memory_available(monkeypatch):
    import resource

    from pyro_vae import limits

    import os
    from pathlib import Path

    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    monkeypatch.setattr(resource, "getrlimit", lambda what: (mapped + 2 * 10 ** 9, resource.RLIM_INFINITY))
    room = limits._address_space_room()
    assert 1.5 * 10 ** 9 < room <= 2 * 10 ** 9  # the limit less what this process has mapped
    assert limits.available_memory() <= room


@pytest.mark.slow
def test_a_checkpoint_from_another_run_is_not_taken_for_a_repair(trained, tmp_path, cli):
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(trained, run)
    code, _, err = cli("train", "--run-dir", other, *TINY, "--hidden-dims", 16, "--seed", 5)
    assert code == 0, err
    shutil.copy(other / CHECKPOINT, run / CHECKPOINT)
    before = tree_hash(run)
    code, _, err = cli("evaluate", run, "-K", 2, "--subset", 5, "--out", tmp_path / "e.json")
    assert_one_sentence_error(code, err, f"{run / CHECKPOINT} does not belong with this run's metrics.jsonl and "
                                         "config.json")
    code, _, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress")
    assert_one_sentence_error(code, err, "does not belong with this run's")
    assert tree_hash(run) == before


def test_every_built_in_structure_passes_the_door(small_data):
    """The contract checked on structure files holds for every built-in one (the semi-supervised one with labels)."""
    from pyro_vae.catalog import MODEL_NAMES
    from pyro_vae.inference.sites import check_programs
    from pyro_vae.models import MODELS, build_model

    x = small_data.test.images[:20]
    labels = small_data.test.labels[:20]
    for name in MODEL_NAMES:
        if MODELS[name].data_kind != "images":  # the structures over sequences pass it in tests/models/test_sequence_structures.py
            continue
        model = build_model(name, x_dim=784, z_dim=2, hidden_dims=[8])
        batches = [(x, labels)] if model.needs_labels else [(x,)]
        if model.semi_supervised:
            batches.append((x, labels))
        for batch in batches:
            check_programs(model.model, model.guide, batch, name)
