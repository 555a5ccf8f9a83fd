"""The data loading of this adapted copy of Pyro's ss_vae_M2 example (not part of Pyro; MIT, as pyro-vae).

It gives ``utils/mnist_cached.py`` the images ``pyro-vae train --model ss-vae --num-labelled N --seed S`` trains
on, so that the two programs see the same pixels, labels and splits:

* labelled ("sup"): the N labelled images pyro-vae draws with seed S, N/10 of each digit, from the 7,000
  training images of ``binarized-mnist-labelled`` (the statically binarized MNIST test split, shuffled once);
* unlabelled ("unsup"): the 50,000 statically binarized training images;
* validation ("valid"): the 1,000 labelled validation images of ``binarized-mnist-labelled``, disjoint from both;
* test: its 2,000 held-out labelled images, which neither program trains or selects on.

Pyro's loader reads torchvision's grey-scale MNIST instead: 60,000 training digits, the last 10,000 of them for
validation, and the 10,000 test digits. The pixels here are binary (0 or 1) where Pyro's are grey levels in [0, 1].
"""
import torch
from torch.utils.data import Dataset

from pyro_vae.data import load_dataset, semi_supervised


def _splits(sup_num, seed):
    return semi_supervised(load_dataset("binarized-mnist"), int(sup_num), seed=seed)


def _one_hot(labels):
    return torch.nn.functional.one_hot(labels.long(), 10).float()


def shipped_split(sup_num, seed):
    """What Pyro's ``split_sup_unsup_valid`` returns, transformed as MNISTCached transforms it: images (N, 784) in
    [0, 1] and one-hot labels (N, 10), for the labelled, unlabelled and validation images."""
    data = _splits(sup_num, seed)
    unsup = data.train.images
    return (data.labelled.images, _one_hot(data.labelled.labels), unsup, torch.zeros(len(unsup), 10),
            data.labelled_valid.images, _one_hot(data.labelled_valid.labels))


class ShippedMNIST(Dataset):
    """Stands in for ``pyro.contrib.examples.util.MNIST``: ``data`` as 8-bit-scaled tensors (N, 28, 28), which
    ``fn_x_mnist`` divides by 255, and integer ``targets``. The training part is left empty: ``shipped_split``
    gives MNISTCached its splits instead."""

    def __init__(self, train=True, root=None, download=False, **kwargs):
        if train:
            self.data, self.targets = torch.zeros(0, 28, 28), torch.zeros(0, dtype=torch.long)
        else:
            test = _splits(10, 0).test  # the held-out images do not depend on N or the seed
            self.data, self.targets = 255 * test.images.view(-1, 28, 28), test.labels.long()

    def __len__(self):
        return len(self.data)


def get_data_directory(_file):
    return None  # everything is read from the pyro-vae package
