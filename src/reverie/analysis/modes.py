"""The oscillations a world model's own imagination shows: DMD of free-running imagined trajectories.

From visited states ``[N]`` the model imagines ``horizon`` steps with its prior (``model.step``), the
action held fixed, and :func:`reverie.analysis.dmd.dmd` fits one linear map to what it imagined:

* **observable DMD**, for a model with a decoder and vector observations: the decoded observations,
  so only motion a person can see in the observations counts;
* **latent DMD**, for a model without one (TD-MPC2, MuZero) or with image observations only: the
  latent features ``model.features``.

The held action is the *neutral* one for continuous actions (zero, the centre of every action range:
no input, so the model's own free motion) and, for discrete actions (which have no neutral choice),
the action taken at each start state. This is the nonlinear counterpart of the Jacobian spectrum
(:mod:`reverie.analysis.spectral`), which linearises one step of the same transition: the Jacobian
of a large latent has many directions the decoder never shows (their eigenvalues can have any period),
while DMD of the imagined observations keeps the modes the observations move in.

Pure: no files, clocks or environments; numpy out. Stochastic models sample as they imagine: seed
torch's generator around the call for repeatable numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reverie.analysis.dmd import DMDResult, dmd
from reverie.models.base import DECODER, State, WorldModel, decoder_head, has
from reverie.models.state import state_batch, take_rows
from reverie.specs import ActionSpec

__all__ = ["ImaginedModes", "default_delays", "held_action", "imagine_signal", "imagined_modes"]

OBSERVABLE, LATENT = "observable DMD", "latent DMD"


@dataclass(frozen=True)
class ImaginedModes:
    """DMD of the model's free-running imagination from ``n_states`` start states."""

    method: str                  # "observable DMD" (decoded observations) or "latent DMD" (features)
    signal: str                  # what was decomposed, in words
    names: tuple[str, ...]       # [D] name of each decomposed dimension
    held: str                    # the action held while imagining, in words
    horizon: int                 # imagined steps per start state
    n_states: int
    dmd: DMDResult
    trajectories: np.ndarray     # [min(N, 8), horizon + 1, D] a few of the decomposed trajectories

    def summary(self) -> dict:
        """JSON-ready digest (NaN and inf stay; the writer cleans them)."""
        return {"method": self.method, "signal": self.signal, "names": list(self.names), "held": self.held,
                "horizon": self.horizon, "n_states": self.n_states, **self.dmd.summary()}


def held_action(spec: ActionSpec, taken: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The model-space action held while imagining, ``[1, A]`` or ``[N, A]``, and how to say it.

    ``taken``: ``[N, A]`` the actions really taken at the start states (used for discrete actions)."""
    if spec.discrete:
        return taken, "the action taken at each start state, held (discrete actions have no neutral one)"
    return torch.zeros(1, spec.size, dtype=taken.dtype, device=taken.device), "zero (no input), held"


def default_delays(dims: int, steps: int, target: int = 32) -> int:
    """Delays that embed ``dims`` dimensions in about ``target`` (a few-dimensional observation shows
    more modes than it has dimensions only after delay embedding), at most a quarter of ``steps``."""
    return max(1, min(math.ceil(target / max(dims, 1)), steps // 4))


def _vector_keys(model: WorldModel) -> list[str]:
    return sorted(k for k, spec in model.obs_spec.items() if not spec.is_image)


@torch.no_grad()
def imagine_signal(model: WorldModel, state: State, action: torch.Tensor, horizon: int,
                   observable: bool) -> np.ndarray:
    """``[N, horizon + 1, D]``: the decoded vector observations (``observable``) or the features of the
    start states and of ``horizon`` imagined steps with ``action`` (``[1, A]`` or ``[N, A]``) held."""
    keys = _vector_keys(model)

    decode = decoder_head(model, "the observable modes of a model") if observable else None

    def read(s: State) -> np.ndarray:
        if decode is not None:
            decoded = decode(s)
            parts = [decoded[k].reshape(decoded[k].shape[0], -1) for k in keys]
            return torch.cat(parts, -1).float().cpu().numpy().astype(np.float64)
        return model.features(s).float().cpu().numpy().astype(np.float64)

    n, _ = state_batch(state)
    act = action.expand(n, -1) if action.shape[0] == 1 else action
    out = [read(state)]
    for _ in range(horizon):
        state = model.step(state, act)
        out.append(read(state))
    return np.stack(out, 1)


def imagined_modes(model: WorldModel, state: State, taken: torch.Tensor, *, horizon: int = 64,
                   dt: float | None = None, names: Sequence[str] | None = None, max_states: int = 128,
                   delays: int | None = None, energy: float = 0.999) -> ImaginedModes:
    """DMD of ``horizon`` free-running imagined steps from each of (at most ``max_states``, evenly
    chosen) start states ``state [N]``; ``taken [N, A]`` the model-space actions taken there.

    ``dt``: seconds per step (times in seconds, else steps). ``names``: of the vector observations'
    dimensions in sorted key order (observable DMD); default ``key[i]``. ``delays``: None picks
    :func:`default_delays`. Imagined trajectories that leave the finite numbers are dropped; raises
    ValueError when none is left.
    """
    n = int(taken.shape[0])
    pick = np.unique(np.linspace(0, n - 1, min(n, max_states)).round().astype(int))
    index = torch.as_tensor(pick, device=taken.device)
    state = take_rows(state, index)
    taken = taken[index]
    observable = has(model, DECODER) and bool(_vector_keys(model))
    action, held = held_action(model.act_spec, taken)
    x = imagine_signal(model, state, action, horizon, observable)           # [N, H + 1, D]
    x = x[np.isfinite(x).all((1, 2))]
    if x.shape[0] == 0:
        raise ValueError("every imagined trajectory left the finite numbers; the model diverges when it "
                         "imagines freely")
    if observable:
        keys = _vector_keys(model)
        default = tuple(f"{k}[{i}]" for k in keys for i in range(math.prod(model.obs_spec[k].shape)))
        names = tuple(names) if names is not None and len(names) == len(default) else default
        signal = "decoded observations " + ", ".join(f"'{k}'" for k in keys)
    else:
        names = tuple(f"feature {i}" for i in range(x.shape[-1]))
        signal = "latent features"
    d = default_delays(x.shape[-1], x.shape[1]) if delays is None else delays
    result = dmd(x, dt, delays=d, energy=energy)
    return ImaginedModes(method=OBSERVABLE if observable else LATENT, signal=signal, names=names, held=held,
                         horizon=int(horizon), n_states=int(x.shape[0]), dmd=result, trajectories=x[:8])
