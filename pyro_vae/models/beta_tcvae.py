"""The beta-TCVAE (Chen et al. 2018): the VAE whose training penalises the total correlation of the code.

The ELBO's KL term, averaged over the data, splits into three (Chen et al., eq. 2):

    E_p(x)[KL(q(z | x) || p(z))] = I_q(x; z) + KL(q(z) || prod_j q(z_j)) + sum_j KL(q(z_j) || p(z_j))
                                   index-code MI   total correlation (TC)    dimension-wise KL

with q(z) = E_p(x)[q(z | x)] the aggregate posterior. beta-TCVAE weights the TC by beta and the other two by
one, so its objective is the ELBO minus (beta - 1) TC:

    maximise  E_q[log p(x | z)] - KL(q(z | x) || p(z)) - (beta - 1) TC.

Written as Pyro code it is the VAE's model with one more factor, ``penalty("total_correlation",
-(beta - 1) * tc)``: Trace_ELBO then maximises exactly that objective, the model reads as the equation, and
the penalty is marked as a training term (:func:`pyro_vae.scaling.penalty`), so that the ELBO and
log-likelihood the library reports are those of the generative model p(z) p(x | z) alone. A scaled site
could not say this (the TC is not the log-density of any one site), and an ELBO subclass would hide the
objective away from the model. Under ``--kl-warmup`` the penalty rises with the KL, so that the weighted KL,
MI + beta TC + dimension-wise KL, warms up as a whole.

The TC of each sampled z_i is estimated by minibatch-weighted sampling (Chen et al., section 4.1) over the
batch of M images, from a data set of N:

    log q(z_i)   ~ logsumexp_m log q(z_i | x_m) - log(N M)
    log q(z_ij)  ~ logsumexp_m log q(z_ij | x_m) - log(N M)
    TC_i         = log q(z_i) - sum_j log q(z_ij)

The model runs the encoder on the batch for the q(z | x_m) of every image (the guide's own parameters; the
same network, so the penalty's gradient reaches the encoder as it should). N is set from the training data
when a run starts (:meth:`initialize`) and kept in the checkpoint. This is the estimator of the paper and of
the authors' code (rtqichen/beta-tcvae); it is biased (by about (d - 1) log N when all q(z | x) agree), a
constant that moves the reported training objective but not its gradient.
"""
from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import finite_number
from pyro_vae.models.vae import VAE
from pyro_vae.scaling import penalty

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def total_correlation(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, dataset_size: int) -> torch.Tensor:
    """The minibatch-weighted-sampling estimate of log q(z_i) - sum_j log q(z_ij) for every z_i of a batch.

    ``z`` (..., M, d) are the codes drawn from q(z | x_i) (leading particle dimensions allowed); ``loc`` and
    ``scale`` (M, d) the parameters of q(z | x_m) for the M images of the batch. Returns (..., M).
    """
    num_images = loc.shape[-2]
    # log q(z_ij | x_m) for every code i, image m and dimension j: (..., M_i, M_m, d)
    log_q = -0.5 * ((z.unsqueeze(-2) - loc) / scale).pow(2) - scale.log() - LOG_SQRT_2PI
    log_nm = torch.log(torch.as_tensor(dataset_size * num_images, dtype=z.dtype))
    log_q_joint = torch.logsumexp(log_q.sum(-1), dim=-1) - log_nm
    log_q_marginals = (torch.logsumexp(log_q, dim=-2) - log_nm).sum(-1)
    return log_q_joint - log_q_marginals


class BetaTCVAE(VAE):
    batch_coupled = True  # the TC estimate runs over the batch's images
    option_rules = {"beta": (lambda v: finite_number(v) and v >= 0, "a finite number >= 0 (1 is the VAE)")}

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", beta: float = 6.0, **pixels):
        """``beta`` weights the total correlation (6 by default, within the 1-10 of Chen et al. and
        disentanglement_lib's study); beta = 1 is the VAE.
        ``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, z_dim, hidden_dims, activation, **pixels)
        if not beta >= 0:
            raise PyroVAEError(f"beta weights the total correlation and must be non-negative, got {beta}")
        self.beta = float(beta)
        # N of the minibatch-weighted estimate: the number of training images, set by initialize()
        self.register_buffer("dataset_size", torch.tensor(1, dtype=torch.long))

    def config(self) -> dict:
        return {**super().config(), "beta": self.beta}

    def initialize(self, images: torch.Tensor, generator: torch.Generator) -> None:
        self.dataset_size.fill_(len(images))

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            self.observe(self.decoder(z), x)
            if self.beta != 1:  # a function: computed in training only, never while the model is measured
                penalty("total_correlation", lambda: -(self.beta - 1) * self.batch_total_correlation(x, z))

    def batch_total_correlation(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The minibatch-weighted TC estimate at each code z_i, from the encoder's q(z | x_m) over the batch x."""
        pyro.module("encoder", self.encoder)
        loc, scale = self.encoder(x)
        return total_correlation(z, loc, scale, self.dataset_size)
