"""Householder Sylvester flow steps whose parameters are functions of a context (van den Berg, Hasenclever,
Tomczak & Welling 2018, "Sylvester normalizing flows for variational inference"), as a Pyro conditional transform.

For a row vector z of D numbers (the convention of Pyro's transforms),

    f(z) = z + tanh(z Q S + b) R Q^T,    Q = prod_h (I - 2 v_h v_h^T / |v_h|^2),

R and S upper triangular with diagonals tanh(r) and tanh(s). The Jacobian is I + Q S diag(h') R Q^T, whose
determinant is det(I + diag(h') R Q^T Q S) = det(I + diag(h') R S) = prod_i (1 + h'_i R_ii S_ii) (Sylvester's
determinant identity; R S is upper triangular), and |R_ii S_ii| < 1 keeps every step invertible.

Pyro's own ``Sylvester`` (1.9) computes z + tanh(z S Q^T + b) Q R with the same log-determinant, which is that
map's only when Q = I: its determinant is det(I + diag(h') Q R S Q^T). ``tests/models/test_flow_vae.py``
compares both with the log-determinant of the whole map's Jacobian computed by autograd; ours agrees, Pyro's
does not, so the ``sylvester-vae`` uses this one. Its parameters also depend on the image, as the paper's do,
where Pyro's are shared by every input.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.nn import DenseNN
from torch.distributions import Transform


def householder_product(vectors: torch.Tensor) -> torch.Tensor:
    """prod_h (I - 2 v_h v_h^T / |v_h|^2) for ``vectors`` of shape (..., H, D): an orthogonal (..., D, D)."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True)
    dim = vectors.shape[-1]
    q = torch.eye(dim, dtype=vectors.dtype, device=vectors.device).expand(vectors.shape[:-2] + (dim, dim))
    for h in range(vectors.shape[-2]):
        v = unit[..., h, :]
        q = q - 2.0 * (q @ v.unsqueeze(-1)) * v.unsqueeze(-2)  # q (I - 2 v v^T)
    return q


def _row_times(z: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """z (..., D) times per-item matrices (batch..., D, E), broadcasting z's leading (particle) dimensions."""
    return (z.unsqueeze(-2) @ matrix).squeeze(-2)


class SylvesterStep(Transform):
    """One step f(z) = z + tanh(z Q S + b) R Q^T with given (batched) Q, R, S, b; see the module docstring. The
    inverse has no closed form: like Pyro's flows it is read from the cache of the last draw."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, q: torch.Tensor, r: torch.Tensor, s: torch.Tensor, b: torch.Tensor):
        super().__init__(cache_size=1)
        self.q, self.r, self.s, self.b = q, r, s, b
        self.qs = q @ s
        self.rqt = r @ q.transpose(-1, -2)

    def _preactivation(self, x: torch.Tensor) -> torch.Tensor:
        return _row_times(x, self.qs) + self.b

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x + _row_times(torch.tanh(self._preactivation(x)), self.rqt)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise KeyError("a Sylvester step has no inverse in closed form: it scores only the draws it made")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        derivative = 1.0 - torch.tanh(self._preactivation(x)).pow(2)
        diagonal = self.r.diagonal(dim1=-2, dim2=-1) * self.s.diagonal(dim1=-2, dim2=-1)
        return torch.log1p(derivative * diagonal).sum(-1)


class ConditionalSylvester(ConditionalTransformModule):
    """A Sylvester step whose Q (``num_householder`` reflections), R, S and b a network computes from the context."""

    def __init__(self, dim: int, context_dim: int, hidden_dims: Sequence[int], num_householder: int):
        super().__init__()
        self.dim, self.num_householder = dim, num_householder
        self.nn = DenseNN(context_dim, list(hidden_dims),
                          param_dims=[dim * dim, dim * dim, dim, dim, dim, num_householder * dim])
        self.register_buffer("upper", torch.triu(torch.ones(dim, dim), diagonal=1))

    def condition(self, context: torch.Tensor) -> SylvesterStep:
        r_full, s_full, r_diag, s_diag, b, v = self.nn(context)
        square = context.shape[:-1] + (self.dim, self.dim)
        r = r_full.reshape(square) * self.upper + torch.diag_embed(torch.tanh(r_diag))
        s = s_full.reshape(square) * self.upper + torch.diag_embed(torch.tanh(s_diag))
        q = householder_product(v.reshape(context.shape[:-1] + (self.num_householder, self.dim)))
        return SylvesterStep(q, r, s, b)
