"""The search tree: preallocated tensors, one node slot per simulation, no Python object per node.

Node fields are ``[B, N]`` with ``N = num_simulations + 1``. Node 0 is the
root; simulation k (counting from 0) writes the node it creates into slot
k + 1 of every row, so all rows grow together and the slot index is a Python
int (column writes, no scatter). A row whose simulation k reached a
``max_depth`` leaf creates nothing: its slot k + 1 stays unused (visit count
0, parent -1, depth -1).

What selection reads about a node's K children (prior, logits, reward,
discount, value sum, visit count) is packed into one ``edge_stats`` tensor
``[B, N, C, K]``, so selecting at any set of M nodes gathers one ``[M, C, K]``
slab with a single ``index_select`` (``gather_stats``) instead of six gathers;
``children_*`` are views of its channels. Visit counts are stored as floats
there (exact up to 2**24 in float32) because every formula uses them as
floats. Values are kept as sums (means are ``sum / visits``) so a whole
root-to-leaf path is backed up with one ``scatter_add_`` per field:
off-path entries then add 0 anywhere, which scattered writes of means could
not allow.

The dataclass is frozen (the fields are never rebound) but the tensors are
updated in place by ``expand`` and ``backup`` (backup.py) while the search runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .types import RecurrentOutput, RootOutput, State

#: ``children_index`` of an action that has no node yet.
UNEXPANDED = -1
#: ``parents`` / ``action_from_parent`` of the root and of unused slots.
NO_PARENT = -1
#: Channels of ``Tree.edge_stats``.
PRIOR, LOGITS, REWARD, DISCOUNT, VALUE_SUM, VISITS = range(6)
CHANNELS = 6


@dataclass(frozen=True)
class Tree:
    """A batch of B search trees of N node slots over K actions."""

    node_visits: Tensor
    """[B, N] int64 simulations that passed through the node, its own expansion included."""
    raw_values: Tensor
    """[B, N] the model's value of the node when it was expanded."""
    value_sums: Tensor
    """[B, N] sum of the values backed up through the node (its raw value included)."""
    parents: Tensor
    """[B, N] int64 parent slot (-1 for the root and unused slots)."""
    action_from_parent: Tensor
    """[B, N] int64 action that led from the parent to the node (-1 for the root and unused slots)."""
    depth: Tensor
    """[B, N] int64 distance from the root (0 for the root, -1 for unused slots)."""
    children_index: Tensor
    """[B, N, K] int64 slot of each child (-1 while unexpanded)."""
    edge_stats: Tensor
    """[B, N, C, K] per-child statistics, channels PRIOR (probabilities PUCT uses: the root's
    with Dirichlet noise when exploring), LOGITS (the model's; invalid root actions -inf),
    REWARD and DISCOUNT (of the transition; 0 while unexpanded), VALUE_SUM and VISITS (the
    child's ``value_sums`` and ``node_visits``)."""
    embeddings: State
    """The embeddings pytree, leaves [B, N, ...]."""
    root_invalid: Tensor
    """[B, K] bool root actions that are never chosen or visited."""
    q_min: Tensor
    """[B] smallest Q = r + discount * child value backed up anywhere in the row's tree (+inf before any)."""
    q_max: Tensor
    """[B] largest such Q (-inf before any); with ``q_min`` MuZero's MinMaxStats."""
    row_offsets: Tensor
    """[B] int64 ``arange(B) * N``: row b's node n is entry ``b * N + n`` of a field viewed as [B * N, ...]."""

    @property
    def batch_size(self) -> int:
        return self.node_visits.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.node_visits.shape[1]

    @property
    def num_actions(self) -> int:
        return self.children_index.shape[2]

    @property
    def node_values(self) -> Tensor:
        """[B, N] mean of the values backed up through each node (0 for unused slots)."""
        return self.value_sums / self.node_visits.clamp(min=1).to(self.value_sums.dtype)

    @property
    def children_prior(self) -> Tensor:
        """[B, N, K] view: prior probabilities used by PUCT."""
        return self.edge_stats[:, :, PRIOR]

    @property
    def children_prior_logits(self) -> Tensor:
        """[B, N, K] view: the model's policy logits at each node."""
        return self.edge_stats[:, :, LOGITS]

    @property
    def children_rewards(self) -> Tensor:
        """[B, N, K] view: rewards of the children's transitions."""
        return self.edge_stats[:, :, REWARD]

    @property
    def children_discounts(self) -> Tensor:
        """[B, N, K] view: discounts of the children's transitions."""
        return self.edge_stats[:, :, DISCOUNT]

    @property
    def children_visits(self) -> Tensor:
        """[B, N, K] int64 copy: the children's visit counts."""
        return self.edge_stats[:, :, VISITS].long()

    @property
    def children_values(self) -> Tensor:
        """[B, N, K] the children's mean values (0 while unexpanded)."""
        return self.edge_stats[:, :, VALUE_SUM] / self.edge_stats[:, :, VISITS].clamp(min=1)

    def at(self, field: Tensor, node: Tensor | int) -> Tensor:
        """One node per row of a [B, N, ...] field: node [B] (or one slot for all rows) -> [B, ...].

        ``index_select`` on the [B * N, ...] view is a plain row gather, much
        cheaper than advanced indexing with two index tensors.
        """
        if isinstance(node, int):
            return field[:, node]  # a view, no gather
        return self.gather(field, self.row_offsets + node)

    def flat_nodes(self, node: Tensor, rows: Tensor | None = None) -> Tensor:
        """Index of each row's node in a [B, N, ...] field viewed as [B * N, ...]: node [A] -> [A].

        ``rows`` [A] names the rows ``node`` belongs to (None: all B rows in order).
        """
        return (self.row_offsets if rows is None else self.row_offsets.index_select(0, rows)) + node

    def gather(self, field: Tensor, flat: Tensor) -> Tensor:
        """``field`` [B, N, ...] at the ``flat_nodes`` indices [A]: [A, ...]."""
        return field.view(-1, *field.shape[2:]).index_select(0, flat)

    def edge_index(self, node: Tensor, action: Tensor, channel: int | None = None) -> Tensor:
        """Flat index of (row, node, action) in ``children_index`` (``channel`` None) or of
        (row, node, channel, action) in ``edge_stats``, each viewed as 1-D.

        ``node`` and ``action`` are [B] or level-major [L, B] (row offsets broadcast over L).
        """
        slots = self.row_offsets + node
        if channel is None:
            return slots * self.num_actions + action
        return (slots * CHANNELS + channel) * self.num_actions + action

    def node_embedding(self, node: Tensor | int) -> State:
        """The embeddings of one node per row: node [B] or int -> pytree with leaves [B, ...]."""
        return pytree.tree_map(lambda leaf: self.at(leaf, node), self.embeddings)


def gather_stats(tree: Tree, flat: Tensor, action_major: bool) -> Tensor:
    """The ``edge_stats`` of M nodes ``flat`` [M] (flat indices), channel first for the selection formulas.

    [C, M, K]: views of the gathered [M, C, K] rows (no copy); ``action_major``:
    [C, K, M], a copy in which reductions over the K actions run across
    contiguous rows of M values. For a few actions per node that is several
    times faster than reducing each node's short row (``stats_layout``).
    """
    rows = tree.edge_stats.view(-1, CHANNELS, tree.num_actions).index_select(0, flat)  # [M, C, K]
    return rows.permute(1, 2, 0).contiguous() if action_major else rows.transpose(0, 1)


def stats_layout(actions: int, device: torch.device) -> tuple[bool, int]:
    """``gather_stats``'s ``action_major`` for K actions, and the dim of the actions in each channel.

    Action-major pays on the CPU for K <= 4 (measured on the benchmark's trees, B = 256, K = 2:
    Gumbel's refreshes ~15% faster, PUCT's the same); at K = 16 the transposing copy costs ~4x
    the gather itself, more than it saves. Elsewhere the per-row reductions are no bottleneck.
    """
    action_major = device.type == "cpu" and actions <= 4
    return action_major, 0 if action_major else -1


def qvalues(stats: Tensor) -> Tensor:
    """Q = r + discount * mean child value from gathered ``edge_stats`` [B, C, K]: [B, K] (0 unexpanded)."""
    channels = stats.unbind(1)
    means = channels[VALUE_SUM] / channels[VISITS].clamp(min=1)
    return torch.addcmul(channels[REWARD], channels[DISCOUNT], means)


def init_tree(root: RootOutput, num_nodes: int, invalid: Tensor) -> Tree:
    """An empty tree of ``num_nodes`` slots holding only the expanded, once-visited root.

    The root starts with one visit and its raw value as its value, so the
    search's root value is the mean of the raw value and every backed-up return,
    and PUCT's sqrt(N(root)) is positive from the first simulation on (the
    prior then decides the first selection instead of a tie at 0).
    """
    logits = root.prior_logits
    batch, actions = logits.shape
    dtype, device = root.value.dtype, logits.device
    logits = logits.to(dtype).masked_fill(invalid, float("-inf"))

    def nodes(fill: float, kind: torch.dtype = dtype) -> Tensor:
        return torch.full((batch, num_nodes), fill, dtype=kind, device=device)

    def slots(leaf: Tensor) -> Tensor:
        storage = leaf.new_zeros((batch, num_nodes, *leaf.shape[1:]))
        storage[:, 0] = leaf
        return storage

    tree = Tree(
        node_visits=nodes(0, torch.int64),
        raw_values=nodes(0.0),
        value_sums=nodes(0.0),
        parents=nodes(NO_PARENT, torch.int64),
        action_from_parent=nodes(NO_PARENT, torch.int64),
        depth=nodes(-1, torch.int64),
        children_index=torch.full((batch, num_nodes, actions), UNEXPANDED, dtype=torch.int64, device=device),
        edge_stats=torch.zeros((batch, num_nodes, CHANNELS, actions), dtype=dtype, device=device),
        embeddings=pytree.tree_map(slots, root.embedding),
        root_invalid=invalid,
        q_min=torch.full((batch,), float("inf"), dtype=dtype, device=device),
        q_max=torch.full((batch,), float("-inf"), dtype=dtype, device=device),
        row_offsets=torch.arange(batch, device=device) * num_nodes,
    )
    tree.node_visits[:, 0] = 1
    tree.raw_values[:, 0] = root.value
    tree.value_sums[:, 0] = root.value
    tree.depth[:, 0] = 0
    tree.edge_stats[:, 0, LOGITS] = logits
    tree.edge_stats[:, 0, PRIOR] = torch.softmax(logits, dim=-1)
    return tree


def expand(
    tree: Tree,
    slot: int,
    parent: Tensor,
    action: Tensor,
    output: RecurrentOutput,
    embedding: State,
    mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Write the child reached by ``action`` [B] from ``parent`` [B] into ``slot``, in rows where ``mask`` [B].

    ``mask`` None means every row. Visits and values are left to ``backup``;
    rows outside ``mask`` are untouched. Returns the flat indices of the
    parents' entries for the action in ``children_index`` and in ``edge_stats``
    (channel 0), both viewed 1-D: [B] each.
    """
    dtype = tree.raw_values.dtype

    def put(field: Tensor, new: Tensor) -> None:
        # one column per field: the slot is the same in every row
        column = field.select(1, slot)
        if mask is not None:
            new = torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new.to(field.dtype), column)
        column.copy_(new)

    def link(field: Tensor, index: Tensor, new: Tensor) -> None:
        # the parent's entries for the action: read, keep them where masked out, write back
        flat = field.view(-1)
        new = new.to(field.dtype)
        if mask is not None:
            new = torch.where(mask.repeat(new.shape[0] // mask.shape[0]), new, flat.index_select(0, index))
        flat.index_copy_(0, index, new)

    flat = tree.row_offsets + parent
    put(tree.raw_values, output.value)
    put(tree.parents, parent)
    put(tree.action_from_parent, action)
    put(tree.depth, tree.depth.view(-1).take(flat) + 1)
    logits = output.prior_logits.to(dtype)
    # PRIOR and LOGITS are adjacent channels: one write for both
    put(tree.edge_stats[:, :, PRIOR : LOGITS + 1], torch.stack([torch.softmax(logits, dim=-1), logits], dim=1))
    if isinstance(embedding, Tensor) and isinstance(tree.embeddings, Tensor):  # the common case, no pytree walk
        put(tree.embeddings, embedding)
    else:
        for storage, leaf in zip(pytree.tree_leaves(tree.embeddings), pytree.tree_leaves(embedding)):
            put(storage, leaf)
    child = flat * tree.num_actions + action
    if mask is None:
        tree.children_index.view(-1).index_fill_(0, child, slot)
    else:
        link(tree.children_index, child, torch.full_like(parent, slot))
    edge = flat * (CHANNELS * tree.num_actions) + action  # the parent's entry for the action, channel 0
    transition = torch.cat([edge + REWARD * tree.num_actions, edge + DISCOUNT * tree.num_actions])
    link(tree.edge_stats, transition, torch.cat([output.reward, output.discount]))
    return child, edge
