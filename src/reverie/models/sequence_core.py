"""The sequence-core contract: the recurrent part of the RSSM's deterministic path, stated once.

A sequence core turns the RSSM's per-step inputs ``x [.., hidden]`` (the previous latent and action,
embedded) into deterministic states ``deter [.., deter]``. Its *memory* is a dict of state entries:
``deter`` (its last output) plus the entries it names in ``memory_keys``, which the RSSM adds to every
state it makes. A core whose recurrent state is ``deter`` itself (the GRU) names none; the SSM keeps its
diagonal states (``ssm``), the transformer its key/value cache.

Every core offers:

- :meth:`SequenceCore.initial`: the memory at an episode start, ``deter`` included;
- :meth:`SequenceCore.step`: one step, ``x [N, hidden]`` and memory ``[N]`` -> (``deter [N, D]``, the new
  entries of ``memory_keys`` ``[N]``); with the new ``deter`` they form the next step's memory;
- :meth:`SequenceCore.sequence`: a whole sequence, ``x [B, T, hidden]``, ``is_first [B, T]`` and the memory
  before it ``[B]`` -> (``deter [B, T, D]``, the entries of ``memory_keys`` after every step ``[B, T]``), the
  memory back at :meth:`~SequenceCore.initial` right before each step with ``is_first``. The base class
  computes it with :meth:`~SequenceCore.step` one step at a time; a core with a faster form (a parallel
  scan, masked attention) overrides it with one that gives the same numbers.

and declares the properties the RSSM acts on:

- ``parallel_posterior``: whether the RSSM's posterior is computed from the observation's embedding alone,
  so that :meth:`~SequenceCore.sequence` runs over all steps of a training batch at once (the SSM, the
  transformer); otherwise the posterior sees ``deter`` and filtering steps through time (the GRU);
- ``lean_memory`` (set by the RSSM's R2I option, ``model.rssm.r2i``): whether :meth:`~SequenceCore.sequence`
  keeps its activation memory linear in the sequence length where its fast form would not (the SSM's scan);
  the numbers are the same either way;
- :attr:`~SequenceCore.markov_in_deter`: whether the next ``deter`` is a function of ``deter`` and the input
  alone, which gives the RSSM a transition map on ``deter`` (spectral analysis). It follows from the
  contract: a step reads nothing but its input and its memory, so a core with no ``memory_keys`` has it.

New cores are registered by name in :mod:`reverie.models.cores`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import Field
from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn

from reverie.config import ConfigError


class CoreSettings(Protocol):
    """A core's config section: a dataclass of its sizes (``model.ssm``, ``model.transformer``)."""

    __dataclass_fields__: ClassVar[dict[str, Field]]


class SequenceCore(nn.Module, ABC):
    """Base class of the sequence cores; the module docstring states the contract."""

    memory_keys: tuple[str, ...] = ()
    """The state entries the core adds beside ``deter``."""
    parallel_posterior: bool = False
    """Whether the RSSM computes the posterior from the embedding alone and runs :meth:`sequence` over
    all steps at once (True), or lets the posterior see ``deter`` and steps through time (False). The RSSM's
    R2I option computes the posterior from the embedding alone for every core."""
    lean_memory: bool = False
    """Whether :meth:`sequence` keeps activation memory linear in T (the RSSM's R2I option sets it)."""

    def __init__(self, hidden: int, deter: int):
        super().__init__()
        self.hidden_size = hidden
        self.deter_size = deter

    @classmethod
    def build(cls, hidden: int, deter: int, settings: CoreSettings | None = None) -> SequenceCore:
        """The core for inputs ``[.., hidden]`` and states ``[.., deter]``; ``settings``: its config section
        (None: its defaults). Cores without settings take none; cores with settings override this."""
        if settings is not None:
            raise ConfigError(f"the {cls.__name__} sequence core takes no settings, got {type(settings).__name__}")
        return cls(hidden, deter)

    @property
    def markov_in_deter(self) -> bool:
        """Whether the next ``deter`` is a function of ``deter`` and the input alone (no ``memory_keys``)."""
        return not self.memory_keys

    def initial(self, batch: int, device: torch.device | str | None) -> dict[str, Tensor]:
        """The memory at an episode start: ``deter [N, D]`` (zeros) and the entries of ``memory_keys``."""
        return {"deter": torch.zeros(batch, self.deter_size, device=device),
                **self.initial_memory(batch, device)}

    def initial_memory(self, batch: int, device: torch.device | str | None) -> dict[str, Tensor]:
        """The entries of ``memory_keys`` at an episode start ``[N, ...]`` (none by default)."""
        return {}

    @abstractmethod
    def step(self, x: Tensor, memory: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One step: ``x [N, hidden]``, memory ``[N]`` -> (``deter [N, D]``, entries of ``memory_keys`` ``[N]``)."""

    def sequence(self, x: Tensor, is_first: Tensor, memory: dict[str, Tensor]
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        """Inputs ``x [B, T, hidden]``, ``is_first [B, T]``, memory before the sequence ``[B]`` -> (``deter
        [B, T, D]``, entries of ``memory_keys`` after every step ``[B, T]``): :meth:`step` one step at a time,
        the memory set to :meth:`initial` right before each step with ``is_first``."""
        init = self.initial(x.shape[0], x.device)
        keep = ~is_first.bool()
        memory = {k: memory[k] for k in init}
        deters, memories = [], []
        for t in range(x.shape[1]):
            memory = {k: torch.where(keep[:, t].view(-1, *[1] * (v.dim() - 1)), v, init[k])
                      for k, v in memory.items()}
            deter, added = self.step(x[:, t], memory)
            memory = {"deter": deter, **added}
            deters.append(deter)
            memories.append(added)
        return torch.stack(deters, 1), {k: torch.stack([m[k] for m in memories], 1) for k in self.memory_keys}
