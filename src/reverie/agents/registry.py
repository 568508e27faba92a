"""The agents the CLI knows: their config class, presets and how to build them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from reverie.agents.dreamer import Dreamer, DreamerConfig
from reverie.agents.muzero import MuZero, MuZeroConfig
from reverie.agents.pets import Pets, PetsConfig
from reverie.agents.planet import Planet, PlanetConfig
from reverie.agents.presets import DREAMER_PRESETS, MUZERO_PRESETS, PETS_PRESETS, PLANET_PRESETS, TDMPC2_PRESETS
from reverie.agents.presets import WORLDMODELS_PRESETS
from reverie.agents.tdmpc2 import TDMPC2, TDMPC2Config
from reverie.agents.worldmodels import WorldModels, WorldModelsConfig
from reverie.config import ConfigError, apply_overrides


@dataclass(frozen=True)
class AgentEntry:
    """How to configure and build one agent."""

    config_cls: type
    build: Callable[..., Any]          # (obs_spec, act_spec, cfg, device) -> Agent
    presets: dict[str, list[str]]
    default_preset: str


AGENTS: dict[str, AgentEntry] = {
    "dreamer": AgentEntry(DreamerConfig, Dreamer, DREAMER_PRESETS, "default"),
    "planet": AgentEntry(PlanetConfig, Planet, PLANET_PRESETS, "default"),
    "pets": AgentEntry(PetsConfig, Pets, PETS_PRESETS, "default"),
    "muzero": AgentEntry(MuZeroConfig, MuZero, MUZERO_PRESETS, "default"),
    "tdmpc2": AgentEntry(TDMPC2Config, TDMPC2, TDMPC2_PRESETS, "default"),
    "worldmodels": AgentEntry(WorldModelsConfig, WorldModels, WORLDMODELS_PRESETS, "default"),
}


def agent_entry(name: str) -> AgentEntry:
    if name not in AGENTS:
        close = difflib.get_close_matches(name, list(AGENTS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {sorted(AGENTS)}"
        raise ConfigError(f"unknown agent '{name}'{hint}")
    return AGENTS[name]


def resolve_config(agent: str, preset: str | None, overrides: list[str]) -> Any:
    """Defaults, then the preset's overrides, then the user's."""
    entry = agent_entry(agent)
    preset = preset or entry.default_preset
    if preset not in entry.presets:
        close = difflib.get_close_matches(preset, list(entry.presets), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown preset '{preset}' for {agent}; {hint}presets: {', '.join(entry.presets)}")
    cfg = apply_overrides(entry.config_cls(), entry.presets[preset])
    return apply_overrides(cfg, overrides)
