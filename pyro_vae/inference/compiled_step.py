"""An SVI step of a compiled ``JitTrace_ELBO`` (or meanfield ELBO) without Pyro's per-step parameter lookups.

``SVI.step`` with ``JitTrace_ELBO`` runs the compiled graph, but around it looks every parameter up in the
param store through Pyro's effect handlers twice a step: once to hand the graph its inputs
(``pyro.ops.jit``), once more to collect what the optimizer steps (``SVI.step``'s parameter trace). On the
default VAE that is about 0.3 to 0.4 ms of a 6.5 ms step on one CPU thread, the largest part of what kept
the training loop above hand-written PyTorch (``benchmarks/svi_vs_pytorch.py``). Once Pyro has compiled
the graph, its inputs are the same parameter tensors step after step, so :class:`CompiledStep` looks them
up once and then does what ``SVI.step`` does, in the same order: the graph's loss and surrogate loss, the
surrogate's backward pass, one optimizer step over the same parameters. The parameters after any number
of steps are bit for bit those of ``SVI.step`` (``tests/training/test_compiled_step.py``). The compiled meanfield ELBO
(:class:`~pyro_vae.inference.elbos.CompiledOnceMeanField_ELBO`) gets the same step: its graph returns one
differentiable loss, whose backward pass its ``loss_and_grads`` takes.

It leans on two attributes of Pyro's JIT that are not public API (``JitTrace_ELBO._loss_and_surrogate_loss``,
``JitTraceMeanField_ELBO._differentiable_loss``, and the compiled function's ``_param_names``); where they
are missing, :meth:`CompiledStep.of` returns None and training goes through ``SVI.step`` as before.
"""
from __future__ import annotations

from typing import Callable, Optional

import pyro
import torch
from pyro.infer import JitTrace_ELBO

from pyro_vae.inference.elbos import CompiledOnceMeanField_ELBO

class CompiledStep:
    """``step(*args)``: one SVI step on the graphs Pyro compiled for ``elbo``; None for arguments it has no
    graph for (the caller then takes ``SVI.step``, which compiles one).

    The parameters are looked up again whenever the param store no longer holds the same tensors under
    their names (a cheap identity check each step), so loading other values in place or replacing a
    parameter cannot leave the step training stale tensors.
    """

    def __init__(self, graphs: dict[int, Callable], names: list[str], optimizer: Callable, *,
                 surrogate: bool = True):
        self.graphs, self.names, self.optimizer = graphs, names, optimizer
        self.surrogate = surrogate  # the graph returns (loss, surrogate loss), else one differentiable loss
        self.params: list[torch.Tensor] = []
        self.param_set: frozenset = frozenset()

    @classmethod
    def of(cls, elbo, optimizer: Callable) -> Optional["CompiledStep"]:
        """The fast step for ``elbo`` once Pyro has compiled it, or None (another ELBO, nothing compiled yet,
        or a Pyro whose JIT keeps its graphs elsewhere)."""
        if type(elbo) is JitTrace_ELBO:
            compiled, surrogate = getattr(elbo, "_loss_and_surrogate_loss", None), True
        elif type(elbo) is CompiledOnceMeanField_ELBO:
            compiled, surrogate = getattr(elbo, "_differentiable_loss", None), False
        else:
            return None
        graphs, names = getattr(compiled, "compiled", None), getattr(compiled, "_param_names", None)
        if not isinstance(graphs, dict) or not graphs or not isinstance(names, list):
            return None
        # Pyro keys a graph by the number of positional arguments and the keyword arguments (here only the
        # ids of the model and guide); two graphs for the same number of arguments would be ambiguous.
        by_count: dict[int, Callable] = {}
        for key, graph in graphs.items():
            count = key[0]
            if count in by_count:
                return None
            by_count[count] = graph
        return cls(by_count, list(names), optimizer, surrogate=surrogate)

    def _look_up_parameters(self) -> None:
        store = pyro.get_param_store()
        self.params = [store[name].unconstrained() for name in self.names]
        self.param_set = frozenset(self.params)

    def _parameters_current(self) -> bool:
        stored = dict(pyro.get_param_store().named_parameters())
        return len(self.params) == len(self.names) and all(
            stored.get(name) is param for name, param in zip(self.names, self.params))

    def __call__(self, *args: torch.Tensor) -> Optional[float]:
        graph = self.graphs.get(len(args))
        if graph is None:
            return None
        if not self._parameters_current():
            self._look_up_parameters()
        if self.surrogate:
            loss, surrogate_loss = graph(*self.params, *args)
            surrogate_loss.backward()
        else:
            loss = graph(*self.params, *args)
            loss.backward()
        self.optimizer(self.param_set)
        return loss.item()
