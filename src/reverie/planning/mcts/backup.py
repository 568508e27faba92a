"""Backing a simulation's value up its root-to-leaf path, every row and level at once.

Paths come from ``SelectionCache.descend``: level-major flat node indices
(entry ``b * N + n`` of a ``[B, N]`` field viewed as ``[B * N]``), root
first, and a row that stopped before the last level repeats its last node.
The repeats are what make every per-level step branch-free: an edge whose
child equals its parent is off the path, and it gets reward 0 and discount 1,
so the return recursion carries the leaf value through it unchanged, and the
scatters add 0 there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tree import DISCOUNT, REWARD, VALUE_SUM, VISITS, Tree


def path_mask(path: Tensor) -> Tensor:
    """The entries of ``path`` [L + 1, B] on each row's path (a prefix of each column): [L + 1, B] bool."""
    on_path = torch.empty(path.shape, dtype=torch.bool, device=path.device)
    on_path[0] = True
    torch.ne(path[1:], path[:-1], out=on_path[1:])
    return on_path


def backup(tree: Tree, path: Tensor, edges: Tensor, on_path: Tensor, value: Tensor) -> Tensor:
    """Back ``value`` [B] (the value of each row's last path node) up to the roots; return which
    rows' min-max bounds changed: [B] bool.

    ``path`` [L + 1, B] flat node indices (see the module docstring), ``on_path``
    [L + 1, B] its ``path_mask``, ``edges`` [L, B] the index of each step's edge
    (parent ``path[l]``, the action to ``path[l + 1]``) in ``tree.edge_stats``
    viewed 1-D at channel 0, any valid index off the path. The returns
    ``G_l = r_l + discount_l * G_{l+1}`` need one ``addcmul`` per level;
    everything else is one gather or one ``scatter_add_`` per field for the
    whole path. Each path edge's Q (with the child's updated mean) then widens
    the row's min-max bounds (MuZero's MinMaxStats, over edges only: the root
    has no incoming edge).
    """
    actions = tree.num_actions
    on_edge = on_path[1:]
    stats = tree.edge_stats.view(-1)
    rewards = torch.where(on_edge, stats.take(edges + REWARD * actions), 0.0)
    discounts = torch.where(on_edge, stats.take(edges + DISCOUNT * actions), 1.0)

    returns = torch.empty(path.shape, dtype=value.dtype, device=value.device)
    returns[-1] = value
    for level in range(edges.shape[0] - 1, -1, -1):
        # off the path r = 0, discount = 1: 0 + 1 * G is G exactly, so the leaf value passes through
        torch.addcmul(rewards[level], discounts[level], returns[level + 1], out=returns[level])

    nodes, counted = path.view(-1), on_path.view(-1)
    tree.node_visits.view(-1).scatter_add_(0, nodes, counted.long())
    tree.value_sums.view(-1).scatter_add_(0, nodes, torch.where(counted, returns.view(-1), 0.0))

    # the same updates on the parents' copies: value sums and visits in one scatter
    copies = torch.stack([edges + VALUE_SUM * actions, edges + VISITS * actions])  # [2, L, B]
    increments = torch.stack([torch.where(on_edge, returns[1:], 0.0), on_edge.to(returns.dtype)])
    stats.scatter_add_(0, copies.view(-1), increments.view(-1))

    sums, visits = stats.take(copies).unbind(0)
    q = torch.addcmul(rewards, discounts, sums / visits.clamp(min=1))
    low = q.masked_fill(~on_edge, float("inf")).amin(dim=0)
    high = q.masked_fill(~on_edge, float("-inf")).amax(dim=0)
    changed = (low < tree.q_min) | (high > tree.q_max)
    torch.minimum(tree.q_min, low, out=tree.q_min)
    torch.maximum(tree.q_max, high, out=tree.q_max)
    return changed
