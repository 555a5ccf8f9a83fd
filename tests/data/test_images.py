"""Every structure with every likelihood and both networks; your own images and torchvision's on the command
line; bits per dimension; one sentence for each mistake (issue 11)."""
import json
import math
import pickle

import numpy as np
import pytest
import torch
from pyro import poutine

from conftest import REPO, assert_one_sentence_error, write_torchvision_mnist
from pyro_vae.catalog import LIKELIHOOD_NAMES, MODEL_NAMES
from pyro_vae.config import TrainConfig
from pyro_vae.conv import ConvDecoder
from pyro_vae.errors import InvalidDataError, PyroVAEError
from pyro_vae.likelihoods import pixel_likelihood
from pyro_vae.models import MODELS, build_model
from pyro_vae.training import Trainer

SHAPES = [(1, 28, 28), (3, 32, 32)]


def _kwargs(name, shape, likelihood, net):
    options = {"vampprior": {"num_pseudo_inputs": 3}, "factor-vae": {"discriminator_dims": [16]}}.get(name, {})
    config = TrainConfig(model=name, likelihood=likelihood, net=net, z_dim=3, hidden_dims=[16], model_options=options)
    return config.model_kwargs(shape)


def _images(shape, n=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=generator).float() / 255


#: the structures over images (those over sequences are tested on sequences, tests/models/test_sequence_structures.py), each
#: with every likelihood but the Bernoulli (the default, everywhere else) and the categorical, whose 256 outputs per
#: pixel make the largest decoders: it is tested with the VAE alone, as its code is the likelihood's, not the structure's
PAIRS = [(name, likelihood) for name in MODEL_NAMES
         if name != "bernoulli-mixture" and MODELS[name].data_kind == "images"
         for likelihood in LIKELIHOOD_NAMES if likelihood not in ("bernoulli", "categorical")] + [("vae", "categorical")]


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("name, likelihood", PAIRS)
def test_every_structure_takes_every_likelihood_and_network(name, likelihood, net):
    """Image-shaped and flat batches give the same log-density, it is finite, and gradients reach every
    network; generated images have the data's shape."""
    shape = SHAPES[hash((name, likelihood, net)) % 2]
    torch.manual_seed(0)
    structure = build_model(name, **_kwargs(name, shape, likelihood, net))
    x = _images(shape)
    conditioning = (torch.tensor([0, 1, 2, 3]),) if structure.needs_labels else ()

    def log_density(batch):
        guide = poutine.trace(structure.guide).get_trace(batch, *conditioning)
        model = poutine.trace(poutine.replay(structure.model, trace=guide)).get_trace(batch, *conditioning)
        return model.log_prob_sum() - guide.log_prob_sum(), model

    torch.manual_seed(1)
    image_shaped, model_trace = log_density(x)
    torch.manual_seed(1)
    flat, _ = log_density(x.reshape(4, -1))
    assert torch.isfinite(image_shaped) and torch.allclose(image_shaped, flat)
    assert model_trace.nodes["x"]["fn"].event_shape == (math.prod(shape),)
    image_shaped.backward()
    assert all(p.grad is not None for p in structure.decoder.parameters())
    if net == "conv":
        assert any(isinstance(m, torch.nn.Conv2d) for m in structure.modules())
    assert structure.generate(2, *(c[:2] for c in conditioning)).shape == (2, math.prod(shape))


def test_the_conv_decoder_s_flat_outputs_are_what_the_likelihood_splits():
    """Flattened, all locations (channels 0..C-1) come before all scales, pixel for pixel as x is flattened."""
    shape = (3, 8, 8)
    decoder = ConvDecoder(4, shape, params_per_pixel=2, flat=True)
    images = ConvDecoder(4, shape, params_per_pixel=2)
    images.load_state_dict(decoder.state_dict())
    z = torch.randn(5, 4)
    flat, stacked = decoder(z), images(z)
    loc = pixel_likelihood("discretized-logistic", 3 * 64)(flat).base_dist.loc
    assert torch.equal(loc, stacked[:, :3].reshape(5, -1))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vae", "gmvae"])
def test_the_default_binarized_mnist_run_gives_the_same_losses_as_before_issue_11(model, tmp_path):
    """Pinned at 5de04af, before the structures took likelihoods and networks (seed 3, 2 epochs of 200 images)."""
    before = {"vae": (529.087041015625, -518.5663781738281), "gmvae": (527.896748046875, -514.028984375)}
    config = TrainConfig(subset=200, epochs=2, batch_size=50, seed=3, model=model, hidden_dims=[64], z_dim=8)
    history = Trainer(config, tmp_path / "run", progress=False, log=lambda line: None).fit()
    assert (history[-1]["train_loss"], history[-1]["valid_elbo"]) == pytest.approx(before[model], rel=1e-6)


def test_support_is_checked_with_one_sentence():
    grey = torch.full((2, 4), 0.3)
    assert "binary pixels" in pixel_likelihood("bernoulli", 4).support_error(grey)
    assert pixel_likelihood("continuous-bernoulli", 4).support_error(grey) is None
    assert "not on that grid" in pixel_likelihood("discretized-logistic", 4).support_error(grey)
    assert pixel_likelihood("discretized-logistic", 4).support_error(torch.full((2, 4), 77 / 255)) is None
    assert "in [0, 1]" in pixel_likelihood("continuous-bernoulli", 4).support_error(grey + 1)
    structure = build_model("vae", **_kwargs("vae", (1, 2, 2), "discretized-logistic", "mlp"))
    with pytest.raises(InvalidDataError, match="8-bit values"):
        structure.model(grey)
    with pytest.raises(InvalidDataError, match=r"\(batch_size, 4\) or \(batch_size, 1, 2, 2\), got \(2, 5\)"):
        structure.model(torch.zeros(2, 5))


def _write_npz(path, n=60, shape=(8, 8, 3), labels=True, dtype=np.uint8):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n, *shape)).astype(dtype)
    if dtype != np.uint8:
        train = train / 255 * 0.9 + 0.05 * rng.random(train.shape)  # floats off the 8-bit grid
    arrays = {"train": train}
    if labels:
        arrays["train_labels"] = rng.integers(0, 3, n)
    np.savez(path, **arrays)
    return path


# z-dim 3: a 2-D code would add the latent map's pictures to each run (see conftest.TINY), which no test here reads
COMMON = ["--epochs", 1, "--batch-size", 16, "--z-dim", 3, "--hidden-dims", 16, "--eval-samples", 3, "--no-progress"]


@pytest.mark.slow
@pytest.mark.parametrize("likelihood, dequantized", [("discretized-logistic", False), ("gaussian", True)])
def test_your_own_colour_images_train_and_report_bits_per_dimension(cli, tmp_path, likelihood, dequantized):
    data = _write_npz(tmp_path / "faces.npz")
    run = tmp_path / "run"
    code, out, err = cli("train", "--dataset", data, "--likelihood", likelihood, "--net", "conv", "--run-dir", run,
                         *COMMON)
    assert code == 0, err
    result = json.loads((run / "evaluation.json").read_text())
    dims = 3 * 8 * 8
    expected = result["nll"] / (dims * math.log(2)) + (8 if dequantized else 0)
    assert result["bits_per_dim"] == pytest.approx(expected)
    assert ("dequantized" in result["bits_per_dim_from"]) == dequantized
    assert "bits/dim" in out
    # evaluate rebuilds the data from the path the run saved, with its 3 x 8 x 8 images
    code, out, err = cli("evaluate", run, "--num-samples", 2)
    assert code == 0 and "bits/dim" in out, err
    assert (run / "samples.png").is_file() and (run / "reconstructions.png").is_file()


@pytest.mark.slow
def test_dequantized_training_resumes_as_if_uninterrupted(tmp_path):
    """Training batches are dequantized afresh at every pass from torch's generator, which checkpoints save."""
    config = dict(dataset="mnist-test-release", subset=100, likelihood="continuous-bernoulli", hidden_dims=[16],
                  z_dim=2, batch_size=25)
    whole = Trainer(TrainConfig(epochs=2, **config), tmp_path / "whole", progress=False, log=lambda s: None).fit()
    Trainer(TrainConfig(epochs=1, **config), tmp_path / "part", progress=False, log=lambda s: None).fit()
    resumed = Trainer(TrainConfig(epochs=2, **config), tmp_path / "part", resume=True, progress=False,
                      log=lambda s: None).fit()
    assert resumed[-1]["train_loss"] == whole[-1]["train_loss"]
    assert resumed[-1]["valid_elbo"] == whole[-1]["valid_elbo"]


def test_fashion_mnist_and_cifar10_read_from_files_in_torchvision_s_layout(tmp_path, monkeypatch):
    import torchvision.datasets.cifar
    from torchvision.datasets import CIFAR10

    from pyro_vae.data import load_dataset

    write_torchvision_mnist(tmp_path, "FashionMNIST")
    fashion = load_dataset("fashion-mnist", data_dir=str(tmp_path), binarize="static")
    assert fashion.image_shape == (1, 28, 28) and len(fashion.valid) == 10_000 // 6 and len(fashion.test) == 10_000
    assert fashion.is_binary and fashion.test.labels is not None

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8), "labels": list(range(6))}
        (folder / name).write_bytes(pickle.dumps(batches[name]))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    # the fake files have other MD5 sums than the real ones, which torchvision checks
    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: True)
    cifar = load_dataset("cifar10", data_dir=str(tmp_path))
    assert cifar.image_shape == (3, 32, 32) and cifar.eight_bit
    assert (len(cifar.train), len(cifar.valid), len(cifar.test)) == (25, 5, 6)
    # (N, 3072) rows are (C, H, W) flattened, as torchvision's (N, H, W, C) arrays permuted back
    assert torch.equal(cifar.test.images[0] * 255, torch.from_numpy(batches["test_batch"]["data"][0]).float())


@pytest.mark.parametrize("make_args, message", [
    (lambda d: ["--dataset", _write_npz(d / "f.npz", dtype=np.float32), "--likelihood", "discretized-logistic"],
     "is a distribution over 8-bit values k / 255, and these pixels are not on that grid"),
    (lambda d: ["--dataset", _write_npz(d / "g.npz")], "are grey-scale but the likelihood is Bernoulli"),
    (lambda d: ["--dataset", "binarized-mnist", "--image-size", 32], "--image-size resizes your own images (--dataset PATH)"),
    (lambda d: ["--dataset", d / "nothing.npz"], "no such file or folder"),
    (lambda d: ["--model", "bernoulli-mixture", "--likelihood", "gaussian"],
     "the structure bernoulli-mixture does not take --likelihood"),
    (lambda d: ["--likelihood", "gaussian", "--init-output-bias"], "applies to --likelihood bernoulli with --net mlp"),
    (lambda d: ["--dataset", "mnist-test-release", "--likelihood", "gaussian", "--binarize", "static"],
     "drop --binarize"),
    (lambda d: ["--dataset", _write_npz(d / "odd.npz", shape=(10, 10)), "--likelihood", "gaussian", "--net", "conv"],
     "sides must be multiples of 4; 10 x 10 is not"),
    (lambda d: ["--dataset", _write_npz(d / "l.npz", labels=False), "--model", "cvae", "--likelihood", "gaussian"],
     "needs labelled images"),
])
def test_mistakes_are_one_sentence_and_leave_no_run(cli, tmp_path, make_args, message):
    run = tmp_path / "run"
    code, _, err = cli("train", "--run-dir", run, *make_args(tmp_path), *COMMON)
    assert_one_sentence_error(code, err, message)
    assert not run.exists()


OLD_STYLE = """
import pyro, pyro.distributions as dist
from pyro_vae.models import LatentStructure
from pyro_vae.networks import BernoulliDecoder, GaussianMLP

class Old(LatentStructure):
    def __init__(self, x_dim, z_dim=2, hidden_dims=(16,), activation="relu"):
        super().__init__(x_dim)
        self.z_dim, self.hidden_dims, self.activation = z_dim, list(hidden_dims), activation
        self.encoder = GaussianMLP(x_dim, hidden_dims, z_dim)
        self.decoder = BernoulliDecoder(z_dim, hidden_dims, x_dim)

    def config(self):
        return {"x_dim": self.x_dim, "z_dim": self.z_dim, "hidden_dims": self.hidden_dims, "activation": self.activation}

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))
"""


@pytest.mark.slow
def test_a_structure_file_written_before_likelihoods_still_trains_and_refuses_one_in_a_sentence(cli, tmp_path):
    (tmp_path / "old.py").write_text(OLD_STYLE)
    spec = f"{tmp_path / 'old.py'}:Old"
    code, _, err = cli("train", "--run-dir", tmp_path / "run", "--model", spec, "--subset", 50, *COMMON)
    assert code == 0, err
    code, _, err = cli("train", "--run-dir", tmp_path / "run2", "--model", spec, "--likelihood", "gaussian",
                       "--dataset", "mnist-test-release", *COMMON)
    assert_one_sentence_error(code, err, "does not take --likelihood", "pass it on to LatentStructure.__init__")


@pytest.mark.slow
def test_the_example_structure_file_trains_on_grey_pixels_with_a_conv_net(cli, tmp_path):

    example = REPO / "examples" / "custom_structure.py"
    code, out, err = cli("train", "--run-dir", tmp_path / "run", "--model", f"{example}:LaplacePriorVAE",
                         "--likelihood", "continuous-bernoulli", "--net", "conv", "--dataset", "mnist-test-release",
                         "--subset", 60, *COMMON)
    assert code == 0, err
    assert "bits/dim (dequantized, + 8)" in out


def test_a_bad_image_shape_or_network_is_one_sentence():
    with pytest.raises(PyroVAEError, match=r"has 12 pixels, not x_dim = 10"):
        build_model("vae", x_dim=10, image_shape=[3, 2, 2])
    with pytest.raises(PyroVAEError, match="unknown network 'resnet'"):
        build_model("vae", x_dim=4, net="resnet")


def test_svhn_and_celeba_read_from_files_in_torchvision_s_layout(tmp_path, monkeypatch):
    """SVHN's .mat files and CelebA's aligned JPEGs with its partition and annotation files, a few of each."""
    import scipy.io
    import torchvision.datasets
    from PIL import Image

    from pyro_vae.data import load_dataset

    rng = np.random.default_rng(0)
    svhn = tmp_path / "svhn"
    svhn.mkdir()
    for part, n in (("train", 12), ("test", 5)):
        scipy.io.savemat(svhn / f"{part}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                       "y": rng.integers(1, 11, (n, 1))})
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    data = load_dataset("svhn", data_dir=str(svhn))
    assert data.image_shape == (3, 32, 32) and (len(data.train), len(data.valid), len(data.test)) == (10, 2, 5)
    assert data.test.labels.max() < 10  # torchvision maps SVHN's label 10 to the digit 0

    celeba = tmp_path / "celeba"
    folder = celeba / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 8)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(folder / name)
    partition = [0, 0, 0, 1, 1, 2, 2]  # (a split of one image trips torchvision: squeeze of a 1-element index)
    files = {"list_eval_partition.txt": "".join(f"{n} {p}\n" for n, p in zip(names, partition)),
             "identity_CelebA.txt": "".join(f"{n} 1\n" for n in names),
             "list_bbox_celeba.txt": f"{len(names)}\nimage_id x_1 y_1 width height\n"
                                     + "".join(f"{n} 1 2 3 4\n" for n in names),
             "list_landmarks_align_celeba.txt": f"{len(names)}\nlefteye_x lefteye_y\n" + "".join(f"{n} 1 2\n" for n in names),
             "list_attr_celeba.txt": f"{len(names)}\nSmiling Young\n" + "".join(f"{n} 1 -1\n" for n in names)}
    for name, text in files.items():
        (celeba / "celeba" / name).write_text(text)
    monkeypatch.setattr(torchvision.datasets.CelebA, "_check_integrity", lambda self: True)
    faces = load_dataset("celeba", data_dir=str(celeba))
    assert faces.image_shape == (3, 64, 64) and (len(faces.train), len(faces.valid), len(faces.test)) == (3, 2, 2)
    # the central 148 x 148 of the first face, shrunk by area averaging, is what the train split starts with
    with Image.open(folder / names[0]) as image:
        expected = np.asarray(image.convert("RGB").crop((15, 35, 163, 183)).resize((64, 64), Image.BOX))
    assert torch.equal(faces.train.images[0] * 255, torch.from_numpy(expected.transpose(2, 0, 1).copy()).reshape(-1).float())
    assert (celeba / "celeba" / "pyro-vae-64x64-train.npy").is_file()  # cached for the next read
    assert torch.equal(load_dataset("celeba", data_dir=str(celeba)).train.images, faces.train.images)


def test_a_run_on_your_own_file_finds_it_again_from_another_folder(cli, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    _write_npz(tmp_path / "here" / "faces.npz")
    monkeypatch.chdir(tmp_path / "here")
    code, _, err = cli("train", "--dataset", "faces.npz", "--likelihood", "discretized-logistic", "--run-dir",
                       tmp_path / "run", *COMMON)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # elsewhere: the run keeps the file's absolute path
    code, out, err = cli("evaluate", tmp_path / "run", "--num-samples", 2)
    assert code == 0 and "bits/dim" in out, err
