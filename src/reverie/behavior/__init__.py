"""Behaviour learned inside world models."""

from reverie.behavior.actor_critic import ActorCritic, ActorCriticConfig, ImagineCall

__all__ = ["ActorCritic", "ActorCriticConfig", "ImagineCall"]
