"""Backing a simulation's value up its root-to-leaf path, every row and level at once.

Paths come from ``SelectionCache.extend``: level-major flat node indices
(entry ``b * N + n`` of a ``[B, N]`` field viewed as ``[B * N]``), root
first, and a row whose path is shorter than the others repeats its last node.
The repeats are what make every step branch-free. A repeated edge (child =
parent) is off the path: it gets reward 0 and discount 1, so the return
recursion carries the leaf value through it unchanged, and the scatters add 0
there. And it is a copy of the row's last path edge (``edges`` holds the
child's incoming edge), so minima and maxima over all entries are those over
the path. The masks are float products, not where(): exact for finite
statistics, and much faster than selecting on bool masks on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .tree import VALUE_SUM, VISITS, Tree


def backup(
    tree: Tree, path: Tensor, on_path: Tensor, value: Tensor, edges: Tensor, reward: Tensor, discount: Tensor
) -> Tensor:
    """Back ``value`` [B] (the value of each row's last path node) up to the roots; return which
    rows' min-max bounds changed: [B] bool.

    ``path`` [L + 1, B] flat node indices (see the module docstring), ``on_path``
    [L + 1, B] bool its entries before the first repeat; for the edge into each
    ``path[l + 1]``, [L, B] each: ``edges`` its index in ``tree.edge_stats``
    viewed 1-D at channel 0, ``reward`` and ``discount`` (``SelectionCache.edges``).
    The returns ``G_l = r_l + discount_l * G_{l+1}`` need one ``addcmul`` per
    level; everything else is one gather or one ``scatter_add_`` per field for
    the whole path. Each path edge's Q (with the child's updated mean) then
    widens the row's min-max bounds (MuZero's MinMaxStats, over edges only: the
    root has no incoming edge).
    """
    actions = tree.num_actions
    counted = on_path.to(value.dtype)  # 1 on the path, 0 on the repeats
    on_edge = counted[1:]
    rewards = reward * on_edge
    discounts = torch.addcmul(1.0 - on_edge, discount, on_edge)  # the discount on the path, 1 off it

    backwards = [value]  # G_L, G_{L-1}, ..., G_0
    for reward_l, discount_l in zip(reversed(rewards.unbind(0)), reversed(discounts.unbind(0))):
        # off the path r = 0, discount = 1: 0 + 1 * G is G exactly, so the leaf value passes through
        backwards.append(torch.addcmul(reward_l, discount_l, backwards[-1]))
    returns = torch.stack(backwards[::-1]) * counted

    nodes, sums, visits = path.view(-1), tree.value_sums.view(-1), tree.node_visits.view(-1)
    visits.scatter_add_(0, nodes, on_path.view(-1).long())
    sums.scatter_add_(0, nodes, returns.view(-1))

    # the same updates on the parents' copies: value sums and visits in one scatter
    copies = torch.stack([edges + VALUE_SUM * actions, edges + VISITS * actions])  # [2, L, B]
    tree.edge_stats.view(-1).scatter_add_(0, copies.view(-1), torch.stack([returns[1:], on_edge]).view(-1))

    # the children's means from the node fields (equal to the copies, and a small array to read)
    children = path[1:]
    means = sums.take(children) / visits.take(children).to(sums.dtype)  # every child has a visit now
    q = torch.addcmul(reward, discount, means)  # the repeats copy the last edge's Q
    low, high = q.amin(dim=0), q.amax(dim=0)  # (aminmax over dim 0 is several times slower on the CPU)
    changed = (low < tree.q_min) | (high > tree.q_max)
    torch.minimum(tree.q_min, low, out=tree.q_min)
    torch.maximum(tree.q_max, high, out=tree.q_max)
    return changed
