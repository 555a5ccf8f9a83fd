"""The GPU path: train, resume, evaluate, sample and compare-estimators on --device cuda (issue 13).

Skipped where torch sees no CUDA GPU (CI, the 2-core sandbox); run on a GPU machine with
``python -m pytest -q tests/training/test_cuda.py``.
"""
import json

import pytest
import torch

from conftest import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_train_resume_evaluate_and_sample_on_the_gpu(cli, tmp_path):
    run = tmp_path / "run"
    code, out, err = cli("train", "--device", "cuda", "--run-dir", run, *TINY)
    assert code == 0, err
    whole = tmp_path / "whole"
    assert cli("train", "--device", "cuda", "--run-dir", whole, *TINY[:2], "--epochs", 2, *TINY[4:])[0] == 0
    code, _, err = cli("train", "--device", "cuda", "--run-dir", run, "--resume", "--epochs", 2, "--no-progress")
    assert code == 0, err
    # resume on the GPU equals an uninterrupted run on the GPU (the CUDA random state is in the checkpoint)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    uninterrupted = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid_elbo"] for r in rows] == [r["valid_elbo"] for r in uninterrupted]
    code, out, err = cli("evaluate", run, "--device", "cuda", "-K", 10)
    assert code == 0 and "NLL" in out, err
    code, out, err = cli("sample", run, "--device", "cuda")
    assert code == 0 and (run / "generated.png").is_file(), err


def test_a_gpu_run_evaluates_on_the_cpu_and_the_reverse(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--device", "cuda", "--run-dir", run, *TINY)[0] == 0
    code, _, err = cli("evaluate", run, "--device", "cpu", "-K", 5)
    assert code == 0, err


@pytest.mark.parametrize("model, extra", [("gmvae", []), ("vae", ["--likelihood", "discretized-logistic", "--net",
                                                                   "conv", "--dataset", "mnist-test-release"])])
def test_enumeration_and_conv_likelihoods_train_on_the_gpu(cli, tmp_path, model, extra):
    code, _, err = cli("train", "--device", "cuda", "--model", model, "--run-dir", tmp_path / "run", *extra, *TINY)
    assert code == 0, err



def test_compare_estimators_on_the_gpu(cli, tmp_path):
    code, _, err = cli("compare-estimators", "--device", "cuda", "--repeats", 5, "--train-steps", 5, "--subset", 200,
                       "--estimators", "reparam,score", "--out", tmp_path / "out")
    assert code == 0, err
