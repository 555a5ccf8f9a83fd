"""Convolutional encoders and decoders for images of shape (C, H, W) (issue 11, third piece).

For 64 x 64 images (and larger) the network of Burgess et al. (2018) as disentanglement_lib has it: four
convolutions of 32, 32, 64 and 64 channels, kernel 4, stride 2, then a dense layer of 256 units; the decoder
mirrors it with transposed convolutions. For smaller images (28 x 28, 32 x 32) two convolutions of 32 and
64 channels. Each convolution halves the height and the width (kernel 4, stride 2, padding 1), so the image
sides must be divisible by 2 ** layers (one sentence otherwise).

``--net conv`` builds every built-in structure's encoder, decoder and classifier from these
(:meth:`~pyro_vae.models.base.LatentStructure.make_encoder` and its siblings), and a structure file can call
those methods or use the classes directly: ``ConvEncoder`` gives (loc, scale) of a diagonal Gaussian,
``ConvDecoder`` the likelihood's parameters per pixel, ``params_per_pixel`` of them stacked on the channel
axis (so that, flattened, all first parameters come before all second ones), ``ConvNet`` any number of outputs.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.errors import PyroVAEError
from pyro_vae.networks import concat

#: (channels of each convolution, units of the dense layer) by image size
LARGE = ((32, 32, 64, 64), 256)  # Burgess et al. 2018 / disentanglement_lib, for sides >= 64
SMALL = ((32, 64), 256)  # 28 x 28, 32 x 32
SCALE_FLOOR = 1e-4


def conv_architecture(height: int, width: int) -> tuple[Sequence[int], int]:
    """The (channels, dense units) for images of ``height`` x ``width``, after checking the sides divide."""
    channels, dense = LARGE if min(height, width) >= 64 else SMALL
    step = 2 ** len(channels)
    if height % step or width % step or min(height, width) < step:
        raise PyroVAEError(f"the convolutional network halves the image {len(channels)} times, so its sides must be "
                           f"multiples of {step}; {height} x {width} is not (resize with --image-size)")
    return channels, dense


class ConvNet(nn.Module):
    """x -> ``out_dim`` numbers: the convolutions, then a dense layer of ``dense`` units (ReLU) and a linear
    output layer. ``x`` is flat (..., C * H * W) or images (N, C, H, W); leading dimensions are kept.
    ``extra_dim`` more features (e.g. a one-hot label, possibly enumerated) join the convolutions' output
    before the dense layer, broadcast as :func:`pyro_vae.networks.concat` does: ``net(x, label)``."""

    def __init__(self, image_shape: Sequence[int], out_dim: int, extra_dim: int = 0):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (c, h, w)
        channels, dense = conv_architecture(h, w)
        layers, previous = [], c
        for out in channels:
            layers += [nn.Conv2d(previous, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            previous = out
        self.convs = nn.Sequential(*layers)
        flat = previous * (h // 2 ** len(channels)) * (w // 2 ** len(channels))
        self.dense = nn.Sequential(nn.Linear(flat + extra_dim, dense), nn.ReLU(), nn.Linear(dense, out_dim))

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3] if x.dim() >= 4 and x.shape[-3:] == self.image_shape else x.shape[:-1]
        features = self.convs(x.reshape(-1, *self.image_shape)).flatten(1)
        features = features.reshape(*batch, features.shape[-1])
        return self.dense(concat(features, *extra) if extra else features)


class ConvEncoder(ConvNet):
    """x (N, C, H, W) or flat (N, C * H * W) -> (loc, scale) of q(z | x), each (N, z_dim)."""

    def __init__(self, image_shape: Sequence[int], z_dim: int, extra_dim: int = 0):
        super().__init__(image_shape, 2 * z_dim, extra_dim)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw_scale = super().forward(x, *extra).chunk(2, dim=-1)
        return loc, softplus(raw_scale) + SCALE_FLOOR


class ConvDecoder(nn.Module):
    """z (..., z_dim) -> the likelihood's parameters (..., params_per_pixel * C, H, W); leading batch
    dimensions (e.g. Pyro's particle and enumeration dimensions) are kept."""

    def __init__(self, z_dim: int, image_shape: Sequence[int], params_per_pixel: int = 1, flat: bool = False):
        """``flat``: return (..., params_per_pixel * C * H * W), parameter by parameter (all the first
        parameters of the C * H * W pixels, then all the second), as :class:`~pyro_vae.likelihoods.PixelLikelihood`
        takes them."""
        super().__init__()
        c, h, w = image_shape
        channels, dense = conv_architecture(h, w)
        self.start = (channels[-1], h // 2 ** len(channels), w // 2 ** len(channels))
        self.dense = nn.Sequential(nn.Linear(z_dim, dense), nn.ReLU(),
                                   nn.Linear(dense, channels[-1] * self.start[1] * self.start[2]), nn.ReLU())
        layers = []
        reversed_channels = list(reversed(channels))
        for i, out in enumerate(reversed_channels[1:] + [params_per_pixel * c]):
            layers.append(nn.ConvTranspose2d(reversed_channels[i], out, kernel_size=4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)
        self.output_shape = (params_per_pixel * c, h, w)
        self.flat = flat

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        hidden = self.dense(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        outputs = self.deconvs(hidden)
        return outputs.reshape(*batch, -1) if self.flat else outputs.reshape(*batch, *self.output_shape)
