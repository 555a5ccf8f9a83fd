"""Sequence data (issue 27): the procedural hmm-sequences and the exact likelihood of their source, checked against
enumeration; sequences from a .npz with lengths, masks and one sentence for each mistake."""
import itertools
import os
import pickle
import math
import time

import numpy as np
import pytest
import torch

from conftest import assert_one_sentence_error
from pyro_vae.data import Dataset, Split, check_dataset, load_dataset
from pyro_vae.data.files import load_image_data
from pyro_vae.data.sequences import (MIN_LENGTH, NUM_FEATURES, NUM_STEPS, SPLIT_SIZES, BinaryHMM, generating_hmm,
                                     generating_log_likelihood, load_hmm_sequences)
from pyro_vae.errors import InvalidDataError


def _tiny_hmm() -> BinaryHMM:
    """Two states, two features, nothing symmetric."""
    return BinaryHMM(torch.tensor([0.3, 0.7], dtype=torch.float64),
                     torch.tensor([[0.9, 0.1], [0.25, 0.75]], dtype=torch.float64),
                     torch.tensor([[0.2, 0.6], [0.7, 0.05]], dtype=torch.float64))


def _enumerated(hmm: BinaryHMM, x: torch.Tensor, length: int) -> float:
    """p(x_{1:length}) as the sum over every path of hidden states of the product of its probabilities."""
    total = 0.0
    for path in itertools.product(range(len(hmm.init)), repeat=length):
        p = hmm.init[path[0]].item()
        for t, state in enumerate(path):
            if t:
                p *= hmm.transition[path[t - 1], state].item()
            on = hmm.emission[state]
            p *= torch.where(x[t] == 1, on, 1 - on).prod().item()
        total += p
    return total


def _all_binary_sequences(num_steps: int, num_features: int) -> torch.Tensor:
    bits = list(itertools.product([0.0, 1.0], repeat=num_steps * num_features))
    return torch.tensor(bits, dtype=torch.float64).reshape(-1, num_steps, num_features)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_the_exact_likelihood_is_the_sum_over_every_path_and_a_distribution_over_every_sequence(length):
    """T = 3, D = 2: the forward algorithm against enumerating the 2^3 paths, for each of the 2^(2 L) sequences of
    length L (padded with zeros to T), and their probabilities sum to one."""
    hmm = _tiny_hmm()
    sequences = _all_binary_sequences(length, 2)
    padded = torch.nn.functional.pad(sequences, (0, 0, 0, 3 - length))
    log_p = hmm.log_likelihood(padded.reshape(len(padded), -1), torch.full((len(padded),), length))
    enumerated = torch.tensor([_enumerated(hmm, x, length) for x in sequences], dtype=torch.float64)
    assert torch.allclose(log_p, enumerated.log(), atol=1e-12)
    assert math.isclose(log_p.exp().sum().item(), 1.0, abs_tol=1e-12)


def test_what_follows_a_sequence_s_end_changes_nothing():
    hmm = _tiny_hmm()
    x = _all_binary_sequences(3, 2)[[5, 17, 40]]
    lengths = torch.tensor([2, 2, 2])
    noise = x.clone()
    noise[:, 2] = 1 - noise[:, 2]
    assert torch.equal(hmm.log_likelihood(x, lengths), hmm.log_likelihood(noise, lengths))
    short = hmm.log_likelihood(x[:, :2], lengths)
    assert torch.allclose(hmm.log_likelihood(x, lengths), short)


def test_one_step_of_the_generating_hmm_by_hand():
    """A sequence of one step whose 16 features are all on: p = 1/4 sum_k 0.8^4 0.1^12 (each state the same)."""
    x = torch.zeros(1, NUM_STEPS, NUM_FEATURES)
    x[0, 0] = 1
    split = Split(x.reshape(1, -1), torch.tensor([1]))
    assert generating_log_likelihood(split).item() == pytest.approx(4 * math.log(0.8) + 12 * math.log(0.1), abs=1e-9)
    hmm = generating_hmm()
    assert torch.allclose(hmm.transition.sum(1), torch.ones(4, dtype=torch.float64))
    assert hmm.transition[0, 0] == 0.85 and hmm.transition[0, 1] == pytest.approx(0.05)


def test_hmm_sequences_are_drawn_once_the_same_way_quickly_and_leave_torch_s_random_state_alone():
    state = torch.get_rng_state()
    start = time.perf_counter()
    data = load_hmm_sequences()
    assert time.perf_counter() - start < 2
    assert torch.equal(torch.get_rng_state(), state)
    again = load_hmm_sequences()
    for name in ("train", "valid", "test"):
        assert torch.equal(data.split(name).images, again.split(name).images)
        assert torch.equal(data.split(name).labels, again.split(name).labels)
    assert not torch.equal(load_hmm_sequences(seed=1).test.images, data.test.images)

    assert (data.name, data.kind, data.image_shape) == ("hmm-sequences", "sequences", (NUM_STEPS, NUM_FEATURES))
    assert tuple(len(data.split(name)) for name in ("train", "valid", "test")) == SPLIT_SIZES
    lengths = torch.cat([data.split(name).labels for name in ("train", "valid", "test")])
    assert lengths.dtype == torch.int64 and lengths.min() == MIN_LENGTH and lengths.max() == NUM_STEPS
    steps = data.train.images.reshape(-1, NUM_STEPS, NUM_FEATURES)
    after_end = torch.arange(NUM_STEPS) >= data.train.labels.unsqueeze(-1)
    assert steps[after_end].eq(0).all() and steps[~after_end].sum() > 0
    assert data.is_binary and "\n" not in data.description and "hidden Markov model" in data.description
    check_dataset(data)


def test_hmm_sequences_by_name_and_their_exact_likelihood_per_step():
    """Sticky states and distinct emissions: each step costs about 6.5 nats under the source (the entropy of a
    step given the state alone would be 16 binary entropies, 4 H(0.8) + 12 H(0.1) = 6.4 nats)."""
    data = load_dataset("hmm-sequences", subset=100)
    assert len(data.test) == 100 and data.kind == "sequences"
    log_p = generating_log_likelihood(data.test)
    assert log_p.shape == (100,) and torch.isfinite(log_p).all()
    per_step = -log_p.sum().item() / data.test.labels.sum().item()
    binary_entropy = lambda p: -p * math.log(p) - (1 - p) * math.log(1 - p)  # noqa: E731
    assert 4 * binary_entropy(0.8) + 12 * binary_entropy(0.1) < per_step < 7.5


def _sequences(n=30, steps=6, features=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=(n, steps, features)).astype(np.float32), rng.integers(1, steps + 1, size=n)


def test_sequences_from_a_npz_with_lengths_are_masked_and_say_how_they_were_read(tmp_path):
    x, lengths = _sequences()
    np.savez(tmp_path / "s.npz", train=x, train_lengths=lengths, valid=x[:4], valid_lengths=lengths[:4],
             test=x[:5, :4], test_lengths=np.minimum(lengths[:5], 4))
    data = load_dataset(str(tmp_path / "s.npz"))
    assert (data.kind, data.image_shape) == ("sequences", (6, 3))
    assert torch.equal(data.train.labels, torch.from_numpy(lengths))
    expected = x * (np.arange(6)[None, :, None] < lengths[:, None, None])
    assert torch.equal(data.train.images, torch.from_numpy(expected.reshape(30, -1)))
    assert data.test.images.reshape(5, 6, 3)[:, 4:].eq(0).all()  # the shorter split padded to T = 6
    assert "30 / 4 / 5 train / valid / test sequences of up to 6 steps of 3 features" in data.description
    assert "read as sequences, (N, T, D): arrays of rank 3 with train_lengths, valid_lengths, test_lengths" in \
        data.description


def test_a_layout_entry_reads_sequences_without_lengths_as_all_of_length_t(tmp_path):
    x, _ = _sequences(n=20)
    np.savez(tmp_path / "s.npz", train=x, layout="sequences")
    data = load_image_data(tmp_path / "s.npz")
    assert data.kind == "sequences" and data.image_shape == (6, 3)
    assert all(split.labels.eq(6).all() for split in (data.train, data.valid, data.test))
    assert "its layout entry says sequences" in data.description
    np.savez(tmp_path / "i.npz", train=x[..., :1].repeat(6, -1), layout="images")  # (N, H, W) as before
    assert load_image_data(tmp_path / "i.npz").image_shape == (1, 6, 6)


@pytest.mark.parametrize("arrays, message", [
    (lambda x, n: {"train": x, "train_lengths": np.where(n == 6, 7, n)}, r"lengths from 1 to 7; each must be from 1 "
     "to the 6 steps"),
    (lambda x, n: {"train": x, "train_lengths": np.where(n == 6, 0, n)}, r"lengths from 0 to 5"),
    (lambda x, n: {"train": x, "train_lengths": n[:-1]}, r"\(29,\) lengths for 30 sequences"),
    (lambda x, n: {"train": x, "train_lengths": n.astype(float)}, "lengths of type float64; expected whole numbers"),
    (lambda x, n: {"train": np.where(x == 1, np.nan, x), "train_lengths": n}, "NaN or Inf"),
    (lambda x, n: {"train": x, "train_lengths": n, "train_labels": n}, "carries its lengths where labels go"),
    (lambda x, n: {"train": x[:, 0], "train_lengths": n}, "the lengths of sequences, but holds vectors"),
    (lambda x, n: {"train": x, "layout": "movies"}, "must be one of the strings images, vectors, sequences"),
    (lambda x, n: {"train": x[:, 0], "layout": "sequences"}, r"an array of 2 dimensions \(30, 3\); sequences are "
     r"\(N, T, D\)"),
    (lambda x, n: {"train": x, "valid_lengths": n}, "has valid_lengths but no valid array"),
])
def test_mistakes_in_sequence_files_are_one_sentence(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays(*_sequences()))
    with pytest.raises(InvalidDataError, match=message):
        load_image_data(tmp_path / "bad.npz")


def test_a_sequence_data_set_made_in_code_is_checked_too():
    x = torch.ones(2, 3 * 2)
    good = Dataset("made", *(Split(x * torch.tensor([1, 1, 1, 1, 0, 0.0]), torch.tensor([2, 2])),) * 3,
                   image_shape=(3, 2), kind="sequences")
    check_dataset(good)
    for split, message in [(Split(x, torch.tensor([2, 3])), "values other than zero after the end"),
                           (Split(x, None), "no sequence lengths"),
                           (Split(x, torch.tensor([3, 4])), "lengths from 3 to 4"),
                           (Split(x, torch.tensor([3.0, 3.0])), "expected whole numbers")]:
        with pytest.raises(InvalidDataError, match=message):
            check_dataset(Dataset("made", split, good.valid, good.test, image_shape=(3, 2), kind="sequences"))


def test_sequence_mistakes_stop_the_command_line_with_one_sentence(tmp_path, cli):
    x, lengths = _sequences()
    np.savez(tmp_path / "long.npz", train=x, train_lengths=lengths + 1)
    code, _, err = cli("train", "--dataset", tmp_path / "long.npz", "--run-dir", tmp_path / "run", "--epochs", 1)
    assert_one_sentence_error(code, err, "long.npz [train_lengths]: lengths from 2 to 7")
    assert not (tmp_path / "run").exists()


TINY_MUSIC = {"train": [[(60, 64), (), (21, 108)], [(60,)]], "valid": [[[62]]], "test": [[(70, 72), {71, 73}]]}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_polyphonic_music_pickle_is_a_piano_roll_of_88_notes(tmp_path, protocol):
    """The format of Boulanger-Lewandowski et al. 2012 (Python 2's protocols too): note n is feature n - 21."""
    with open(tmp_path / "tiny.pickle", "wb") as file:
        pickle.dump(TINY_MUSIC, file, protocol=protocol)
    data = load_dataset(str(tmp_path / "tiny.pickle"))
    assert (data.kind, data.image_shape) == ("sequences", (3, 88))
    assert data.train.labels.tolist() == [3, 1] and data.valid.labels.tolist() == [1]
    on = {name: data.split(name).images.reshape(-1, 3, 88).nonzero().tolist() for name in ("train", "valid", "test")}
    assert on == {"train": [[0, 0, 39], [0, 0, 43], [0, 2, 0], [0, 2, 87], [1, 0, 39]], "valid": [[0, 0, 41]],
                  "test": [[0, 0, 49], [0, 0, 51], [0, 1, 50], [0, 1, 52]]}
    assert "2 / 1 / 1 train / valid / test sequences of up to 3 steps of 88 notes (MIDI 21 to 108)" in data.description
    assert "read with pickle" in data.description and "open only files you trust" in data.description


class _Trap:
    """What a malicious pickle does: call a function of its choosing while it is read."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.remove, (str(self.path),)


@pytest.mark.parametrize("content, message", [
    ({**TINY_MUSIC, "test": [[(70, 20)]]}, r"tiny.pickle \[test\], sequence 0, step 0: the note 20 is not one of the "
     "piano's MIDI notes 21 to 108"),
    ({**TINY_MUSIC, "test": [[(70, 60.5)]]}, "the note 60.5 is not one"),
    ({**TINY_MUSIC, "valid": [[]]}, r"tiny.pickle \[valid\], sequence 0: expected a non-empty list of time steps"),
    ({**TINY_MUSIC, "valid": []}, "the valid split of tiny.pickle is empty"),
    ({"train": TINY_MUSIC["train"]}, "holds a dict with the keys train; a polyphonic-music pickle is a dict of train, "
     "valid and test"),
    ([1, 2], "holds a list"),
])
def test_mistakes_in_polyphonic_pickles_are_one_sentence(tmp_path, content, message):
    with open(tmp_path / "tiny.pickle", "wb") as file:
        pickle.dump(content, file)
    with pytest.raises(InvalidDataError, match=message):
        load_dataset(str(tmp_path / "tiny.pickle"))


def test_a_pickle_that_names_a_class_is_refused_before_anything_runs(tmp_path, cli):
    canary = tmp_path / "canary"
    canary.touch()
    with open(tmp_path / "trap.pkl", "wb") as file:
        pickle.dump({**TINY_MUSIC, "test": [[(60,)], _Trap(canary)]}, file)
    code, _, err = cli("train", "--dataset", tmp_path / "trap.pkl", "--run-dir", tmp_path / "run")
    assert_one_sentence_error(code, err, "names the class", "remove; a polyphonic-music file holds only lists of MIDI "
                              "note numbers")
    assert canary.exists()
    (tmp_path / "text.pickle").write_text("not a pickle")
    code, _, err = cli("train", "--dataset", tmp_path / "text.pickle", "--run-dir", tmp_path / "run")
    assert_one_sentence_error(code, err, f"cannot read {tmp_path / 'text.pickle'}: it is not a pickle")
