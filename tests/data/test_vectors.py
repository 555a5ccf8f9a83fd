"""Vectors and tables (issue 27): (N, D) arrays from a .npz or .npy, read as stored; the likelihoods that take them
(Gaussian on the real line, categorical over whole numbers), trained and evaluated through the command line; one
sentence for each mistake before any training."""
import itertools
import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_one_sentence_error
from pyro_vae.data import load_dataset
from pyro_vae.data.files import load_image_data
from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.likelihoods import likelihood_for_data, pixel_likelihood


def _table(n=40, features=5, seed=0):
    return np.random.default_rng(seed).normal(3.0, 10.0, size=(n, features)).astype(np.float32)


def test_arrays_of_rank_two_are_vectors_read_as_stored(tmp_path):
    table = _table()
    np.savez(tmp_path / "t.npz", train=table[:30], train_labels=np.arange(30) % 3, test=table[30:35],
             valid=table[35:])
    data = load_dataset(str(tmp_path / "t.npz"))
    assert (data.kind, data.image_shape) == ("vectors", (5,))
    assert torch.equal(data.train.images, torch.from_numpy(table[:30]))  # negative and large values kept
    assert torch.equal(data.train.labels, torch.arange(30) % 3) and data.valid.labels is None
    assert not data.eight_bit and not data.is_binary
    assert data.description == ("t.npz: 30 / 5 / 5 train / valid / test vectors of 5 features (read as vectors, "
                                "(N, D): arrays of rank 2), labelled, its own valid and test splits")
    np.save(tmp_path / "t.npy", table.astype(np.int64))
    from_npy = load_image_data(tmp_path / "t.npy", seed=1)
    assert from_npy.kind == "vectors" and from_npy.image_shape == (5,) and len(from_npy.train.images) == 32


def test_a_layout_entry_reads_a_rank_two_array_as_nothing_else(tmp_path):
    np.savez(tmp_path / "t.npz", train=_table(), layout="vectors")
    assert "its layout entry says vectors" in load_image_data(tmp_path / "t.npz").description
    np.savez(tmp_path / "i.npz", train=_table(), layout="images")
    with pytest.raises(InvalidDataError, match="an array of 2 dimensions"):
        load_image_data(tmp_path / "i.npz")


@pytest.mark.parametrize("arrays, message", [
    ({"train": np.where(_table() > 20, np.nan, _table())}, r"t.npz \[train\]: the values hold NaN or Inf"),
    ({"train": np.where(_table() > 20, np.inf, _table())}, "NaN or Inf"),
    ({"train": _table(), "valid": _table(features=4), "test": _table()}, r"different numbers of features \[4, 5\]"),
    ({"train": _table(), "train_labels": np.arange(39)}, r"\(39,\) labels for 40 images"),
    ({"train": _table().astype(str)}, "values of type <U"),
])
def test_mistakes_in_tables_are_one_sentence(tmp_path, arrays, message):
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(InvalidDataError, match=message):
        load_image_data(tmp_path / "t.npz")


@pytest.mark.parametrize("extra, message", [
    ([], "t.npz vectors hold values other than 0 and 1, and the likelihood is Bernoulli; choose --likelihood "
         "gaussian"),
    (["--binarize", "dynamic"], "--binarize draws each value from Bernoulli(value) and needs values in [0, 1]"),
    (["--image-size", "8"], "--image-size resizes images, and t.npz holds vectors (arrays of rank 2); drop it"),
])
def test_table_mistakes_stop_the_command_line_with_one_sentence(tmp_path, cli, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "t.npz", train=_table())
    code, _, err = cli("train", "--dataset", "t.npz", "--run-dir", tmp_path / "run", "--epochs", 1, *extra)
    assert_one_sentence_error(code, err, message)
    assert not (tmp_path / "run").exists()


def test_nan_in_a_table_stops_the_command_line_with_one_sentence(tmp_path, cli):
    table = _table()
    table[3, 2] = np.nan
    np.savez(tmp_path / "nan.npz", train=table)
    code, _, err = cli("train", "--dataset", tmp_path / "nan.npz", "--likelihood", "gaussian", "--run-dir",
                       tmp_path / "run")
    assert_one_sentence_error(code, err, "nan.npz [train]: the values hold NaN or Inf")


def _categorical_outputs() -> torch.Tensor:
    """Two features, three categories, category-major: feature 0 has probabilities (1, 2, 3) / 6, feature 1
    (4, 1, 1) / 6."""
    logits = torch.tensor([[0.0, math.log(4)], [math.log(2), 0.0], [math.log(3), 0.0]], dtype=torch.float64)
    return logits.reshape(1, -1) + 7.0  # a shift the softmax ignores


def test_the_categorical_log_density_by_hand():
    """x = (2, 0): log(3/6) + log(4/6) = -log 3; the nine tables of two features sum to one; the mean of feature 0
    is (0 * 1 + 1 * 2 + 2 * 3) / 6 = 4/3."""
    likelihood = pixel_likelihood("categorical-3", 2)
    assert (likelihood.params_per_pixel, likelihood.spec, likelihood.discrete) == (3, "categorical-3", True)
    p = likelihood(_categorical_outputs())
    assert p.log_prob(torch.tensor([[2.0, 0.0]], dtype=torch.float64)).item() == pytest.approx(-math.log(3), abs=1e-12)
    tables = torch.tensor(list(itertools.product([0.0, 1.0, 2.0], repeat=2)), dtype=torch.float64)
    assert p.log_prob(tables).exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    assert likelihood.mean(_categorical_outputs())[0].tolist() == pytest.approx([4 / 3, 1 / 2])
    draws = p.sample((4000,))
    assert set(draws.unique().tolist()) == {0.0, 1.0, 2.0}
    assert (draws[..., 0] == 2).double().mean().item() == pytest.approx(0.5, abs=0.04)


def test_the_categorical_of_8_bit_pixels_is_a_softmax_over_their_256_values():
    likelihood = pixel_likelihood("categorical", 1)
    assert (likelihood.params_per_pixel, likelihood.spec) == (256, "categorical")
    outputs = torch.zeros(1, 256)
    outputs[0, 77] = math.log(256 - 1) + math.log(3)  # category 77 three times as likely as all 255 others together
    assert likelihood(outputs).log_prob(torch.tensor([[77 / 255]])).item() == pytest.approx(math.log(0.75), abs=1e-5)
    assert "not on that grid" in likelihood.support_error(torch.tensor([[0.3]]))


def test_the_categorical_counts_its_categories_from_the_data_and_refuses_what_it_cannot_take():
    table = [torch.tensor([[0.0, 3.0], [1.0, 2.0]]), torch.tensor([[5.0, 0.0]])]
    assert likelihood_for_data("categorical", "vectors", table) == "categorical-6"
    assert likelihood_for_data("categorical", "sequences", [torch.zeros(2, 4)]) == "categorical-2"
    assert likelihood_for_data("categorical", "images", table) == "categorical"
    assert likelihood_for_data("categorical-9", "vectors", table) == "categorical-9"  # a resumed run keeps its own
    assert likelihood_for_data("gaussian", "vectors", table) == "gaussian"
    with pytest.raises(PyroVAEError, match="takes whole numbers 0, 1, 2, ... as categories, and the data hold 0.5"):
        likelihood_for_data("categorical", "vectors", [torch.tensor([[0.5, 1.0]])])
    assert "takes the whole numbers 0 to 5, and the data hold 6" in \
        pixel_likelihood("categorical-6", 2).support_error(torch.tensor([[6.0, 0.0]]))
    assert pixel_likelihood("gaussian", 2).support_error(torch.tensor([[-40.0, 1e6]])) is None  # the real line
    with pytest.raises(PyroVAEError, match="unknown likelihood 'gaussian-3'"):
        pixel_likelihood("gaussian-3", 2)


@pytest.mark.slow
@pytest.mark.parametrize("likelihood, make, recorded", [
    ("gaussian", lambda rng: rng.normal(3.0, 10.0, size=(120, 4)).astype(np.float32), "gaussian"),
    ("categorical", lambda rng: rng.integers(0, 5, size=(120, 4)), "categorical-5"),
])
def test_a_tiny_table_trains_and_evaluates_through_the_command_line(tmp_path, cli, likelihood, make, recorded):
    np.savez(tmp_path / "t.npz", train=make(np.random.default_rng(0)))
    run = tmp_path / "run"
    code, out, err = cli("train", "--model", "vae", "--dataset", tmp_path / "t.npz", "--likelihood", likelihood,
                         "--epochs", 1, "--hidden-dims", 8, "--z-dim", 3, "--batch-size", 48, "--eval-samples", 4,
                         "--no-progress", "--no-jit", "--run-dir", run)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["likelihood"] == recorded
    code, out, err = cli("evaluate", run, "--num-samples", 8)
    assert code == 0, err
    evaluation = json.loads(next(run.glob("evaluation-test-K8*.json")).read_text())
    assert math.isfinite(evaluation["nll"]) and math.isfinite(evaluation["elbo"])
    if likelihood == "categorical":  # a distribution over the tables, so its NLL is positive
        assert 0 < evaluation["nll"] < 3 * 4 * math.log(5)
