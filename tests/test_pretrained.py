"""Exported and pretrained models: a round trip gives the run's numbers, a changed file is one sentence, the shipped
model loads, is small, and says what it measured."""
import json
import shutil
import sys

import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.pretrained import PRETRAINED_DIR, available, export_run, load
from pyro_vae.training import load_trained_model
from conftest import assert_one_sentence_error


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
    assert models["vampprior-gated-mnist"]["test_nll"] == pytest.approx(85.28, abs=0.01)
    code, stdout, err = cli("pretrained")
    assert code == 0 and "pretrained:vae-mnist-10epochs" in stdout


def _hub_cache(root, repo, folder):
    """huggingface_hub's cache layout holding ``folder`` as the main revision of ``repo``: what a download leaves."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, cached / "snapshots" / commit)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    return cached / "snapshots" / commit


def test_a_model_on_the_hub_is_read_through_huggingface_hubs_own_cache_offline(cli, tiny_run, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")  # the dev extra installs it
    exported = export_run(tiny_run, tmp_path / "exported")
    snapshot = _hub_cache(tmp_path / "hub", "someone/tiny-vae", exported)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets: no request is made
    model, _, info = load("hf:someone/tiny-vae")
    assert info["folder"] == str(snapshot)
    for (name, a), (_, b) in zip(load(str(exported))[0].state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    code, stdout, err = cli("evaluate", "hf:someone/tiny-vae@main", "-K", 3, "--subset", 20,
                            "--out", tmp_path / "e.json")
    assert code == 0, err
    code, stdout, err = cli("evaluate", "hf:someone/not-cached", "-K", 3)
    assert_one_sentence_error(code, err, "could not fetch hf:someone/not-cached from the Hugging Face Hub")


class FakeHub:
    """huggingface_hub's two calls that export and load make, against a folder standing for the Hub."""

    def __init__(self, root, fail=False):
        self.root, self.fail, self.calls = root, fail, []
        hub = self

        class HfApi:
            def create_repo(self, repo_id, **kwargs):
                hub.calls.append(("create_repo", repo_id, kwargs))

            def upload_folder(self, repo_id, folder_path, **kwargs):
                if hub.fail:
                    raise ConnectionError("Max retries exceeded with url: /api/models")
                hub.calls.append(("upload_folder", repo_id, folder_path))
                shutil.copytree(folder_path, hub.root / repo_id)

        self.HfApi = HfApi

    def snapshot_download(self, repo_id, revision=None):
        if not (self.root / repo_id).is_dir():
            raise FileNotFoundError(f"404 Client Error: Repository Not Found for url: /api/models/{repo_id}")
        return str(self.root / repo_id)


def test_export_pushes_to_the_hub_and_hf_names_read_it_back(cli, tiny_run, tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "the-hub")
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    code, stdout, err = cli("export", tiny_run, tmp_path / "out", "--push-to-hub", "me/tiny-vae", "--private")
    assert code == 0, err
    assert hub.calls == [("create_repo", "me/tiny-vae", {"repo_type": "model", "private": True, "exist_ok": True}),
                         ("upload_folder", "me/tiny-vae", str(tmp_path / "out"))]
    assert "hf:me/tiny-vae" in stdout
    code, stdout, err = cli("sample", "hf:me/tiny-vae", "--num", 4, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err
    code, stdout, err = cli("evaluate", "hf:me/other", "-K", 3)
    assert_one_sentence_error(code, err, "could not fetch hf:me/other", "Repository Not Found")


def test_a_failed_upload_keeps_the_export_and_bad_hub_names_are_refused_before_any_work(cli, tiny_run, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", FakeHub(tmp_path / "the-hub", fail=True))
    code, stdout, err = cli("export", tiny_run, tmp_path / "out", "--push-to-hub", "me/tiny-vae")
    assert_one_sentence_error(code, err, "could not upload", "Max retries exceeded", "the folder is kept")
    load(str(tmp_path / "out"))  # whole, its checksums right
    code, stdout, err = cli("export", tiny_run, tmp_path / "out2", "--push-to-hub", "no-owner")
    assert_one_sentence_error(code, err, "--push-to-hub takes a Hugging Face Hub repository as OWNER/NAME")
    code, stdout, err = cli("evaluate", "hf:../../etc", "-K", 3)
    assert_one_sentence_error(code, err, "takes a Hugging Face Hub repository as OWNER/NAME")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    code, stdout, err = cli("export", tiny_run, tmp_path / "out3", "--push-to-hub", "me/tiny-vae")
    assert_one_sentence_error(code, err, "huggingface_hub package, which is not installed", "pip install")
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()
