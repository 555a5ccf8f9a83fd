"""Convolutional encoders and decoders give the right shapes for 28, 32 and 64 pixels (issue 11)."""
import pytest
import torch

from pyro_vae.conv import LARGE, SMALL, ConvDecoder, ConvEncoder, conv_architecture
from pyro_vae.errors import PyroVAEError


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 64, 64), (3, 64, 64), (3, 128, 96)])
@pytest.mark.parametrize("params_per_pixel", [1, 2])
def test_shapes_round_trip(shape, params_per_pixel):
    torch.manual_seed(0)
    encoder, decoder = ConvEncoder(shape, z_dim=10), ConvDecoder(10, shape, params_per_pixel)
    x = torch.rand(5, *shape)
    loc, scale = encoder(x)
    assert loc.shape == scale.shape == (5, 10) and (scale > 0).all()
    out = decoder(loc)
    assert out.shape == (5, params_per_pixel * shape[0], *shape[1:])
    # leading dimensions (Pyro's particles, enumeration) are kept
    assert decoder(torch.randn(4, 5, 10)).shape == (4, 5, params_per_pixel * shape[0], *shape[1:])
    out.sum().backward()
    assert all(p.grad is not None for p in decoder.parameters())


def test_the_64_pixel_network_is_burgess_et_al():
    encoder = ConvEncoder((1, 64, 64), z_dim=10)
    convs = [m for m in encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == list(LARGE[0]) == [32, 32, 64, 64]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) for m in convs)
    assert encoder.dense[0].in_features == 64 * 4 * 4 and encoder.dense[0].out_features == 256
    assert conv_architecture(28, 28) == SMALL


@pytest.mark.parametrize("height, width", [(30, 30), (28, 26), (2, 2), (66, 64)])
def test_sides_that_do_not_halve_are_one_sentence(height, width):
    with pytest.raises(PyroVAEError, match="sides must be multiples of"):
        ConvEncoder((1, height, width), z_dim=2)
