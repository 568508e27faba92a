"""Behaviour learned inside world models."""

from reverie.behavior.actor_critic import ActorCritic, ActorCriticConfig

__all__ = ["ActorCritic", "ActorCriticConfig"]
