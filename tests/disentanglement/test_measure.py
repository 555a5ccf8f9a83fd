"""`pyro-vae disentanglement` and `beta-sweep` on data with known factors (issue 12)."""
import json
import shutil

import pytest

from conftest import TINY, assert_one_sentence_error

DSPRITES = ["--dataset", "dsprites-procedural", "--image-size", 32, "--subset", 100, "--epochs", 1, "--z-dim", 3,
            "--hidden-dims", 32, "--batch-size", 50, "--eval-samples", 2, "--no-progress"]




def _for_sweep(args):
    """The training options without --eval-samples, which beta-sweep does not take."""
    i = args.index("--eval-samples")
    return args[:i] + args[i + 2:]


@pytest.fixture(scope="module")
def dsprites_run(tmp_path_factory):
    """The run ``train --model beta-tcvae --run-dir RUN *DSPRITES`` writes, less its test evaluation and pictures
    (half of its 6 s; no test here reads them)."""
    from pyro_vae.config import TrainConfig
    from pyro_vae.training import Trainer

    run = tmp_path_factory.mktemp("dsprites") / "run"
    Trainer(TrainConfig(model="beta-tcvae", dataset="dsprites-procedural", image_size=32, subset=100, epochs=1, z_dim=3,
                        hidden_dims=[32], batch_size=50), run, progress=False, log=lambda line: None).fit()
    return run


@pytest.mark.slow
def test_the_metrics_of_a_run_go_to_json_with_a_heat_map_and_traversals(cli, dsprites_run):
    # 40 samples, not 80: the exact trees' DCI, most of the command's time, took 4.8 s of CPU on 80 and 3.2 on 40
    code, out, err = cli("disentanglement", dsprites_run, "--num-samples", 40, "--score-points", 20)
    assert code == 0, err
    result = json.loads((dsprites_run / "disentanglement.json").read_text())
    for key in ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_test", "sap", "modularity",
                "explicitness_test", "beta_vae_eval_accuracy", "factor_vae_eval_accuracy"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["sampler_scores"] and result["num_samples"] == 40 and result["sampler_sizes"]["num_train"] == 20
    assert result["factor_names"] == ["shape", "scale", "orientation", "position_x", "position_y"]
    matrix = result["mutual_information"]
    assert len(matrix) == 3 and all(len(row) == 5 and all(0 <= v <= 1 + 1e-9 for v in row) for row in matrix)
    assert (dsprites_run / "mutual_information.png").is_file() and (dsprites_run / "traversals.png").is_file()
    assert "mig" in out
    assert result["dci_trees"] == "gbt"
    # DCI from the binned trees: the other metrics stay as they were
    code, _, err = cli("disentanglement", dsprites_run, "--num-samples", 40, "--score-points", 20,
                       "--dci-trees", "histogram", "--out", dsprites_run / "histogram.json")
    assert code == 0, err
    binned = json.loads((dsprites_run / "histogram.json").read_text())
    assert binned["dci_trees"] == "histogram"
    def others(metrics):
        return {key: value for key, value in metrics.items() if not key.startswith("dci") and key != "seconds"}

    assert others(binned) == others(result)
    assert 0.0 <= binned["dci_disentanglement"] <= 1.0


@pytest.mark.slow
def test_metrics_of_a_run_without_factors_are_one_sentence(cli, tmp_path, tiny_run):
    run = tmp_path / "mnist"
    shutil.copytree(tiny_run, run)  # what train --run-dir RUN *TINY writes: a run on binarized MNIST
    before = sorted(p.name for p in run.iterdir())
    code, _, err = cli("disentanglement", run)
    assert_one_sentence_error(code, err, "was trained on binarized-mnist, which has no ground-truth factors")
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("args, message", [
    (["--num-samples", 0], "--num-samples must be a positive whole number"),
    (["--score-points", -3], "--score-points must be a positive whole number"),
    (["--num-samples", 5000], "--num-samples 5,000 asks for more images than the 100 training images the run"),
    (["--score-points", 1], "--score-points must be at least 10, got 1"),
    (["--num-samples", 29], "--num-samples must be at least 30, got 29: modularity bins the two thirds"),
])
def test_bad_sizes_are_one_sentence(cli, dsprites_run, args, message):
    code, _, err = cli("disentanglement", dsprites_run, *args, "--out", dsprites_run / "other.json")
    assert_one_sentence_error(code, err, message)
    assert not (dsprites_run / "other.json").exists()


@pytest.mark.slow
def test_a_beta_tcvae_sweep_over_seeds_reports_every_metric_and_its_spread(cli, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = cli("beta-sweep", "--model", "beta-tcvae", "--betas", "6", "--seeds", "0,1",
                            "--score-points", 20, "--dci-trees", "histogram", "--out-dir", out, *_for_sweep(DSPRITES))
    assert code == 0, err
    rows = json.loads((out / "results.json").read_text())
    assert [(row["beta"], row["seed"]) for row in rows] == [(6.0, 0), (6.0, 1)]
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary:
        group = [row["mig"] for row in rows if row["beta"] == entry["beta"]]
        assert entry["seeds"] == 2 and entry["mig"]["mean"] == pytest.approx(sum(group) / 2)
        assert entry["mig"]["std"] == pytest.approx(abs(group[0] - group[1]) / 2 ** 0.5)
    assert all(row["dci_trees"] == "histogram" for row in rows) and summary[0]["dci_trees"] == "histogram"
    assert (out / "metrics_against_beta.png").is_file() and (out / "beta-6-seed-1" / "checkpoint.pt").is_file()
    assert "MIG" in stdout and "FactorVAE" in stdout


@pytest.mark.slow
def test_a_factor_vae_sweep_trains_one_model_per_gamma(cli, tmp_path):
    out = tmp_path / "sweep"
    code, stdout, err = cli("beta-sweep", "--model", "factor-vae", "--betas", "10,20", "--model-option",
                            "discriminator_dims=[16]", "--out-dir", out, *_for_sweep(TINY))
    assert code == 0, err
    rows = json.loads((out / "results.json").read_text())
    assert [row["gamma"] for row in rows] == [10.0, 20.0] and all("beta" not in row for row in rows)
    for gamma in (10, 20):
        config = json.loads((out / f"gamma-{gamma}" / "config.json").read_text())
        assert config["model_options"] == {"discriminator_dims": [16], "gamma": float(gamma)}
        assert (out / f"traversals-gamma-{gamma}.png").is_file()
    assert [entry["gamma"] for entry in json.loads((out / "summary.json").read_text())] == [10.0, 20.0]
    assert any(line.split()[:2] == ["gamma", "seed"] for line in stdout.splitlines())  # the table's header
    assert "traversals-gamma-*.png" in stdout and (out / "rate_distortion.png").is_file()


@pytest.mark.parametrize("model, expected", [("factor-vae", [10.0, 20.0, 40.0]),
                                             ("beta-tcvae", [0.5, 1.0, 2.0, 4.0, 8.0])])
def test_a_sweep_without_betas_takes_the_model_s_usual_weights(cli, tmp_path, monkeypatch, model, expected):
    import pyro_vae.sweeps

    asked = {}

    def fake_sweep(betas, base, out_dir, **kwargs):
        asked["betas"] = betas
        weight = "gamma" if model == "factor-vae" else "beta"
        return [{weight: betas[0], "seed": 0, "rate": 1.0, "distortion": 2.0, "elbo": -3.0}]

    monkeypatch.setattr(pyro_vae.sweeps, "beta_sweep", fake_sweep)
    code, _, err = cli("beta-sweep", "--model", model, "--out-dir", tmp_path / "s", *_for_sweep(TINY))
    assert code == 0, err
    assert asked["betas"] == expected


def test_summarizing_rows_that_are_not_a_sweep_s_is_one_sentence():
    from pyro_vae.errors import PyroVAEError
    from pyro_vae.sweeps import summarize

    with pytest.raises(PyroVAEError, match="no rows to summarize"):
        summarize([])
    with pytest.raises(PyroVAEError, match="neither beta nor gamma"):
        summarize([{"seed": 0, "rate": 1.0}])


def test_a_sweep_of_another_structure_is_one_sentence(cli, tmp_path):
    code, _, err = cli("beta-sweep", "--model", "vae", "--out-dir", tmp_path / "s", *_for_sweep(TINY))
    assert_one_sentence_error(code, err, "beta-sweep trains --model beta-vae, beta-tcvae, factor-vae, not vae")


def test_metrics_are_plotted_against_gamma_for_factor_vae_rows(tmp_path):
    from pyro_vae.plots.disentanglement import plot_metrics_against_beta

    rows = [{"gamma": gamma, "seed": seed, "mig": 0.1 * seed + gamma / 100} for gamma in (10.0, 40.0) for seed in (0, 1)]
    path = plot_metrics_against_beta(rows, tmp_path / "metrics_against_gamma.png", weight="gamma")
    assert path.is_file() and path.stat().st_size > 1000


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_to_the_rows_of_an_uninterrupted_one(cli, tmp_path, monkeypatch):
    """Ctrl-C in the second run's second epoch: the sentence names the command, and --resume reads the finished
    run, continues the interrupted one from its checkpoint, and gives the rows of a sweep never interrupted."""
    from pyro_vae.training import Trainer

    options = ["--betas", "1,4", *_for_sweep(TINY), "--epochs", 2]
    whole = tmp_path / "whole"
    code, _, err = cli("beta-sweep", "--out-dir", whole, *options)
    assert code == 0, err
    real = Trainer.run_steps

    def interrupted(self, batches, **kwargs):
        if self.config.model_options["beta"] == 4 and self.epoch == 1:
            raise KeyboardInterrupt
        return real(self, batches, **kwargs)

    monkeypatch.setattr(Trainer, "run_steps", interrupted)
    out = tmp_path / "sweep"
    code, _, err = cli("beta-sweep", "--out-dir", out, *options)
    assert code == 130
    assert err.strip() == (f"pyro-vae beta-sweep: interrupted during run 2 of 2 of the sweep (epoch 1's checkpoint is "
                           f"kept in {out / 'beta-4' / 'checkpoint.pt'}); the 1 finished run(s) are kept in {out}; "
                           f"continue the sweep with: pyro-vae beta-sweep --out-dir {out} --resume")
    assert not (out / "results.json").exists()
    monkeypatch.setattr(Trainer, "run_steps", real)
    code, _, err = cli("beta-sweep", "--out-dir", out, "--betas", "1", "--resume")
    assert_one_sentence_error(code, err, "--resume continues the sweep as it was started (its sweep.json); drop --betas")
    code, stdout, err = cli("beta-sweep", "--out-dir", out, "--resume")
    assert code == 0, err
    assert f"measured before, read from {out / 'beta-1' / 'sweep_row.json'}" in stdout
    drop = ("seconds",)  # wall-clock time: the only thing an interruption may change
    rows = [{k: v for k, v in row.items() if k not in drop} for row in json.loads((out / "results.json").read_text())]
    expected = [{k: v for k, v in row.items() if k not in drop}
                for row in json.loads((whole / "results.json").read_text())]
    assert rows == expected


def test_resuming_what_is_not_a_sweep_is_one_sentence(cli, tmp_path):
    code, _, err = cli("beta-sweep", "--out-dir", tmp_path / "none", "--resume")
    assert_one_sentence_error(code, err, f"{tmp_path / 'none'} holds no sweep to resume (no sweep.json)",
                              "(the folder does not exist)")
    code, _, err = cli("beta-sweep", "--resume")
    assert_one_sentence_error(code, err, "name its folder with --out-dir DIR")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "sweep.json").write_text("[1, 2]")
    code, _, err = cli("beta-sweep", "--out-dir", tmp_path / "other", "--resume")
    assert_one_sentence_error(code, err, "is not a sweep's record")
    (tmp_path / "other" / "sweep.json").write_bytes(b"\xff\xfe not text")
    code, _, err = cli("beta-sweep", "--out-dir", tmp_path / "other", "--resume")
    assert_one_sentence_error(code, err, "sweep.json is not valid JSON")


def test_score_points_beyond_memory_are_refused_before_a_sweep_trains(cli, tmp_path):
    code, _, err = cli("beta-sweep", "--out-dir", tmp_path / "sweep", "--score-points", 10 ** 12,
                       *_for_sweep(DSPRITES))
    assert_one_sentence_error(code, err, "the BetaVAE and FactorVAE scores with 1,000,000,000,000 training points "
                                         "would need about", "use fewer --score-points")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow  # renders and encodes 3,456 images
def test_the_sampler_scores_count_every_image_they_encode(dsprites_run, monkeypatch):
    """The bar and the time said before long work count what the scores really render: two batches of 64 per
    BetaVAE point, one per FactorVAE point, and FactorVAE's variance estimate."""
    import pyro_vae.disentanglement.measure as measure_module
    from pyro_vae.training import load_run_data, load_trained_model

    counted = []
    real = measure_module.SampleProgress.__call__
    monkeypatch.setattr(measure_module.SampleProgress, "__call__",
                        lambda self, n: (counted.append((self.total, n)), real(self, n))[1])
    model, config, _ = load_trained_model(dsprites_run, "cpu")
    sizes = measure_module.sampler_sizes(12)
    result = measure_module.measure(model, load_run_data(config), num_samples=40, sizes=sizes,
                                    dci_trees="histogram", show_progress=False)
    assert measure_module.represented_images(sizes) == 3 * 64 * (12 + 6) + 12
    assert {total for total, _ in counted} == {measure_module.represented_images(sizes)}
    # FactorVAE's votes are skipped when every code dimension collapsed (a one-epoch model may)
    votes = 64 * (12 + 6) if result["factor_vae_num_active_dims"] else 0
    assert sum(n for _, n in counted) == 2 * 64 * (12 + 6) + 12 + votes
