"""The Gaussian-mixture VAE: a discrete cluster c above a continuous code z (Dilokthanakul et al. 2016;
the factorisation of Rui Shu's GMVAE).

    p(c) = Categorical(1/K),  p(z | c) = N(mu_c, sigma_c),  p(x | z) = Bernoulli(decoder(z))
    q(c | x) = Categorical(classifier(x)),  q(z | x, c) = N(mu(x, c), sigma(x, c))

The guide marks c for parallel enumeration, so ``TraceEnum_ELBO`` computes the ELBO as the exact sum over
the K clusters of q(c | x) times the (reparameterized) ELBO given c: no score-function gradient at all.
p(c) is uniform, as in Dilokthanakul et al.: with learned weights the prior followed the guide onto one
cluster (0.87 of its mass after 5 epochs, every test image on it).

Five remedies for the clusters' degeneracy (every image in one cluster), all off by default; what each does is
measured in docs/semi-supervised.md:

* ``min_cluster_info=LAMBDA``: Dilokthanakul et al.'s minimum information constraint on the cluster term,
  max(LAMBDA, KL(q(c | x) || p(c))) in place of the KL (the batch's mean, as the free bits of Kingma et al. 2016):
  below LAMBDA nats q(c | x) may grow confident at no cost. A training penalty (measurements leave it out).
* ``kmeans_init=true``: a data-dependent start, as the Bernoulli mixture's: k-means on the training pixels, then
  q(c | x) trained for a few hundred steps to predict each image's k-means cluster, before the first SVI step.
* ``cluster_information=W``: W times the minibatch estimate of the mutual information I(x; c) under q added to the
  training objective (a penalty). The ELBO's cluster term is -E_x KL(q(c | x) || p(c)) = -I(x; c) -
  KL(q(c) || p(c)), q(c) the images' average of q(c | x) (Hoffman & Johnson 2016): it charges log K nats per image
  alike for every image in one cluster (all in the second part) and for confident, balanced clusters (all in the
  first), so nothing in it prefers the clusters; with W = 1 the term left is -KL(q(c) || p(c)), which charges
  only the clusters' imbalance (the information-preferring reading of InfoVAE, Zhao et al. 2017).
* ``pretrain_epochs=N`` (with ``encoder_sees_cluster=false``): VaDE's start (Jiang et al. 2017): the encoder's mean
  and the decoder trained as a plain autoencoder for N epochs (reconstruction only), a Gaussian mixture with
  diagonal covariances fitted to the codes of (up to 10,000 of) the training images, p(z | c) set to its components
  and q(c | x) trained to predict each image's most probable component, before the first SVI step.
* ``prior_covariance=full``: each p(z | c) a Gaussian with a full covariance (a learned lower-triangular scale per
  cluster) instead of a diagonal one; with ``pretrain_epochs`` the start's mixture is fitted with full covariances too.
* ``encoder_sees_cluster=false``, a change of the guide: draws z from q(z | x), as VaDE's guide does
  (Jiang et al. 2017), instead of q(z | x, c). Given c the encoder can move z into any cluster's Gaussian and the
  decoder, which sees z only, can draw any image from each: every cluster then explains every image and q(c | x)
  has no reason to prefer one. Without c, z has one place per image, and the clusters must divide z-space.
"""
from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from pyro_vae.errors import PyroVAEError
from pyro_vae.models.base import LatentStructure, finite_number, positive_int, whole_number
from pyro_vae.scaling import penalty


class ClusterGaussians(nn.Module):
    """One-hot c -> p(z | c): row c of a learned table of means and scales (``full=False``: a diagonal Gaussian),
    or of means and lower-triangular scale matrices (``full=True``: a Gaussian with a full covariance; the diagonal
    kept positive by a softplus, as the diagonal scales are)."""

    def __init__(self, num_components: int, z_dim: int, full: bool = False):
        super().__init__()
        self.full = full
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.raw_scales = nn.Parameter(torch.zeros(num_components, z_dim))
        if full:
            self.raw_tril = nn.Parameter(torch.zeros(num_components, z_dim, z_dim))

    def forward(self, c: torch.Tensor) -> dist.TorchDistribution:
        scales = softplus(c @ self.raw_scales) + 1e-3
        if not self.full:
            return dist.Normal(c @ self.locs, scales).to_event(1)
        tril = torch.einsum("...k,kij->...ij", c, self.raw_tril.tril(-1)) + torch.diag_embed(scales)
        return dist.MultivariateNormal(c @ self.locs, scale_tril=tril)

    @torch.no_grad()
    def set_components(self, means: torch.Tensor, covariances: torch.Tensor) -> None:
        """Set every p(z | c) to a given mean and covariance (a (K, D) table of variances if diagonal, else (K, D, D)
        matrices), the scale diagonal floored at 2e-3."""
        self.locs.copy_(means)
        if self.full:
            tril = torch.linalg.cholesky(covariances)
            self.raw_tril.copy_(tril.tril(-1))
            diagonal = tril.diagonal(dim1=-2, dim2=-1)
        else:
            diagonal = covariances.sqrt()
        scales = diagonal.clamp(min=2e-3) - 1e-3  # softplus(raw) + 1e-3
        self.raw_scales.copy_(scales + torch.log(-torch.expm1(-scales)))  # softplus's inverse


class GMVAE(LatentStructure):
    code_site = "z"
    default_elbo = "enum"
    option_rules = {"min_cluster_info": (lambda v: finite_number(v) and v >= 0, "a finite number of nats >= 0"),
                    "cluster_information": (lambda v: finite_number(v) and v >= 0, "a finite number >= 0"),
                    "pretrain_epochs": (lambda v: whole_number(v) and v >= 0, "a whole number of epochs >= 0"),
                    "prior_covariance": (lambda v: v in ("diag", "full"), "'diag' or 'full'")}

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden_dims: Sequence[int] = (200, 200),
                 activation: str = "relu", num_components: int = 10, min_cluster_info: float = 0.0,
                 kmeans_init: bool = False, encoder_sees_cluster: bool = True, cluster_information: float = 0.0,
                 pretrain_epochs: int = 0, prior_covariance: str = "diag", **pixels):
        """``pixels``: the image shape, likelihood and network of :class:`~pyro_vae.models.base.LatentStructure`."""
        super().__init__(x_dim, **pixels)
        self.z_dim, self.hidden_dims, self.activation = z_dim, tuple(hidden_dims), activation
        self.num_components = positive_int("num_components", num_components)
        self.check_options({"min_cluster_info": min_cluster_info, "cluster_information": cluster_information,
                            "prior_covariance": prior_covariance})
        self.min_cluster_info, self.kmeans_init = float(min_cluster_info), bool(kmeans_init)
        self.cluster_information = float(cluster_information)
        self.prior_covariance = prior_covariance
        self.prior_z = ClusterGaussians(self.num_components, z_dim, full=prior_covariance == "full")
        self.decoder = self.make_decoder(z_dim, tuple(reversed(self.hidden_dims)), activation)
        self.classifier = self.make_classifier(self.hidden_dims, self.num_components, activation)
        self.encoder_sees_cluster = bool(encoder_sees_cluster)
        self.pretrain_epochs = int(pretrain_epochs)
        if self.pretrain_epochs and self.encoder_sees_cluster:
            raise PyroVAEError("the model option pretrain_epochs (VaDE's autoencoder start) needs "
                               "encoder_sees_cluster=false: the autoencoder's codes cannot depend on a cluster that "
                               "is not chosen yet")
        if self.pretrain_epochs and self.kmeans_init:
            raise PyroVAEError("the model options pretrain_epochs and kmeans_init are two different starts; "
                               "choose one")
        self.encoder = self.make_encoder(self.hidden_dims, z_dim, activation,
                                         extra_dim=self.num_components if self.encoder_sees_cluster else 0)

    def config(self) -> dict:
        return {**self.image_config(), "z_dim": self.z_dim, "hidden_dims": list(self.hidden_dims),
                "activation": self.activation, "num_components": self.num_components,
                "min_cluster_info": self.min_cluster_info, "kmeans_init": self.kmeans_init,
                "encoder_sees_cluster": self.encoder_sees_cluster, "cluster_information": self.cluster_information,
                **({"pretrain_epochs": self.pretrain_epochs} if self.pretrain_epochs else {}),
                **({"prior_covariance": "full"} if self.prior_covariance == "full" else {})}

    def model(self, x):
        x = self.check_batch(x)
        pyro.module("prior_z", self.prior_z)
        pyro.module("decoder", self.decoder)
        # (before the plate: both are terms of the whole batch)
        if self.min_cluster_info:
            penalty("minimum_cluster_information", lambda: self._free_cluster_information(x))
        if self.cluster_information:
            penalty("cluster_information", lambda: self.cluster_information * self._mutual_information(x))
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=x.new_zeros(self.num_components)))
            z = pyro.sample("z", self.prior_z(c))
            self.observe(self.decoder(z), x)

    def _mutual_information(self, x: torch.Tensor) -> torch.Tensor:
        """The batch's I(x; c) under q, summed over its images: sum_x KL(q(c | x) || q(c)), q(c) their average."""
        log_q = torch.log_softmax(self.classifier(x), -1)
        log_marginal = torch.logsumexp(log_q, 0) - math.log(x.shape[0])
        return (log_q.exp() * (log_q - log_marginal)).sum()

    def _free_cluster_information(self, x: torch.Tensor) -> torch.Tensor:
        """KL - max(LAMBDA, KL) for the batch, KL the mean of KL(q(c | x) || p(c)) over its images: added to the ELBO,
        which holds -KL, it leaves -max(LAMBDA, KL)."""
        log_q = torch.log_softmax(self.classifier(x), -1)
        kl = (log_q.exp() * (log_q + math.log(self.num_components))).sum(-1).mean()
        return x.shape[0] * (kl - torch.clamp(kl, min=self.min_cluster_info))

    def guide(self, x):
        x = self.check_batch(x)
        pyro.module("classifier", self.classifier)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.OneHotCategorical(logits=self.classifier(x)), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(*(self.encoder(x, c) if self.encoder_sees_cluster else self.encoder(x)))
                        .to_event(1))

    @torch.no_grad()
    def cluster(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable cluster under q(c | x)."""
        return self.classifier(self.check_batch(x)).argmax(-1)

    @torch.no_grad()
    def initialize(self, images: torch.Tensor, generator: torch.Generator) -> None:
        """The start the options ask for, before the first SVI step: with ``kmeans_init`` k-means on (up to 10,000
        of) the training images' pixels, with ``pretrain_epochs`` VaDE's autoencoder and Gaussian mixture (see the
        module's docstring); then q(c | x) trained to predict each image's cluster (300 Adam steps of cross-entropy
        on batches of 100), so that the clusters start apart. Without either, nothing."""
        if not (self.kmeans_init or self.pretrain_epochs):
            return
        keep = torch.randperm(len(images), generator=generator)[:10_000]
        x = images[keep.to(images.device)].flatten(1).to(self.device)
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        if self.pretrain_epochs:
            clusters = self._autoencoder_start(images.flatten(1), x, generator, seed)
        else:
            from sklearn.cluster import KMeans

            clusters = torch.as_tensor(KMeans(self.num_components, n_init=3, random_state=seed)
                                       .fit_predict(x.cpu().numpy()), device=self.device).long()
        optimizer = torch.optim.Adam(self.classifier.parameters(), lr=1e-3)
        with torch.enable_grad():
            for _ in range(300):
                index = torch.randint(len(x), (100,), generator=generator).to(self.device)
                loss = torch.nn.functional.cross_entropy(self.classifier(x[index]), clusters[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    def _autoencoder_start(self, images: torch.Tensor, x: torch.Tensor, generator: torch.Generator,
                           seed: int) -> torch.Tensor:
        """VaDE's start: ``pretrain_epochs`` epochs of the encoder's mean and the decoder as an autoencoder on
        ``images`` (batches of 100, Adam 1e-3, the likelihood's log-probability of each image given its own code),
        then p(z | c) set to a Gaussian mixture fitted to the codes of ``x`` (diagonal, or with full covariances to
        which the encoder's mean variance sigma(x)^2 is added); returns each of them's most probable component."""
        from sklearn.mixture import GaussianMixture

        networks = [self.encoder, self.decoder, self.likelihood]
        optimizer = torch.optim.Adam([p for net in networks for p in net.parameters()], lr=1e-3)
        with torch.enable_grad():
            for _ in range(self.pretrain_epochs):
                for index in torch.randperm(len(images), generator=generator).split(100):
                    batch = images[index.to(images.device)].to(self.device)
                    loss = -self.likelihood(self.decoder(self.encoder(batch)[0])).log_prob(batch).mean()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
        locs, scales = (torch.cat(parts) for parts in zip(*(self.encoder(part) for part in x.split(1000))))
        codes = locs.double().cpu().numpy()
        mixture = GaussianMixture(self.num_components, covariance_type=self.prior_covariance,
                                  random_state=seed).fit(codes)
        covariances = torch.as_tensor(mixture.covariances_, dtype=torch.get_default_dtype())
        if self.prior_covariance == "full":
            # SVI draws z = mean + sigma * eps: the clusters' covariances get that noise's mean variance. The codes
            # of an autoencoder lie near a few directions in each cluster (covariance eigenvalues down to 1e-5
            # here), where a draw of the untrained sigma (about 0.7) scored -18,000 nats and the first epoch put
            # every image in one cluster.
            covariances = covariances + torch.diag(scales.pow(2).mean(0).cpu().to(covariances.dtype))
        self.prior_z.set_components(torch.as_tensor(mixture.means_, dtype=torch.get_default_dtype()), covariances)
        return torch.as_tensor(mixture.predict(codes), device=self.device).long()
