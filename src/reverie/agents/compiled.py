"""torch.compile for agents: whether it works on this machine, and static-shape compilation.

Acting (``reverie eval --acting compiled``, :mod:`reverie.agents.acting`) and training
(``run.compile=true``: Dreamer's world-model loss and imagination rollout) both compile through
:func:`compile_static`, after :func:`compile_problem` has tried one tiny function, so a machine where
inductor cannot work (no C++ compiler, an unsupported Python) is named in one sentence before the
first real call instead of failing in the middle of one.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import torch

__all__ = ["compile_problem", "compile_static", "same_random_numbers_as_eager"]


@functools.lru_cache(maxsize=1)
def compile_problem() -> str | None:
    """None if ``torch.compile`` works here, else the first line of why not (at most 200 characters)."""
    try:
        with warnings.catch_warnings():   # what inductor's first import warns about is not a failure
            warnings.simplefilter("ignore")
            torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(2))
    except Exception as e:   # noqa: BLE001 - inductor fails in many ways; all mean the same here
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return reason[:200]
    return None


def compile_static(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled by inductor for static shapes (acting keeps its batch size, training its batch
    shape; a dynamic batch breaks compiled ``torch.rand`` / ``randn``). Compiles on the first call."""
    return torch.compile(fn, dynamic=False)


def same_random_numbers_as_eager() -> None:
    """Make compiled code draw its random numbers from torch's own generator, as eager code does
    (inductor's ``fallback_random``; process-wide), so a compiled update computes what the eager one
    does, draw for draw."""
    import torch._inductor.config as inductor_config

    inductor_config.fallback_random = True
