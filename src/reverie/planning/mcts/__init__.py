"""Batched Monte-Carlo tree search over a learned model: MuZero's PUCT and Gumbel MuZero.

All B roots are searched together in preallocated tensors; every simulation
makes one ``recurrent_fn`` call for the whole batch.

    from reverie.planning.mcts import MCTSSettings, RootOutput, search
    result = search(recurrent_fn, RootOutput(logits, value, embedding), MCTSSettings(algorithm="gumbel"))
    result.action, result.policy   # [B], [B, K]: act, and train the policy towards it
"""

from .backup import backup
from .gumbel import (
    completed_q,
    gumbel_final_action,
    gumbel_interior_select,
    gumbel_root_select,
    halving_schedule,
    improved_policy,
    mixed_value,
    node_sigma,
    root_sigma,
    sample_gumbel,
    schedule_table,
    select_considered,
    sigma,
)
from .puct import (
    add_dirichlet_noise,
    dirichlet_noise,
    min_max_normalizer,
    normalize_q,
    puct_action,
    puct_root_select,
    puct_scores,
    puct_select,
    sibling_normalizer,
    visit_policy,
)
from .search import search
from .tree import (
    CHANNELS,
    DISCOUNT,
    LOGITS,
    NO_PARENT,
    PRIOR,
    REWARD,
    UNEXPANDED,
    VALUE_SUM,
    VISITS,
    Tree,
    expand,
    init_tree,
    qvalues,
)
from .types import MCTSSettings, RecurrentFn, RecurrentOutput, RootOutput, SearchResult, State

__all__ = [
    "CHANNELS",
    "DISCOUNT",
    "LOGITS",
    "NO_PARENT",
    "PRIOR",
    "REWARD",
    "UNEXPANDED",
    "VALUE_SUM",
    "VISITS",
    "MCTSSettings",
    "RecurrentFn",
    "RecurrentOutput",
    "RootOutput",
    "SearchResult",
    "State",
    "Tree",
    "add_dirichlet_noise",
    "backup",
    "completed_q",
    "dirichlet_noise",
    "expand",
    "gumbel_final_action",
    "gumbel_interior_select",
    "gumbel_root_select",
    "halving_schedule",
    "improved_policy",
    "init_tree",
    "min_max_normalizer",
    "mixed_value",
    "node_sigma",
    "normalize_q",
    "puct_action",
    "puct_root_select",
    "puct_scores",
    "puct_select",
    "qvalues",
    "root_sigma",
    "sample_gumbel",
    "schedule_table",
    "search",
    "select_considered",
    "sibling_normalizer",
    "sigma",
    "visit_policy",
]
