"""The one state type of reverie: a pytree of tensors that share their leading batch axes.

A world model's state is whatever the model needs to carry (an RSSM's
``deter``/``stoch``, an ensemble's particles, a MuZero latent, later a
transformer's cache); models, planners, behaviour learners and analysis
only pass it around, slice it along the batch axes and hand it back. It is a
tensor or a (nested) dict of tensors, every leaf ``[B, ...]`` for one step or
``[B, T, ...]`` for a sequence. These functions are the only operations the
rest of reverie performs on a state.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

#: A model state: one tensor ``[B, ...]`` or a (nested) dict of tensors, each ``[B, ...]``.
State = Union[Tensor, Mapping[str, "State"]]

__all__ = [
    "State",
    "StateError",
    "cat_states",
    "flatten_batch",
    "map_state",
    "repeat_state",
    "select_rows",
    "stack_states",
    "state_batch",
    "state_leaves",
    "take_rows",
    "where_rows",
]


class StateError(ValueError):
    """A value that is not a state, or whose leaves disagree on the batch size."""


def state_leaves(state: State) -> list[Tensor]:
    """All tensors of a state, in a fixed order."""
    leaves = pytree.tree_leaves(state)
    if not leaves or not all(isinstance(x, Tensor) for x in leaves):
        raise StateError("a state must be a tensor [B, ...] or a dict of tensors each [B, ...]; "
                         f"got {type(state).__name__}")
    return leaves


def state_batch(state: State) -> tuple[int, torch.device]:
    """Batch size B (the first axis) and device shared by every tensor of ``state``."""
    leaves = state_leaves(state)
    sizes = {x.shape[0] if x.dim() else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise StateError("every tensor of a state needs the same leading batch size B; "
                         f"got leading sizes {sorted(str(s) for s in sizes)}")
    return leaves[0].shape[0], leaves[0].device


def map_state(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of ``state``."""
    return pytree.tree_map(fn, state)


def stack_states(states: Sequence[State], dim: int = 1) -> State:
    """Stack ``[B]`` states into ``[B, T]`` (dim=1) or ``[T, B]`` (dim=0), entries matched by key (in any order)."""
    return pytree.tree_map(lambda *xs: torch.stack(xs, dim), *states)


def cat_states(states: Sequence[State], dim: int = 0) -> State:
    """Concatenate states along an existing batch axis, entries matched by key (in any order)."""
    return pytree.tree_map(lambda *xs: torch.cat(xs, dim), *states)


def flatten_batch(state: State, axes: int = 2) -> State:
    """Merge the first ``axes`` batch axes into one: ``[B, T, ...]`` -> ``[B * T, ...]``."""
    return map_state(lambda x: x.reshape(-1, *x.shape[axes:]), state)


def take_rows(state: State, index: Tensor) -> State:
    """Rows ``index [M]`` (long) of the first axis: ``[B, ...]`` -> ``[M, ...]``."""
    return map_state(lambda x: x[index], state)


def where_rows(mask: Tensor, new: State, old: State) -> State:
    """Row-wise choice: ``new`` where ``mask [B]`` is True, else ``old``."""
    return pytree.tree_map(
        lambda a, b: torch.where(mask.view(-1, *[1] * (a.dim() - 1)).to(a.device), a, b), new, old)


def repeat_state(state: State, count: int) -> State:
    """Repeat each row ``count`` times: ``[B, ...]`` -> ``[B * count, ...]``.

    Row ``b * count + c`` holds copy c of row b, so a flat batch reshapes to
    ``[B, count, ...]``.
    """
    return map_state(lambda x: x.repeat_interleave(count, dim=0), state)


def select_rows(state: State, batch: int, count: int, first: int) -> State:
    """The first ``first`` copies of every row of a repeated state: ``[B * count, ...]`` -> ``[B * first, ...]``."""
    return map_state(
        lambda x: x.reshape(batch, count, *x.shape[1:])[:, :first].reshape(batch * first, *x.shape[1:]), state)
