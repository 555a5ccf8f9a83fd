"""The embedded binarized MNIST and the torchvision MNIST path, read offline."""
import hashlib

import numpy as np
import pytest
import torch

from pyro_vae.data import iterate_batches, load_binarized_mnist, load_dataset
from pyro_vae.errors import PyroVAEError


def test_binarized_mnist_splits_match_the_published_checksums():
    data = load_binarized_mnist()
    expected = {"train": "8d4f0427d6c2572b5e9994e08bad66de", "valid": "3e33becd40c694040e5e6c812e2f4b50",
                "test": "fc34623e13bd64fed2f8b61365198339"}
    for name, md5 in expected.items():
        images = data.split(name).images
        assert hashlib.md5(images.numpy().astype(np.uint8).tobytes()).hexdigest() == md5
    assert (len(data.train), len(data.valid), len(data.test)) == (50000, 10000, 10000)
    assert torch.bincount(data.test.labels).tolist()[:2] == [980, 1135]


def test_subset_keeps_every_class_of_the_sorted_test_split():
    data = load_dataset(subset=100)
    assert len(data.test) == 100 and len(data.train) == 100
    assert set(data.test.labels.tolist()) == set(range(10))


def test_a_subset_unpacks_the_same_images_as_the_whole_file_subsetted():
    whole = load_binarized_mnist()
    for n in (1, 137, 10_000, 60_000):
        part = load_binarized_mnist(n)
        for name in ("train", "valid", "test"):
            expected = whole.split(name).subset(n)
            assert torch.equal(part.split(name).images, expected.images)
        assert torch.equal(part.test.labels, whole.test.subset(n).labels)


def test_batches_cover_the_split_once_and_shuffle_reproducibly(small_data):
    split = small_data.train
    first = torch.cat([x for (x,) in iterate_batches(split, 64, shuffle=True,
                                                     generator=torch.Generator().manual_seed(3))])
    again = torch.cat([x for (x,) in iterate_batches(split, 64, shuffle=True,
                                                     generator=torch.Generator().manual_seed(3))])
    assert torch.equal(first, again)
    assert first.shape == split.images.shape
    assert torch.equal(first.sum(0), split.images.sum(0))


def test_dynamic_binarization_resamples_each_batch():
    grey = load_dataset("binarized-mnist", subset=50).train
    grey.images = torch.full_like(grey.images, 0.5)
    (a,), = list(iterate_batches(grey, 50, binarize="dynamic"))
    (b,), = list(iterate_batches(grey, 50, binarize="dynamic"))
    assert set(a.unique().tolist()) == {0.0, 1.0} and not torch.equal(a, b)


def test_mnist_through_torchvision(mnist_dir):
    data = load_dataset("mnist", data_dir=str(mnist_dir), subset=120, binarize="dynamic")
    assert data.train.images.shape == (120, 784) and data.train.labels is not None
    assert 0 < data.train.images.mean() < 1 and not data.train.images.eq(0.5).all()
    assert data.binarize == "dynamic"
    static = load_dataset("mnist", data_dir=str(mnist_dir), subset=120, binarize="static")
    assert set(static.test.images.unique().tolist()) == {0.0, 1.0}


def test_mnist_without_files_asks_for_download(tmp_path):
    with pytest.raises(PyroVAEError, match="--download"):
        load_dataset("mnist", data_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs, message", [({"name": "cifar"}, "unknown data set 'cifar'"),
                                             ({"binarize": "maybe"}, "unknown binarization"),
                                             ({"subset": 0}, "--subset must be a positive")])
def test_bad_dataset_options(kwargs, message):
    with pytest.raises(PyroVAEError, match=message):
        load_dataset(**kwargs)
