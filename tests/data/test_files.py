"""Your own images as a data set: every format round-trips, layouts are detected, mistakes are one sentence."""
import numpy as np
import pytest
import torch
from PIL import Image

from pyro_vae.data.files import SPLITS, load_image_data, resize
from pyro_vae.errors import InvalidDataError


def _all(data):
    """Every image and label of every split, in split order."""
    images = torch.cat([getattr(data, name).images for name in SPLITS])
    labels = [getattr(data, name).labels for name in SPLITS]
    return images, (None if labels[0] is None else torch.cat(labels))


def test_an_npz_with_its_own_splits_and_labels_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {name: rng.integers(0, 256, size=(n, 8, 6), dtype=np.uint8) for name, n in zip(SPLITS, (20, 5, 7))}
    labels = {f"{name}_labels": rng.integers(0, 3, size=len(arrays[name])) for name in SPLITS}
    np.savez(tmp_path / "d.npz", **arrays, **labels)
    data = load_image_data(tmp_path / "d.npz")
    for name in SPLITS:
        split = getattr(data, name)
        assert split.images.shape == (len(arrays[name]), 1, 8, 6)
        assert torch.equal(split.images[:, 0], torch.from_numpy(arrays[name]).float() / 255)
        assert torch.equal(split.labels, torch.from_numpy(labels[f"{name}_labels"]))
    assert data.description == ("d.npz: 20 / 5 / 7 train / valid / test images of 1 x 8 x 6 (read as (N, H, W)), "
                                "labelled, its own valid and test splits")


def test_binary_images_stored_as_bytes_are_read_as_zero_and_one(tmp_path):
    """uint8 arrays of only 0 and 1 are binary images, not the 8-bit values 0 and 1/255 (which a new user was told
    were grey-scale, and whose NLL then came out at 4.47 nats for 64 coin flips, about 44 nats)."""
    array = np.random.default_rng(4).integers(0, 2, size=(30, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "bits.npy", array)
    images, _ = _all(load_image_data(tmp_path / "bits.npy"))
    assert set(images.unique().tolist()) == {0.0, 1.0}
    assert images.sum() == array.sum()


def test_an_npy_is_split_with_a_seed_and_nothing_is_lost(tmp_path):
    array = np.random.default_rng(1).random((50, 3, 4, 4), dtype=np.float32)
    np.save(tmp_path / "d.npy", array)
    data = load_image_data(tmp_path / "d.npy", seed=3)
    assert [len(getattr(data, name).images) for name in SPLITS] == [40, 5, 5]
    images, _ = _all(data)
    # the same images, in a seeded order: sort both by their first pixel value to compare
    key = lambda t: t.reshape(len(t), -1)[:, 0].argsort()  # noqa: E731
    assert torch.equal(images[key(images)], torch.from_numpy(array)[key(torch.from_numpy(array))])
    again = load_image_data(tmp_path / "d.npy", seed=3)
    assert torch.equal(again.valid.images, data.valid.images)
    assert not torch.equal(load_image_data(tmp_path / "d.npy", seed=4).valid.images, data.valid.images)
    assert "valid 10 % of it, test 10 % of it (seeded permutation, seed 3)" in data.description


def test_channel_last_and_channel_first_layouts_read_the_same(tmp_path):
    first = np.random.default_rng(2).integers(0, 256, size=(12, 3, 5, 7), dtype=np.uint8)
    np.savez(tmp_path / "first.npz", train=first, valid=first[:2], test=first[:2])
    np.savez(tmp_path / "last.npz", train=first.transpose(0, 2, 3, 1), valid=first[:2].transpose(0, 2, 3, 1),
             test=first[:2].transpose(0, 2, 3, 1))
    a, b = load_image_data(tmp_path / "first.npz"), load_image_data(tmp_path / "last.npz")
    assert torch.equal(a.train.images, b.train.images) and a.image_shape == (3, 5, 7)
    assert "(N, C, H, W)" in a.description and "(N, H, W, C)" in b.description


def test_a_folder_with_class_subfolders_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    written = {}
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, size=(9, 9, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
            written[pixels.tobytes()] = label
    data = load_image_data(tmp_path / "images")
    assert data.classes == ["cat", "dog"] and data.image_shape == (3, 9, 9)
    images, labels = _all(data)
    assert len(images) == 12
    for image, label in zip(images, labels):
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        assert written[pixels.tobytes()] == label.item()


def test_a_folder_of_mixed_sizes_needs_an_image_size(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, size in enumerate([(10, 10), (12, 8), (10, 10)]):
        Image.fromarray(np.zeros(size, dtype=np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(InvalidDataError, match="have 2 different sizes .* pass --image-size N"):
        load_image_data(folder)
    assert load_image_data(folder, image_size=6).image_shape == (1, 6, 6)


def test_resize_averages_when_shrinking():
    images = torch.arange(16.0).reshape(1, 1, 4, 4) / 15
    assert torch.allclose(resize(images, 2)[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 15)
    assert resize(images, 8).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("make, message", [
    (lambda p: (p / "bad.npz").write_bytes(b"not a zip"), "cannot read"),
    (lambda p: np.save(p / "bad.npy", np.zeros((2, 3, 4, 5, 6))), "an array of 5 dimensions"),
    (lambda p: np.save(p / "bad.npy", np.zeros((10, 5, 5, 5))), "no channel axis of 1, 3 or 4"),
    (lambda p: np.save(p / "bad.npy", np.full((10, 4, 4), np.nan)), "NaN or Inf"),
    (lambda p: np.save(p / "bad.npy", np.full((10, 4, 4), 2.0)), r"values from 2 to 2; expected floats in \[0, 1\]"),
    (lambda p: np.savez(p / "bad.npz", train=np.zeros((5, 4, 4)), train_labels=np.zeros(4, dtype=int)),
     r"\(4,\) labels for 5 images"),
    (lambda p: np.savez(p / "bad.npz", train=np.zeros((5, 4, 4)), valid=np.zeros((0, 4, 4)), test=np.zeros((2, 4, 4))),
     "the valid split of bad.npz is empty"),
    (lambda p: np.savez(p / "bad.npz", images=np.zeros((5, 4, 4))), "has no array named 'train'"),
    (lambda p: np.savez(p / "bad.npz", train=np.zeros((5, 4, 4)), valid=np.zeros((2, 5, 5)), test=np.zeros((2, 4, 4))),
     "different shapes"),
])
def test_mistakes_are_one_sentence(tmp_path, make, message):
    make(tmp_path)
    path = next(tmp_path.iterdir())
    with pytest.raises(InvalidDataError, match=message):
        load_image_data(path)


def test_missing_paths_and_empty_folders(tmp_path):
    with pytest.raises(InvalidDataError, match="no such file or folder"):
        load_image_data(tmp_path / "nothing.npz")
    with pytest.raises(InvalidDataError, match="holds no PNG or JPEG images"):
        load_image_data(tmp_path)
    with pytest.raises(InvalidDataError, match="--image-size must be a positive number"):
        load_image_data(tmp_path, image_size=0)
