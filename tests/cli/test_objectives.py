"""The multi-sample objectives through the command line: train --elbo NAME, compare-estimators with them, SNR
against K, and one sentence for every objective asked of a structure it cannot serve."""
import csv
import json
import math

import pytest
import torch

from pyro_vae.config import TrainConfig
from pyro_vae.training import Trainer

from pyro_vae.studies.snr import fit_slope, t_quantile_95
from tests.conftest import TINY


@pytest.mark.parametrize("model, options", [
    ("vae", {"elbo": "stl", "num_particles": 3}),
    ("vae", {"elbo": "dreg", "num_particles": 3}),
    ("vae", {"elbo": "miwae", "num_particles": 2, "outer_particles": 2}),
    ("vae", {"elbo": "piwae", "num_particles": 2, "outer_particles": 2}),
    ("vae", {"elbo": "ciwae", "num_particles": 3, "ciwae_beta": 0.3}),
    ("vae", {"elbo": "renyi", "num_particles": 3, "alpha": 0.5}),
    ("vae", {"elbo": "tmc", "num_particles": 3}),
    ("gmvae", {"elbo": "rws", "num_particles": 3}),
    ("bernoulli-mixture", {"elbo": "vimco", "num_particles": 3}),
])
def test_each_objective_trains_its_structure(small_data, tmp_path, model, options):
    config = TrainConfig(model=model, subset=300, epochs=1, hidden_dims=[32], z_dim=2, batch_size=100, **options)
    trainer = Trainer(config, tmp_path / "run", progress=False, log=lambda _: None, dataset=small_data)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    metrics = trainer.fit()
    assert math.isfinite(metrics[-1]["train_loss"]) and math.isfinite(metrics[-1]["valid_elbo"])
    moved = [name for name, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    encoder = [name for name in moved if "encoder" in name or "guide" in name or "classifier" in name]
    assert moved and encoder, moved  # the model's and the guide's parameters both learn


@pytest.mark.slow
def test_the_command_line_records_an_objectives_options(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--run-dir", run, *TINY, "--elbo", "miwae", "--num-particles", 2,
                         "--outer-particles", 3)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert (config["elbo"], config["num_particles"], config["outer_particles"]) == ("miwae", 2, 3)


@pytest.mark.parametrize("argv, message", [
    (["--model", "bernoulli-mixture", "--elbo", "dreg", "--num-particles", 3], "is discrete, without such a path"),
    (["--model", "bernoulli-mixture", "--elbo", "stl"], "is discrete, without such a path"),
    (["--elbo", "vimco", "--num-particles", 3], "is continuous; use --elbo iwae or dreg"),
    (["--model", "bernoulli-mixture", "--elbo", "vimco", "--num-particles", 1], "needs --num-particles 2 or more"),
    (["--model", "hierarchical-vae", "--elbo", "dreg", "--num-particles", 2], "takes its parameters from the draw"),
    (["--model", "beta-tcvae", "--elbo", "dreg", "--num-particles", 2], "has no place for the training penalty"),
    (["--model", "gmvae", "--elbo", "renyi", "--num-particles", 2], "cannot sum out"),
    (["--elbo", "renyi", "--alpha", -1], "--alpha of the Renyi bound must be a number >= 0"),
    (["--elbo", "renyi", "--alpha", 1], "is the ELBO itself"),
    (["--elbo", "trace", "--alpha", 0.5], "--alpha is a parameter of --elbo renyi"),
    (["--elbo", "miwae", "--outer-particles", 0], "--outer-particles M"),
    (["--elbo", "ciwae", "--ciwae-beta", 2], "lies in [0, 1]"),
    (["--elbo", "dreg", "--num-particles", 0], "num-particles must be a positive whole number"),
    (["--elbo", "stl", "--jit"], "has no JIT-compiled version"),
    (["--elbo", "dreg", "--kl-warmup", 2], "--kl-warmup weights the KL term"),
])
def test_an_objective_that_cannot_serve_is_one_sentence_and_exit_2(cli, tmp_path, argv, message):
    run = tmp_path / "run"
    code, out, err = cli("train", "--run-dir", run, *TINY, *argv)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.slow
def test_compare_estimators_lists_an_objective_that_does_not_apply_with_its_reason(cli, tmp_path):
    code, out, err = cli("compare-estimators", "--train-epochs", 1, "--subset", 200, "--hidden-dims", 16, "--z-dim", 2,
                         "--repeats", 3, "--batch-size", 10, "--train-steps", 2, "--eval-every", 1,
                         "--estimators", "dreg,vimco,stl", "--out", tmp_path / "out", "--no-progress")
    assert code == 0, err
    rows = {row["estimator"]: row for row in csv.DictReader(open(tmp_path / "out" / "gradient_statistics.csv"))}
    assert "is continuous" in rows["vimco"]["not_applicable"] and float(rows["dreg"]["guide_snr"]) > 0
    assert not rows["stl"]["not_applicable"]


@pytest.mark.slow
def test_snr_against_k_writes_the_table_the_slopes_and_the_plot(cli, tmp_path):
    out = tmp_path / "snr"
    code, stdout, err = cli("compare-estimators", "--train-epochs", 0, "--subset", 200, "--hidden-dims", 16, "--z-dim",
                            2, "--repeats", 4, "--batch-size", 5, "--num-particles", "1,4,16",
                            "--estimators", "iwae,dreg", "--out", out, "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "snr.csv")))
    assert [(r["estimator"], int(r["num_particles"])) for r in rows] == [
        ("iwae", 1), ("iwae", 4), ("iwae", 16), ("dreg", 1), ("dreg", 4), ("dreg", 16)]
    slopes = list(csv.DictReader(open(out / "snr_slopes.csv")))
    assert {(s["estimator"], s["group"]) for s in slopes} == {(e, g) for e in ("iwae", "dreg") for g in ("guide", "model")}
    assert (out / "snr.png").stat().st_size > 10_000 and "slope of log SNR" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--num-particles", "1,10", "--estimators", "score"], "draws one"),
    (["--num-particles", "1,10", "--train-steps", 5], "--train-steps would change nothing"),
    (["--num-particles", "0,10"], "positive whole numbers"),
])
def test_snr_mistakes_are_one_sentence(cli, tmp_path, argv, message):
    code, out, err = cli("compare-estimators", "--train-epochs", 0, "--subset", 200, "--out", tmp_path / "o", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_snr_toy_writes_the_table_the_slopes_and_the_plot(cli, tmp_path):
    out = tmp_path / "toy"
    code, stdout, err = cli("snr-toy", "--dim", 2, "--num-data", 3, "--repeats", 5, "--num-particles", "1,3,10,30",
                            "--estimators", "iwae,dreg", "--out", out, "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "snr.csv")))
    assert [(r["estimator"], int(r["num_particles"])) for r in rows] == [
        (e, k) for e in ("iwae", "dreg") for k in (1, 3, 10, 30)]
    slopes = {(s["estimator"], s["group"]): s for s in csv.DictReader(open(out / "snr_slopes.csv"))}
    assert set(slopes) == {(e, g) for e in ("iwae", "dreg") for g in ("guide", "model")}
    assert all(math.isfinite(float(s["tail_slope"])) for s in slopes.values())  # four K: the large-K fit too
    settings = json.loads((out / "snr.json").read_text())["settings"]
    assert settings["dim"] == 2 and settings["num_data"] == 3
    assert (out / "snr.png").stat().st_size > 10_000 and "largest 4 K" in stdout


@pytest.mark.parametrize("argv, message", [
    (["--estimators", "score"], "draws one"),
    (["--repeats", 1], "--repeats must be at least 2"),
    (["--perturbation", "-0.5"], "--perturbation must be a finite number >= 0"),
    (["--dim", 0], "--dim"),
    (["--num-particles", "10000000", "--num-data", 100000], "use fewer draws"),
    (["--dim", 200000], "a smaller --dim"),
])
def test_snr_toy_mistakes_are_one_sentence(cli, tmp_path, argv, message):
    code, out, err = cli("snr-toy", "--out", tmp_path / "o", *argv)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_fit_slope_recovers_a_power_law_and_its_interval_covers_noise():
    ks = [1, 3, 10, 30, 100]
    exact = fit_slope(ks, [2.0 * k ** -0.5 for k in ks])
    assert exact["slope"] == pytest.approx(-0.5) and exact["slope_se"] == pytest.approx(0.0, abs=1e-9)
    noisy = fit_slope(ks, [2.0 * k ** 0.5 * f for k, f in zip(ks, (1.1, 0.9, 1.05, 0.95, 1.0))])
    assert noisy["slope_low"] < 0.5 < noisy["slope_high"] and noisy["slope_se"] > 0
    assert t_quantile_95(3) == pytest.approx(3.182) and t_quantile_95(100) == 1.96
    assert math.isnan(fit_slope([1, 10], [1.0, 2.0])["slope_se"])
