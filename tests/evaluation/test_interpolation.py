"""Interpolation: the paths' ends are the codes, a linear midpoint is their mean, slerp keeps the norm of equal-norm
codes; interpolate draws a row per pair and refuses what has no path in one sentence."""
import shutil

import pytest
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.evaluation.interpolation import interpolate, interpolate_codes
from pyro_vae.models import MODELS


def test_linear_and_spherical_paths_have_their_known_points():
    a, b = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    linear = interpolate_codes(a, b, 5)
    assert torch.equal(linear[0], a) and torch.equal(linear[-1], b) and torch.allclose(linear[2], (a + b) / 2)
    spherical = interpolate_codes(a, b, 5, spherical=True)
    assert torch.allclose(spherical[0], a) and torch.allclose(spherical[-1], b, atol=1e-6)
    assert torch.allclose(spherical.norm(dim=-1), torch.full((5,), 3.0))  # on the circle of radius 3
    assert torch.allclose(spherical[2], torch.tensor([1.0, 1.0, 0.0]) * 3 / 2 ** 0.5)  # 45 degrees
    assert torch.allclose(interpolate_codes(a, 2 * a, 3, spherical=True), interpolate_codes(a, 2 * a, 3))  # parallel
    with pytest.raises(PyroVAEError, match="at least 2 steps"):
        interpolate_codes(a, b, 1)


def test_a_decoded_path_starts_and_ends_at_the_decoded_codes():
    torch.manual_seed(0)
    vae = MODELS["vae"](z_dim=3, hidden_dims=(16,))
    x = (torch.rand(4, 784) < 0.3).float()
    images = interpolate(vae, x[:2], x[2:], steps=6)
    assert images.shape == (12, 784)
    ends = vae.decode(vae.encode(x))
    assert torch.allclose(images[0], ends[0], atol=1e-6) and torch.allclose(images[5], ends[2], atol=1e-6)
    assert torch.allclose(images[6], ends[1], atol=1e-6) and torch.allclose(images[11], ends[3], atol=1e-6)


def test_interpolate_writes_a_row_per_pair_and_refuses_in_one_sentence(cli, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, out, err = cli("interpolate", run, "--pairs", 3, "--steps", 5, "--spherical", "--out", tmp_path / "p.png")
    assert code == 0, err
    assert "3 spherical paths of 5 decoded codes" in out and (tmp_path / "p.png").stat().st_size > 5000
    for argv, message in ((["--steps", 1], "at least 2"), (["--pairs", 0], "--pairs"),
                          (["--pairs", 5000], "too many for one picture"), (["--pairs", 400, "--steps", 2], "needs 800 images"), (["--out", tmp_path / "p.txt"], "picture file")):
        code, out, err = cli("interpolate", run, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
