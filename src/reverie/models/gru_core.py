"""DreamerV3's GRU as a sequence core (:mod:`reverie.models.sequence_core`): its recurrent state is ``deter``."""

from __future__ import annotations

from torch import Tensor

from reverie.models.sequence_core import SequenceCore
from reverie.nn import GRUCell


class GRUCore(SequenceCore):
    """A LayerNorm GRU cell, ``deter_t = GRU(x_t, deter_{t-1})``: no memory beside ``deter``, so the next
    ``deter`` is a map of ``deter`` and the input alone; the posterior sees ``deter`` (filtering steps through
    time) and a sequence is the cell stepped one step at a time."""

    parallel_posterior = False

    def __init__(self, hidden: int, deter: int):
        super().__init__(hidden, deter)
        self.cell = GRUCell(hidden, deter)

    def step(self, x: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return self.cell(x, memory["deter"]), {}
