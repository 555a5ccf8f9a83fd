"""Exported and pretrained models: a round trip gives the run's numbers, a changed file is one sentence, the shipped
model loads, is small, and says what it measured."""
import json
import shutil

import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.pretrained import PRETRAINED_DIR, available, export_run, load
from pyro_vae.training import load_trained_model


def test_an_exported_run_evaluates_and_samples_like_the_run(cli, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "exported"
    code, stdout, err = cli("export", run, out, "--command-line", "pyro-vae train ...")
    assert code == 0, err
    exported, _, info = load(str(out))
    original, _, _ = load_trained_model(run, which="best")
    for (name, a), (_, b) in zip(original.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name
    results = []
    for source, target in ((run, tmp_path / "a.json"), (out, tmp_path / "b.json")):
        code, stdout, err = cli("evaluate", source, "-K", 5, "--subset", 40, "--out", target)
        assert code == 0, err
        results.append(json.loads(target.read_text()))
    assert results[0]["nll"] == pytest.approx(results[1]["nll"]) and results[0]["elbo"] == pytest.approx(results[1]["elbo"])
    code, stdout, err = cli("sample", out, "--num", 4, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    card = (out / "README.md").read_text()
    reached = max(json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines())
    assert "pyro-vae train ..." in card and f"epoch {info['epoch']} of {reached}." in card
    assert (out / "weights.safetensors").stat().st_mode & 0o777 == 0o644  # readable by whoever it is shared with


def test_a_changed_file_or_a_used_folder_is_one_sentence(cli, tiny_run, tmp_path):
    out = export_run(tiny_run, tmp_path / "exported")
    weights = out / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(PyroVAEError, match="does not match its SHA-256"):
        load(str(out))
    code, stdout, err = cli("export", tiny_run, out)
    assert code == 2 and "not an empty folder" in err
    code, stdout, err = cli("evaluate", "pretrained:no-such-model")
    assert code == 2 and "no pretrained model 'no-such-model'" in err


def test_the_shipped_model_loads_is_small_and_lists_its_figures(cli):
    models = {m["name"]: m for m in available()}
    assert "vae-mnist-10epochs" in models
    entry = models["vae-mnist-10epochs"]
    assert entry["megabytes"] < 10 and entry["test_nll"] == pytest.approx(102.52, abs=0.01)
    model, config, info = load("pretrained:vae-mnist-10epochs")
    assert config.model == "vae" and info["epoch"] == 10 and model.generate(2).shape == (2, 784)
    for folder in PRETRAINED_DIR.iterdir():
        assert sum(p.stat().st_size for p in folder.iterdir()) < 10e6, folder
        model, config, info = load(f"pretrained:{folder.name}")  # checksums first
        assert model.generate(2).shape == (2, 784), folder
    # the reproducibility table's rows, each the figure of its widest evaluation (all test images, K = 5000)
    assert models["iaf-vae-gated-mnist"]["test_nll"] == pytest.approx(86.41, abs=0.01)
    assert models["vae-gated-mnist"]["test_nll"] == pytest.approx(87.59, abs=0.01)
    assert models["iwae50-gated-mnist"]["test_nll"] == pytest.approx(86.67, abs=0.01)
    code, stdout, err = cli("pretrained")
    assert code == 0 and "pretrained:vae-mnist-10epochs" in stdout
