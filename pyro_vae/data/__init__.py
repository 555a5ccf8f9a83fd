"""Data sets as tensors loaded once, and a batch iterator over them.

* ``binarized-mnist``: the statically binarized MNIST of Larochelle & Murray (2011), shipped with the
  package; only its test split carries labels.
* ``binarized-mnist-labelled``: that labelled test split, shuffled once and split 7000 / 1000 / 2000
  into train / valid / held-out test, for models that need labels (the conditional VAE) offline.
* ``mnist-test-release``: the official grey-scale MNIST test release (shipped), split the same way.
* ``mnist``: the full grey-scale MNIST read by torchvision from ``--data-dir`` (``--download`` fetches it);
  ``fashion-mnist``, ``kmnist`` and ``cifar10`` likewise (:data:`TORCHVISION_SETS`).
* ``dsprites-procedural``: dSprites re-rendered here from its six factors (no download; not DeepMind's file),
  ``dsprites``: DeepMind's file from ``--data-dir``; both with the factors in ``Split.factors``
  (:mod:`pyro_vae.data.dsprites`);
* ``hmm-sequences``: binary sequences drawn here from a known hidden Markov model, with the exact likelihood of
  that source (:mod:`pyro_vae.data.sequences`);
* a path: your own images, vectors (tables) or sequences, a ``.npz``, a ``.npy`` or a folder of PNG / JPEG
  (:mod:`pyro_vae.data.files`).

:attr:`Dataset.kind` says what a row is: an image, a vector (``image_shape`` (D,)) or a sequence (``image_shape``
(T, D), stored flat (N, T * D) with the lengths in ``Split.labels``).
Splits hold images flat, (N, C * H * W), with :attr:`Dataset.image_shape` (C, H, W) beside them: every
structure takes batches in that form (and image-shaped (N, C, H, W) ones too), and structure files written
for 784-vectors keep working. 8-bit data (values k / 255) trained with a continuous likelihood are
uniformly dequantized (:func:`dequantize_dataset`): training batches afresh at every pass, valid and test once.
"""
from pyro_vae.catalog import BINARIZE_MODES, DATASETS, TORCHVISION_NAMES, check_registry, is_dataset_path  # noqa: F401
from pyro_vae.data.batches import (cycled_batches, iterate_batches, labelled_batch_count, num_batches,  # noqa: F401
                                   redraw, semi_supervised_batches)
from pyro_vae.data.semi_supervised import _labelled_release, clustering_splits, semi_supervised  # noqa: F401
from pyro_vae.data.sources import (DSPRITES_SEED, DSPRITES_SPLIT, LABELLED_SPLIT, LABELLED_SPLIT_SEED,  # noqa: F401
                                   TORCHVISION_SETS, _package_file, dequantize_dataset, load_binarized_mnist,
                                   load_dataset, load_mnist, load_mnist_test_release, load_path, load_torchvision,
                                   split_labelled)
from pyro_vae.data.types import (IMAGE_SHAPE, KINDS, MNIST_SHAPE, X_DIM, Dataset, Split, check_dataset,  # noqa: F401
                                 check_images)
from pyro_vae.pixels import is_binary  # noqa: F401
