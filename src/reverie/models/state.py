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

from collections.abc import Callable, Mapping, Sequence
from typing import TypeGuard, TypeVar, Union

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

#: A model state: one tensor ``[B, ...]`` or a (nested) dict of tensors, each ``[B, ...]``.
State = Union[Tensor, Mapping[str, "State"]]
#: A state of one particular layout: the operations below that keep the structure return the type they are given
#: (a flat ``dict[str, Tensor]`` stays one).
StateT = TypeVar("StateT", bound=State)

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
    "state_entries",
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


def _is_flat(state: State) -> TypeGuard[Mapping[str, Tensor]]:
    # models read their state on every step: a dict skips the slower ABC check, a loop is cheaper than all(...)
    if not (isinstance(state, dict) or isinstance(state, Mapping)):
        return False
    for value in state.values():
        if not isinstance(value, Tensor):
            return False
    return True


def state_entries(state: State) -> Mapping[str, Tensor]:
    """``state`` itself, as the flat dict of tensors ``{key: [B, ...]}`` that a model family keeps (every family in
    reverie does): how a model reads its own entries by key. A bare tensor or a nested dict is a :class:`StateError`."""
    if not _is_flat(state):
        got = (f"entries {sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))} that are not tensors"
               if isinstance(state, Mapping) else f"a {type(state).__name__}")
        raise StateError(f"this model's state is a flat dict of tensors {{key: [B, ...]}}; got {got}")
    return state


def state_batch(state: State) -> tuple[int, torch.device]:
    """Batch size B (the first axis) and device shared by every tensor of ``state``."""
    leaves = state_leaves(state)
    sizes = {x.shape[0] if x.dim() else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise StateError("every tensor of a state needs the same leading batch size B; "
                         f"got leading sizes {sorted(str(s) for s in sizes)}")
    return leaves[0].shape[0], leaves[0].device


def map_state(fn: Callable[[Tensor], Tensor], state: StateT) -> StateT:
    """Apply ``fn`` to every tensor of ``state``."""
    return pytree.tree_map(fn, state)


def stack_states(states: Sequence[StateT], dim: int = 1) -> StateT:
    """Stack ``[B]`` states into ``[B, T]`` (dim=1) or ``[T, B]`` (dim=0), entries matched by key (in any order)."""
    return pytree.tree_map(lambda *xs: torch.stack(xs, dim), *states)


def cat_states(states: Sequence[StateT], dim: int = 0) -> StateT:
    """Concatenate states along an existing batch axis, entries matched by key (in any order)."""
    return pytree.tree_map(lambda *xs: torch.cat(xs, dim), *states)


def flatten_batch(state: StateT, axes: int = 2) -> StateT:
    """Merge the first ``axes`` batch axes into one: ``[B, T, ...]`` -> ``[B * T, ...]``."""
    return map_state(lambda x: x.reshape(-1, *x.shape[axes:]), state)


def take_rows(state: StateT, index: Tensor) -> StateT:
    """Rows ``index [M]`` (long) of the first axis: ``[B, ...]`` -> ``[M, ...]``."""
    return map_state(lambda x: x[index], state)


def where_rows(mask: Tensor, new: StateT, old: StateT) -> StateT:
    """Row-wise choice: ``new`` where ``mask [B]`` is True, else ``old``."""
    return pytree.tree_map(
        lambda a, b: torch.where(mask.view(-1, *[1] * (a.dim() - 1)).to(a.device), a, b), new, old)


def repeat_state(state: StateT, count: int) -> StateT:
    """Repeat each row ``count`` times: ``[B, ...]`` -> ``[B * count, ...]``.

    Row ``b * count + c`` holds copy c of row b, so a flat batch reshapes to
    ``[B, count, ...]``.
    """
    return map_state(lambda x: x.repeat_interleave(count, dim=0), state)


def select_rows(state: StateT, batch: int, count: int, first: int) -> StateT:
    """The first ``first`` copies of every row of a repeated state: ``[B * count, ...]`` -> ``[B * first, ...]``."""
    return map_state(
        lambda x: x.reshape(batch, count, *x.shape[1:])[:, :first].reshape(batch * first, *x.shape[1:]), state)
