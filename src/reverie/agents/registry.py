"""The agents the CLI knows: their config class, presets and how to build them.

A new agent family is one line in :data:`AGENTS` (``entry(AgentClass, ConfigClass, PRESETS)``): the
entry checks, for the type checker and at run time, that the class is built from that config class.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Generic, Mapping, Protocol, TypeVar

import torch

from reverie.agents.base import Agent
from reverie.agents.cswm import CSWM, CSWMConfig
from reverie.agents.diamond import Diamond, DiamondConfig
from reverie.agents.dreamer import Dreamer, DreamerConfig
from reverie.agents.latent_action import LatentAction, LatentActionConfig
from reverie.agents.muzero import MuZero, MuZeroConfig
from reverie.agents.pets import Pets, PetsConfig
from reverie.agents.planet import Planet, PlanetConfig
from reverie.agents.presets import DREAMER_PRESETS, MUZERO_PRESETS, PETS_PRESETS, PLANET_PRESETS, TDMPC2_PRESETS
from reverie.agents.presets import CSWM_PRESETS, DIAMOND_PRESETS, LAPO_PRESETS, WORLDMODELS_PRESETS
from reverie.agents.tdmpc2 import TDMPC2, TDMPC2Config
from reverie.agents.worldmodels import WorldModels, WorldModelsConfig
from reverie.config import ConfigError, apply_overrides
from reverie.run_config import AgentConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["AGENTS", "AgentBuilder", "AgentClass", "AgentEntry", "agent_entry", "entry", "resolve_config"]

C = TypeVar("C", bound=AgentConfig)
C_contra = TypeVar("C_contra", bound=AgentConfig, contravariant=True)


class AgentClass(Protocol[C_contra]):
    """An agent class built from configs of one kind (``Dreamer`` from a ``DreamerConfig``)."""

    compilable: bool
    """Whether ``run.compile=true`` compiles its update."""
    multitask: bool
    """Whether it trains on several tasks at once (``run.env`` naming several, see :mod:`reverie.envs.multitask`)."""

    def __call__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: C_contra,
                 device: str | torch.device = ...) -> Agent: ...


class AgentBuilder(Protocol):
    """How the CLI and the loop build an agent from any agent's config: ``(obs_spec, act_spec, cfg, device)``."""

    @property
    def compilable(self) -> bool:
        """Whether ``run.compile=true`` compiles the update of the agents it builds."""

    @property
    def multitask(self) -> bool:
        """Whether the agents it builds train on several tasks at once."""

    def __call__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: AgentConfig,
                 device: str | torch.device = ...) -> Agent: ...


@dataclass(frozen=True)
class Builder(Generic[C]):
    """An :class:`AgentBuilder` for ``agent_cls``: refuses a config of another kind in one sentence."""

    agent_cls: AgentClass[C]
    config_cls: type[C]

    @property
    def compilable(self) -> bool:
        return self.agent_cls.compilable

    @property
    def multitask(self) -> bool:
        return self.agent_cls.multitask

    def __call__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: AgentConfig,
                 device: str | torch.device = "cpu") -> Agent:
        if not isinstance(cfg, self.config_cls):
            raise ConfigError(f"{getattr(self.agent_cls, '__name__', 'this agent')} is built from a "
                              f"{self.config_cls.__name__}, not a {type(cfg).__name__}")
        return self.agent_cls(obs_spec, act_spec, cfg, device)


@dataclass(frozen=True)
class AgentEntry:
    """How to configure and build one agent."""

    config_cls: type[AgentConfig]
    build: AgentBuilder
    presets: dict[str, list[str]]
    default_preset: str


def entry(agent_cls: AgentClass[C], config_cls: type[C], presets: dict[str, list[str]],
          default_preset: str = "default") -> AgentEntry:
    """The registry entry of ``agent_cls``, built from ``config_cls`` with ``presets`` (by name)."""
    if default_preset not in presets:
        raise ConfigError(f"default preset '{default_preset}' is not among the presets {sorted(presets)}")
    return AgentEntry(config_cls, Builder(agent_cls, config_cls), presets, default_preset)


AGENTS: dict[str, AgentEntry] = {
    "dreamer": entry(Dreamer, DreamerConfig, DREAMER_PRESETS),
    "planet": entry(Planet, PlanetConfig, PLANET_PRESETS),
    "pets": entry(Pets, PetsConfig, PETS_PRESETS),
    "muzero": entry(MuZero, MuZeroConfig, MUZERO_PRESETS),
    "tdmpc2": entry(TDMPC2, TDMPC2Config, TDMPC2_PRESETS),
    "worldmodels": entry(WorldModels, WorldModelsConfig, WORLDMODELS_PRESETS),
    "diamond": entry(Diamond, DiamondConfig, DIAMOND_PRESETS),
    "cswm": entry(CSWM, CSWMConfig, CSWM_PRESETS),
    "lapo": entry(LatentAction, LatentActionConfig, LAPO_PRESETS),
}


def agent_entry(name: str) -> AgentEntry:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {sorted(AGENTS)}"
        raise ConfigError(f"unknown agent '{name}'{hint}")
    return AGENTS[name]


def resolve_config(agent: str, preset: str | None, overrides: list[str]) -> AgentConfig:
    """Defaults, then the preset's overrides, then the user's."""
    entry_ = agent_entry(agent)
    preset = preset or entry_.default_preset
    if preset not in entry_.presets:
        close = difflib.get_close_matches(preset, list(entry_.presets), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown preset '{preset}' for {agent}; {hint}presets: {', '.join(entry_.presets)}")
    cfg = apply_overrides(entry_.config_cls(), entry_.presets[preset])
    return apply_overrides(cfg, overrides)
