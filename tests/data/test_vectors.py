"""Vectors and tables (issue 27): (N, D) arrays from a .npz or .npy, read as stored, and one sentence for each
mistake before any training."""
import numpy as np
import pytest
import torch

from conftest import assert_one_sentence_error
from pyro_vae.data import load_dataset
from pyro_vae.data.files import load_image_data
from pyro_vae.errors import InvalidDataError


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
