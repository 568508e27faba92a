"""What goes into and comes out of the tree search.

The search talks to a learned model through two things only: a ``RootOutput``
(the representation and prediction networks applied to the observations, one
row per root) and a ``RecurrentFn`` (the dynamics and prediction networks,
applied to a batch of ``[B]`` embeddings and ``[B]`` actions at once). The
shapes use B for the batch of roots and K for the number of discrete actions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

from torch import Tensor

# embeddings are reverie's one State type: a tensor or a (nested) dict of tensors, each leaf [B, ...]
from reverie.models.state import State

if TYPE_CHECKING:  # the tree imports these types; the import is only for annotations
    from .tree import Tree



@dataclass(frozen=True)
class RootOutput:
    """The model's prediction at the roots."""

    prior_logits: Tensor
    """[B, K] policy logits at the root."""
    value: Tensor
    """[B] the model's value estimate of the root (floating point; sets the tree's dtype)."""
    embedding: State
    """The root embedding, a pytree whose leaves are [B, ...]."""


@dataclass(frozen=True)
class RecurrentOutput:
    """The model's prediction for one transition from every row's selected node."""

    reward: Tensor
    """[B] reward of the transition."""
    discount: Tensor
    """[B] discount of the transition (gamma, or 0 where the episode ends)."""
    prior_logits: Tensor
    """[B, K] policy logits at the new node."""
    value: Tensor
    """[B] value estimate of the new node."""


#: ``recurrent_fn(embedding leaves [B, ...], action [B] int64) -> (RecurrentOutput, next embedding leaves [B, ...])``.
RecurrentFn = Callable[[State, Tensor], tuple[RecurrentOutput, State]]


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"MCTSSettings.{name} must be a finite number, got {value!r}.")
    return float(value)


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"MCTSSettings.{name} must be an integer >= {minimum}, got {value!r}.")
    return value


@dataclass(frozen=True)
class MCTSSettings:
    """Settings of ``search``; the defaults are MuZero's (PUCT) and Gumbel MuZero's published values."""

    algorithm: Literal["puct", "gumbel"] = "puct"
    """"puct": MuZero (Schrittwieser et al. 2020); "gumbel": Gumbel MuZero (Danihelka et al. 2022)."""
    num_simulations: int = 50
    """Simulations per search; each makes exactly one ``recurrent_fn`` call for all B roots."""
    max_depth: int | None = None
    """Nodes deeper than this are never created (the root has depth 0); a simulation that
    reaches a node at this depth backs up that node's model value again instead of expanding."""
    pb_c_init: float = 1.25
    """MuZero's c1: the base weight of the prior term in the PUCT score."""
    pb_c_base: float = 19652.0
    """MuZero's c2: the visit count at which the prior weight starts to grow logarithmically."""
    q_transform: Literal["min_max", "parent_and_siblings"] = "min_max"
    """How PUCT scales Q to [0, 1]: "min_max" by the smallest and largest Q backed up anywhere in the
    row's tree (MuZero's MinMaxStats); "parent_and_siblings" per node, by the min and max over the
    node's value and its visited children's Q (mctx's ``qtransform_by_parent_and_siblings``).
    Gumbel always rescales its completed Q per node (see ``gumbel``)."""
    dirichlet_alpha: float = 0.25
    """Concentration of the Dirichlet noise added to the root prior (PUCT, explore only)."""
    dirichlet_fraction: float = 0.25
    """Weight of that noise: prior <- (1 - fraction) * prior + fraction * noise."""
    temperature: float = 1.0
    """PUCT acting with explore: sample from visits ** (1 / T); T = 0 takes the argmax."""
    max_considered_actions: int = 16
    """Gumbel m: how many root actions sequential halving starts from."""
    gumbel_scale: float = 1.0
    """Scale of the root Gumbel noise (Gumbel, explore only)."""
    c_visit: float = 50.0
    """Gumbel sigma: sigma(q) = (c_visit + max_b N(b)) * c_scale * q for q rescaled to [0, 1]."""
    c_scale: float = 0.1
    """Gumbel sigma's value scale (see c_visit)."""

    def __post_init__(self) -> None:
        if self.algorithm not in ("puct", "gumbel"):
            raise ValueError(f"MCTSSettings.algorithm must be 'puct' or 'gumbel', got {self.algorithm!r}.")
        _integer("num_simulations", self.num_simulations, 1)
        if self.q_transform not in ("min_max", "parent_and_siblings"):
            raise ValueError(
                f"MCTSSettings.q_transform must be 'min_max' or 'parent_and_siblings', got {self.q_transform!r}."
            )
        if self.max_depth is not None:
            _integer("max_depth", self.max_depth, 1)
        if _number("pb_c_init", self.pb_c_init) < 0:
            raise ValueError(f"MCTSSettings.pb_c_init must be >= 0, got {self.pb_c_init!r}.")
        if _number("pb_c_base", self.pb_c_base) <= 0:
            raise ValueError(f"MCTSSettings.pb_c_base must be > 0, got {self.pb_c_base!r}.")
        if _number("dirichlet_alpha", self.dirichlet_alpha) <= 0:
            raise ValueError(f"MCTSSettings.dirichlet_alpha must be > 0, got {self.dirichlet_alpha!r}.")
        if not 0.0 <= _number("dirichlet_fraction", self.dirichlet_fraction) <= 1.0:
            raise ValueError(f"MCTSSettings.dirichlet_fraction must lie in [0, 1], got {self.dirichlet_fraction!r}.")
        if _number("temperature", self.temperature) < 0:
            raise ValueError(f"MCTSSettings.temperature must be >= 0, got {self.temperature!r}.")
        _integer("max_considered_actions", self.max_considered_actions, 1)
        if _number("gumbel_scale", self.gumbel_scale) < 0:
            raise ValueError(f"MCTSSettings.gumbel_scale must be >= 0, got {self.gumbel_scale!r}.")
        if _number("c_visit", self.c_visit) < 0:
            raise ValueError(f"MCTSSettings.c_visit must be >= 0, got {self.c_visit!r}.")
        if _number("c_scale", self.c_scale) < 0:
            raise ValueError(f"MCTSSettings.c_scale must be >= 0, got {self.c_scale!r}.")


@dataclass(frozen=True)
class SearchResult:
    """What one ``search`` call returns."""

    action: Tensor
    """[B] int64 the action to take at each root."""
    visit_counts: Tensor
    """[B, K] int64 visit counts of the root's children."""
    policy: Tensor
    """[B, K] the search policy, the training target: PUCT the normalised visit counts;
    Gumbel the improved policy softmax(logits + sigma(completed q)); invalid actions 0."""
    root_value: Tensor
    """[B] the search's value of the root: the mean of all values backed up through it,
    the root's model value included."""
    q_values: Tensor
    """[B, K] root children's Q = r + discount * child value (0 where unvisited)."""
    tree: Tree
    """The whole tree, for inspection."""
    considered: Tensor | None = None
    """[B, K] bool, Gumbel only: the actions sequential halving started from (None for PUCT)."""
