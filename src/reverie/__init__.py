"""reverie: learned world models. Train an agent, load a run, act, observe, imagine, plan and analyse.

    import reverie
    run = reverie.train("dreamer", env="gym:CartPole-v1", preset="tiny", steps=500)
    run.evaluate(episodes=5).mean

The names below are imported on first use (``import reverie`` alone loads neither torch nor an
environment library); see :mod:`reverie.api`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    "train": "reverie.api", "load": "reverie.api", "make_config": "reverie.api", "Run": "reverie.api",
    "Evaluation": "reverie.api", "batch_step": "reverie.api", "analyze": "reverie.api",
    "merge": "reverie.api", "imagine": "reverie.models.base", "plan": "reverie.planning", "make_env": "reverie.envs",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reverie' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
