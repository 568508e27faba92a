"""World Models' controller C and its search: the linear controller on a population of candidates at once,
CMA-ES (the ``cma`` package) restorable from its fitness history, and the seeds and inputs they use.

:class:`Controller` maps the features of World Models' model (``[z, h]``, ``[z, c, h]`` or ``z``, see
:func:`controller_input`) to actions, one parameter vector per candidate; :class:`Evolution` asks for
candidates and is told their fitnesses, one generation at a time, and rebuilds its exact state from the
fitnesses alone (nothing of ``cma`` is pickled), which is how a resumed run continues its search.
"""

from __future__ import annotations

import numpy as np
import torch

from reverie.config import ConfigError
from reverie.specs import ActionSpec

__all__ = ["Controller", "Evolution", "controller_input", "generation_env_seeds"]


def generation_env_seeds(seed: int, generation: int, population: int, rollouts: int, num_envs: int) -> list[int]:
    """Seeds of the ``num_envs`` real environments that score generation ``generation``'s candidates: apart
    from the collection's and every other generation's."""
    return [seed + 50_000 + generation * population * rollouts + i for i in range(num_envs)]


def controller_input(features: torch.Tensor, which: str, z_size: int, hidden: int) -> torch.Tensor:
    """``[z, c, h]``, ``[z, h]`` or ``z`` (``which``) out of World Models features ``[..., z (+ c) + h]``."""
    if which == "z":
        return features[..., :z_size]
    if which == "zh":
        return torch.cat([features[..., :z_size], features[..., -hidden:]], -1)
    if features.shape[-1] != z_size + 2 * hidden:
        raise ConfigError("controller_input='zch' needs a model built with features='zch'")
    return features


class Controller:
    """The linear controller on N candidates at once: parameters ``[N, size]`` -> actions ``[N, A]``.

    ``size = O * F (+ O with a bias)`` for ``O`` outputs on ``F`` inputs: one per action dimension (the
    argmax over them for discrete actions), or a single one cut into ``len(bins)`` equal bins over
    [-1, 1] of its tanh, bin k playing discrete action ``bins[k]``. Continuous actions are tanh of the
    outputs, those in ``clip_dims`` clipped at zero (in model space ``2 max(tanh, 0) - 1``, so a zero
    output is the lowest action the environment takes).
    """

    def __init__(self, in_size: int, act_spec: ActionSpec, bias: bool = True, bins: tuple[int, ...] = (),
                 clip_dims: tuple[int, ...] = ()):
        self.in_size, self.act_spec, self.bias = in_size, act_spec, bias
        self.bins = tuple(bins) if act_spec.discrete else ()
        self.clip_dims = [] if act_spec.discrete else list(clip_dims)
        self.outputs = 1 if self.bins else act_spec.size
        self.size = self.outputs * in_size + (self.outputs if bias else 0)

    def act(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Model-space actions ``[N, A]`` (one-hot for discrete) for inputs ``x [N, F]``."""
        O, A = self.outputs, self.act_spec.size
        W = params[:, :O * self.in_size].reshape(-1, O, self.in_size)
        out = torch.einsum("nof,nf->no", W, x)
        if self.bias:
            out = out + params[:, O * self.in_size:]
        if self.act_spec.discrete:
            if self.bins:
                k = ((torch.tanh(out[:, 0]) + 1.0) * (len(self.bins) / 2.0)).long().clamp(0, len(self.bins) - 1)
                index = torch.as_tensor(self.bins, device=x.device)[k]
            else:
                index = out.argmax(-1)
            return torch.nn.functional.one_hot(index, A).to(x.dtype)
        action = torch.tanh(out)
        if self.clip_dims:
            action[:, self.clip_dims] = 2.0 * action[:, self.clip_dims].clamp(min=0.0) - 1.0
        return action


class Evolution:
    """CMA-ES (the ``cma`` package) that maximises, restorable from its fitness history and its start alone.

    The sampler draws generation g's candidates from a generator seeded by (seed, g), so replaying
    the history (ask again, tell the stored fitnesses) rebuilds the exact state: nothing of ``cma``
    is pickled.
    """

    def __init__(self, size: int, population: int, sigma0: float, seed: int, start: np.ndarray | None = None):
        """``start``: the mean the search begins at (zeros when None)."""
        self.size, self.population, self.sigma0, self.seed = size, population, sigma0, seed
        self.start = np.zeros(size) if start is None else np.asarray(start, np.float64).reshape(size)
        self.restore(np.zeros((0, population)))

    def _normal(self, *shape: int) -> np.ndarray:
        return self._rng.standard_normal(shape)

    def restore(self, fitness: np.ndarray) -> None:
        """Start over and replay the generations whose fitnesses are ``fitness [G, population]``."""
        import cma

        self._rng = np.random.default_rng([self.seed, 0])
        self.es = cma.CMAEvolutionStrategy(self.start.copy(), self.sigma0,
                                           {"popsize": self.population, "seed": self.seed + 1, "verbose": -9,
                                            "randn": self._normal})
        self.fitness = np.zeros((0, self.population))
        self._asked: np.ndarray | None = None
        for row in np.asarray(fitness, np.float64):
            self.ask()
            self.tell(row)

    @property
    def generation(self) -> int:
        return len(self.fitness)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.es.mean)

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def ask(self) -> np.ndarray:
        """This generation's candidates ``[population, size]`` (the same ones when asked again)."""
        if self._asked is None:
            self._rng = np.random.default_rng([self.seed, 1, self.generation])
            self._asked = np.stack(self.es.ask())
        return self._asked

    def tell(self, fitness: np.ndarray) -> None:
        """Fitnesses ``[population]`` of the asked candidates (larger is better)."""
        fitness = np.asarray(fitness, np.float64).reshape(self.population)
        self.es.tell(list(self.ask()), list(-fitness))
        self.fitness = np.concatenate([self.fitness, fitness[None]])
        self._asked = None
