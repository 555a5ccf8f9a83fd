"""A VampPrior with an inverse autoregressive flow guide (Tomczak & Welling 2018's prior, Kingma et al. 2016's
posterior):

    p(z) = (1/K) sum_k N(z; mu(u_k), sigma(u_k)),   p(x | z) = Bernoulli(decoder(z)),
    q(z | x):  z_0 ~ N(mu(x), sigma(x)),   z = f_T(... f_1(z_0; h(x)) ...; h(x))   (``iaf-vae``'s guide).

The prior is ``vampprior``'s mixture over K learned pseudo-inputs u_k, with one difference forced by the flow:
each component is the guide's *base* Gaussian at u_k, N(mu(u_k), sigma(u_k)), not the whole flow posterior
q(z | u_k). The whole posterior's density at a code z needs the flow's inverse for each of the K contexts h(u_k),
T sequential passes of a MADE per dimension (z_dim x T passes for each of K x batch pairs): out of reach at
K = 500. The mixture is still learned through the same encoder and pseudo-inputs, so it is a VampPrior in its
parameters, and the guide keeps the flow's extra freedom. The constructor takes both structures' options
(``num_pseudo_inputs``, ``pseudo_input_init``; ``num_flows``, ``context_dim``, ``flow_hidden_dims``).
"""
from __future__ import annotations

from pyro_vae.models.flow_vae import IAFVAE
from pyro_vae.models.vampprior import VampPriorVAE


class VampPriorIAFVAE(VampPriorVAE, IAFVAE):
    """``vampprior``'s model (the pseudo-inputs' mixture of base Gaussians) and ``iaf-vae``'s guide."""
