"""Agents: compositions of a world model with a way of acting and learning, plus their presets."""

from reverie.agents.base import ActingParts, ActOutput, Actor, Agent, AgentBase, Refit, ReplayRatio
from reverie.agents.base import to_env_action, to_model_action
from reverie.agents.dreamer import Dreamer, DreamerConfig
from reverie.agents.muzero import MuZero, MuZeroConfig
from reverie.agents.pets import Pets, PetsConfig
from reverie.agents.planet import Planet, PlanetConfig
from reverie.agents.planner_policy import PlannerPolicy, default_settings, planner_policy
from reverie.agents.registry import AGENTS, agent_entry, resolve_config

__all__ = [
    "AGENTS", "ActOutput", "ActingParts", "Actor", "Agent", "AgentBase", "Dreamer", "DreamerConfig",
    "MuZero", "MuZeroConfig", "Pets", "PetsConfig", "Planet", "PlanetConfig", "PlannerPolicy", "Refit", "ReplayRatio",
    "agent_entry", "default_settings", "planner_policy", "resolve_config", "to_env_action", "to_model_action",
]
