"""Mixture-of-experts dynamics: E expert MLPs, a router that sends each input to its top k (Switch / GShard).

A multitask world model may keep one dynamics network per kind of world inside one model (ScaleZero's
mixture-of-world-models idea): a linear router reads the dynamics input ``x`` (in TD-MPC2: the latent, the
action and the task embedding), its softmax ``p [N, E]`` ranks the experts, each input goes to its ``k``
best, and the output is the sum of those experts' outputs weighted by their router probabilities
renormalised over the chosen ``k`` (GShard; with ``k = 1`` this is the chosen expert's output alone, which
Switch scales by ``p`` instead: renormalising keeps the output's scale whatever the router's confidence).
Gradients reach the router through those weights.

The experts are evaluated densely, every expert on every input, and the unchosen outputs weighted by zero:
with a handful of experts on a CPU that costs less than gathering the inputs of each expert, and it keeps
every shape static. What the router did comes back as a :class:`Routing`, from which
:func:`load_balance_loss` computes the Switch Transformer's auxiliary loss and :func:`expert_usage` the share
of the assignments each expert received.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reverie.config import ConfigError
from reverie.nn import MLP

__all__ = ["MixtureOfExperts", "RoutedDynamics", "Routing", "expert_usage", "load_balance_loss"]


@dataclass(frozen=True)
class Routing:
    """What the router did for ``N`` inputs."""

    probs: Tensor
    """``[N, E]`` the router's softmax over the experts."""
    dispatch: Tensor
    """``[N, E]`` 1 where the input went to that expert (``k`` ones per row), else 0."""


def load_balance_loss(routing: Routing, weight: Tensor | None = None) -> Tensor:
    """The Switch Transformer's load-balancing loss ``E * sum_i f_i * P_i``: ``f_i`` the share of the
    assignments that went to expert ``i``, ``P_i`` the mean router probability of ``i``. It is 1 when both
    are uniform (``1 / E`` each) and grows as the router favours some experts (up to ``E`` when every input
    goes to one expert with probability 1); gradients flow through ``P`` only (``f`` counts choices).

    ``weight [N]``: how much each input counts (0 leaves it out: a transition across an episode boundary).
    """
    experts = routing.probs.shape[-1]
    w = torch.ones_like(routing.probs[:, 0]) if weight is None else weight.to(routing.probs.dtype)
    dispatch = routing.dispatch.detach() * w[:, None]
    f = dispatch.sum(0) / dispatch.sum().clamp_min(1e-12)                            # [E]
    p = (routing.probs * w[:, None]).sum(0) / w.sum().clamp_min(1e-12)               # [E]
    return experts * (f * p).sum()


def expert_usage(routing: Routing, weight: Tensor | None = None) -> Tensor:
    """``[E]``: the share of the (weighted) assignments each expert received; sums to 1 (0s with no weight)."""
    dispatch = routing.dispatch if weight is None else routing.dispatch * weight[:, None].to(routing.dispatch.dtype)
    return dispatch.sum(0) / dispatch.sum().clamp_min(1e-12)


class MixtureOfExperts(nn.Module):
    """``E`` MLPs ``[..., in] -> [..., units]`` (two hidden layers) behind a top-``k`` linear router (see the
    module docstring)."""

    def __init__(self, in_dim: int, units: int, experts: int, top_k: int):
        super().__init__()
        if experts < 2:
            raise ConfigError(f"a mixture of experts needs at least 2 experts; got {experts}")
        if not 1 <= top_k <= experts:
            raise ConfigError(f"model.top_k must be in [1, model.experts={experts}]; got {top_k}")
        self.router = nn.Linear(in_dim, experts)
        self.experts = nn.ModuleList([MLP(in_dim, None, units, 2) for _ in range(experts)])
        self.top_k = top_k
        self.out_dim = units

    def route(self, x: Tensor) -> tuple[Tensor, Routing]:
        """``x [N, in]`` -> (gates ``[N, E]``: the weight of each expert's output, 0 unless chosen; the routing)."""
        probs = torch.softmax(self.router(x).float(), -1)                                 # [N, E]
        top, index = probs.topk(self.top_k, -1)                                         # [N, k]
        gates = torch.zeros_like(probs).scatter(-1, index, top / top.sum(-1, keepdim=True))
        dispatch = torch.zeros_like(probs).scatter(-1, index, 1.0)
        return gates, Routing(probs, dispatch)

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        """``x [..., in]`` -> (``[..., units]``, the routing of the ``N = prod(...)`` inputs)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])                                                # [N, in]
        gates, routing = self.route(flat)
        outputs = torch.stack([expert(flat) for expert in self.experts], 1)              # [N, E, units]
        mixed = (gates.to(outputs.dtype)[..., None] * outputs).sum(1)                    # [N, units]
        return mixed.reshape(*lead, -1), routing


class RoutedDynamics(nn.Module):
    """A :class:`MixtureOfExperts` followed by the model's output layer ``head``: ``x -> (head(moe(x)), routing)``."""

    def __init__(self, in_dim: int, units: int, experts: int, top_k: int, head: nn.Module):
        super().__init__()
        self.moe = MixtureOfExperts(in_dim, units, experts, top_k)
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Routing]:
        hidden, routing = self.moe(x)
        return self.head(hidden), routing
