"""The pyro-vae command line: a short run writes its files; every bad input is one sentence and exit 2."""
import json
import shutil

import pytest
import torch

from conftest import TINY, assert_one_sentence_error
from pyro_vae.training import CHECKPOINT, METRICS


@pytest.mark.slow
def test_train_one_short_epoch_then_evaluate_and_sample(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--run-dir", run, *TINY, "--z-dim", 2)  # a 2-D code: its latent map and scatter too
    assert code == 0, err
    for name in (CHECKPOINT, METRICS, "config.json", "evaluation.json", "curves.png", "samples.png",
                 "reconstructions.png", "latent_manifold.png", "latent_space.png"):
        assert (run / name).is_file(), name
    assert f"run:      {run}" in out and "pictures:" in out
    result = json.loads((run / "evaluation.json").read_text())
    assert result["num_samples"] == 4 and result["nll"] > 0 and -result["elbo"] >= result["nll"] - 5

    code, out, _ = cli("evaluate", run, "-K", 3)
    assert code == 0 and (run / "evaluation-test-K3.json").is_file()
    code, out, _ = cli("evaluate", run, "-K", 3, "--subset", 20)
    assert code == 0 and "over 20 images" in out
    assert json.loads((run / "evaluation-test-K3-subset20.json").read_text())["images"] == 20
    code, _, err = cli("evaluate", run, "--subset", 0)
    assert_one_sentence_error(code, err, "--subset must be a positive whole number")
    code, out, _ = cli("sample", run, "--num", 6, "--out", tmp_path / "six.png")
    assert code == 0 and (tmp_path / "six.png").stat().st_size > 0


@pytest.mark.slow
def test_resume_continues_to_more_epochs(cli, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # what train --run-dir RUN *TINY writes
    code, out, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--eval-samples", 2, "--no-progress")
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (run / METRICS).read_text().splitlines()] == [1, 2]


def test_help_explains_every_command(cli):
    for command in ("train", "evaluate", "sample"):
        with pytest.raises(SystemExit) as exit:
            from conftest import run_cli
            run_cli(command, "--help")
        assert exit.value.code == 0
    code, out, _ = cli("--help")
    assert code == 0 and "train" in out and "evaluate" in out


def test_unknown_dataset_or_model_name(cli, tmp_path):
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--dataset", "cifar")
    assert_one_sentence_error(code, err, "unknown data set 'cifar': no such file or folder, and not one of")
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--model", "gan")
    assert_one_sentence_error(code, err, "unknown model 'gan'; choose one of")
    assert not (tmp_path / "run").exists()


def test_mnist_data_dir_without_files_and_without_download(cli, tmp_path):
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--dataset", "mnist", "--data-dir", tmp_path / "empty",
                       "--binarize", "dynamic", "--no-progress")
    assert_one_sentence_error(code, err, "MNIST was not found", "--download")


@pytest.mark.slow
def test_grey_scale_data_for_a_bernoulli_likelihood(cli, tmp_path, mnist_dir):
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--dataset", "mnist", "--data-dir", mnist_dir,
                       "--subset", 100)
    assert_one_sentence_error(code, err, "grey-scale", "--binarize dynamic")
    code, _, err = cli("train", "--run-dir", tmp_path / "run2", "--dataset", "mnist", "--data-dir", mnist_dir,
                       "--binarize", "dynamic", *TINY)
    assert code == 0, err
    # the grey-scale training split is binarized for evaluation too
    code, _, err = cli("evaluate", tmp_path / "run2", "-K", 2, "--split", "train")
    assert code == 0, err


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume_loses_nothing(cli, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # what train --run-dir RUN *TINY writes
    (run / CHECKPOINT).write_bytes(b"not a checkpoint")
    metrics = (run / METRICS).read_text()
    code, _, err = cli("train", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress")
    assert_one_sentence_error(code, err, "not a pyro-vae checkpoint")
    assert (run / CHECKPOINT).read_bytes() == b"not a checkpoint"
    assert (run / METRICS).read_text() == metrics


def test_resume_with_contradicting_options(cli, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # what train --run-dir RUN *TINY writes
    before = (run / CHECKPOINT).read_bytes()
    code, _, err = cli("train", "--run-dir", run, "--resume", "--z-dim", 2, "--epochs", 2, "--no-progress")
    assert_one_sentence_error(code, err, "trained with z_dim=3", "z_dim=2")
    assert (run / CHECKPOINT).read_bytes() == before


def test_existing_run_directory_is_not_overwritten(cli, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)  # what train --run-dir RUN *TINY writes
    before = (run / CHECKPOINT).read_bytes()
    code, _, err = cli("train", "--run-dir", run, *TINY)
    assert_one_sentence_error(code, err, "already exists", "--resume")
    assert (run / CHECKPOINT).read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu(cli, tmp_path):
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--device", "cuda", *TINY)
    assert_one_sentence_error(code, err, "no CUDA GPU is available", "--device cpu")
    assert not (tmp_path / "run").exists()


def test_evaluate_or_sample_a_directory_without_a_run(cli, tmp_path):
    code, _, err = cli("evaluate", tmp_path)
    assert_one_sentence_error(code, err, "no checkpoint")
    code, _, err = cli("sample", tmp_path)
    assert_one_sentence_error(code, err, "no checkpoint")
