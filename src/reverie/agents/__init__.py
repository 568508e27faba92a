"""Agents: compositions of a world model with a way of acting, plus their presets."""

from reverie.agents.base import Agent, to_env_action, to_model_action
from reverie.agents.dreamer import Dreamer, DreamerConfig
from reverie.agents.pets import Pets, PetsConfig
from reverie.agents.planet import Planet, PlanetConfig
from reverie.agents.planning_adapter import PlannerPolicy, RSSMPlanningModel, planner_policy
from reverie.agents.registry import AGENTS, agent_entry, resolve_config

__all__ = [
    "AGENTS", "Agent", "Dreamer", "DreamerConfig", "Pets", "PetsConfig", "Planet", "PlanetConfig", "PlannerPolicy",
    "RSSMPlanningModel", "agent_entry", "planner_policy", "resolve_config", "to_env_action", "to_model_action",
]
