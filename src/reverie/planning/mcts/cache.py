"""Every node's selected action, cached, so that a descent is one lookup per level.

The action selection picks at a node depends only on the node's own edge
statistics and, for PUCT, on its row's min-max bounds. Both change only in a
backup: the statistics of the nodes on the path just backed up, and the
bounds of the few rows whose path widened them (which rescales every Q of
those rows). So the search keeps, for every node, the action it would select
(``best``) and the node a descent moves to from there (``next``: the selected
child, or the node itself while that child does not exist yet), and after
each backup recomputes them for the nodes that changed (``store``, called by
``selectors``). A descent is then ``levels`` lookups in ``next`` for all rows
at once, with no score computed on the way; a row that has stopped stays
where it is, because its node leads to itself. The trees it builds are those
of selecting afresh at every level of every descent, bit for bit.

Indices are flat: node n of row b is entry ``b * N + n`` of a ``[B, N]`` field
viewed as ``[B * N]``, so one gather serves nodes of different rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .tree import Tree


@dataclass(frozen=True)
class SelectionCache:
    """Selection state of B trees of N node slots over K actions (flat indices, see the module docstring)."""

    best: Tensor
    """[B * N] int64 the action each node selects now (stale for unused slots, never read there)."""
    next: Tensor
    """[B * N] int64 the node a descent moves to from each node: the child ``best`` leads to, or itself."""
    successor: Tensor
    """[B * N * K] int64 the child of each (node, action), or the node itself while unexpanded."""
    edge_of: Tensor
    """[B * N] int64 where a node's entry in its parent's ``edge_stats`` lies (viewed 1-D, channel 0);
    0 for roots and unused slots, where backups only ever add 0."""
    transition: Tensor
    """[2, B * N] the reward and discount of each node's incoming edge (0 for roots and unused slots):
    copies of the parent's REWARD and DISCOUNT entries, read by backups from this small array
    instead of scattered entries of ``edge_stats``."""
    roots: Tensor
    """[B] int64 the roots' flat indices (``tree.row_offsets``)."""
    actions: int
    """K."""

    @staticmethod
    def create(tree: Tree) -> SelectionCache:
        batch, nodes, actions = tree.batch_size, tree.num_nodes, tree.num_actions
        flat = torch.arange(batch * nodes, device=tree.row_offsets.device)
        return SelectionCache(
            best=torch.zeros_like(flat),
            next=flat.clone(),
            successor=flat.repeat_interleave(actions),
            edge_of=torch.zeros_like(flat),
            transition=tree.edge_stats.new_zeros((2, batch * nodes)),
            roots=tree.row_offsets,
            actions=actions,
        )

    def store(self, flat: Tensor, action: Tensor) -> None:
        """Record ``action`` [M] as the selection of the nodes ``flat`` [M] (repeats must agree)."""
        self.best.index_copy_(0, flat, action)
        self.next.index_copy_(0, flat, self.successor.take(flat * self.actions + action))

    def descend(self, levels: int, stop_early: bool) -> Tensor:
        """Follow ``next`` from every root for ``levels`` steps: the walk [L + 2, B], rows 0..L filled.

        Row ``l`` holds each row's node at depth ``l``, or its stopping node
        repeated once it has stopped; row L + 1 is left for ``extend``.
        ``levels`` is the deepest node's depth, so every row has stopped by
        then. With ``stop_early`` (where reading a tensor on the host is free,
        the CPU) the walk ends before the first level where no row moves, and
        L is the last level where one did.
        """
        walk = [self.roots]
        for _ in range(levels):
            step = self.next.index_select(0, walk[-1])
            if stop_early and torch.equal(step, walk[-1]):
                break
            walk.append(step)
        walk.append(walk[-1])  # the row ``extend`` fills
        return torch.stack(walk)

    def extend(
        self, path: Tensor, slot: int, links: tuple[Tensor, Tensor], transition: Tensor, expanding: Tensor | None
    ) -> Tensor:
        """Link the node just created in ``slot`` from each row's stopping node ``path[-2]`` [B]:
        ``links`` are ``expand``'s flat indices of the stopping node's entries for the action, in
        ``successor`` and ``edge_stats``, ``transition`` [2, B] the reward and discount. Turn the
        walk ``path`` [L + 2, B] into the backup's path, in place, and return its on-path mask
        [L + 2, B] bool.

        The backup's path is the walk with the new node after the stopping node
        and every entry past it the new node again (rows not ``expanding``: the
        stopping node again). Repeating the last node keeps the repeated edges
        copies of the last path edge, which is what lets the backup take
        minima and maxima over all entries without masks.
        """
        leaf, (child, edge) = path[-2], links
        created = self.roots + slot
        if expanding is not None:
            created = torch.where(expanding, created, leaf)
        # rows not expanding write the leaf itself: its successor for the action stays itself
        self.successor.index_copy_(0, child, created)
        batch = self.roots.shape[0]
        if expanding is None:
            self.edge_of.view(batch, -1)[:, slot] = edge
            self.transition.view(2, batch, -1)[:, :, slot] = transition
        else:
            self.edge_of.view(batch, -1)[:, slot] = torch.where(expanding, edge, 0)
            self.transition.view(2, batch, -1)[:, :, slot] = torch.where(expanding, transition, 0.0)
        # past each row's stopping node (where the walk stops moving), the created node
        later, earlier = path[1:], path[:-1]
        later.copy_(torch.where(later != earlier, later, created))
        on_path = torch.ones(path.shape, dtype=torch.bool, device=path.device)
        torch.ne(later, earlier, out=on_path[1:])
        return on_path

    def edges(self, path: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The edges into ``path[1:]`` [L, B]: their index in ``edge_stats`` viewed 1-D at channel 0,
        rewards and discounts, each [L, B]."""
        children = path[1:]
        reward, discount = self.transition.index_select(1, children.reshape(-1)).view(2, *children.shape)
        return self.edge_of.take(children), reward, discount
