"""Several environments as one: a multitask run pads every task to the largest observation and action.

``run.env`` may name several environments separated by commas (``"dmc:cartpole-swingup,dmc:pendulum-swingup"``).
Each task keeps its own environment; :class:`PaddedTask` makes all of them speak one pair of specs, the
:class:`TaskLayout` that :func:`task_layout` derives from theirs (TD-MPC2's multitask recipe):

- every vector observation key is zero-padded at its end to the largest size any task has;
- continuous actions are ``[A]`` with ``A`` the largest action size; a task reads only its own first
  dimensions and ignores the padding;
- two keys are added to every step: :data:`~reverie.specs.TASK_KEY`, the task's one-hot ``[K]``, and
  :data:`~reverie.specs.ACTION_MASK_KEY`, ``[A]`` with 1 on the task's own action dimensions, 0 on the
  padding. A model that knows the keys (TD-MPC2) embeds the task and masks its actions; the collection
  stores actions multiplied by the mask, so the padded dimensions of stored actions are zero.

Tasks must agree on what kind of thing they observe and do: all continuous or all discrete actions (discrete
ones of one size), the same observation keys, pixels with pixels (of one size) and state with state. Anything
else is refused in one sentence. One task is no multitask run: it is used as it is, unwrapped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from reverie.envs.spaces import Env, EnvError, Timing
from reverie.specs import ACTION_MASK_KEY, TASK_KEY, ActionSpec, ArraySpec

__all__ = ["PaddedTask", "TaskLayout", "split_tasks", "task_layout"]


def split_tasks(env: str) -> tuple[str, ...]:
    """The environment names of ``run.env``: ``"A,B"`` -> ``("A", "B")``, ``"A"`` -> ``("A",)``."""
    names = tuple(part.strip() for part in env.split(","))
    if len(names) > 1 and not all(names):
        raise EnvError(f"run.env={env!r} has an empty name between its commas; write 'SUITE:TASK,SUITE:TASK'")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise EnvError(f"run.env names {', '.join(twice)} more than once; each task is trained once")
    return names


@dataclass(frozen=True)
class TaskLayout:
    """The shared specs of several tasks and where each one sits inside them."""

    names: tuple[str, ...]
    """The tasks, in the order of ``run.env``; task ``k`` is the ``k``-th."""
    obs_spec: dict[str, ArraySpec]
    """Padded observation keys plus ``task [K]`` and ``action_mask [A]``."""
    act_spec: ActionSpec
    """The largest action size (continuous), or the one shared size (discrete)."""
    action_sizes: tuple[int, ...]
    """Each task's own action size."""

    def mask(self, index: int) -> np.ndarray:
        """Task ``index``'s action mask ``[A]`` float32."""
        mask = np.zeros(self.act_spec.size, np.float32)
        mask[:self.action_sizes[index]] = 1.0
        return mask

    def one_hot(self, index: int) -> np.ndarray:
        """Task ``index``'s identity ``[K]`` float32."""
        return np.eye(len(self.names), dtype=np.float32)[index]


def _kind(obs_spec: Mapping[str, ArraySpec]) -> str:
    images = [k for k, s in obs_spec.items() if s.is_image]
    return "pixels" if images and len(images) == len(obs_spec) else "state" if not images else "pixels and state"


def task_layout(names: Sequence[str], specs: Sequence[tuple[Mapping[str, ArraySpec], ActionSpec]]) -> TaskLayout:
    """The :class:`TaskLayout` of tasks ``names`` whose own ``(obs_spec, act_spec)`` are ``specs``; EnvError
    in one sentence where they cannot share one (see the module docstring)."""
    (first_obs, first_act), first = specs[0], names[0]
    for name, (obs_spec, act_spec) in zip(names[1:], specs[1:]):
        if act_spec.discrete != first_act.discrete:
            kinds = {True: "discrete", False: "continuous"}
            raise EnvError(f"task {name} has {kinds[act_spec.discrete]} actions but {first} has "
                           f"{kinds[first_act.discrete]} ones; a multitask run trains tasks of one action kind")
        if act_spec.discrete and act_spec.size != first_act.size:
            raise EnvError(f"task {name} has {act_spec.size} discrete actions but {first} has {first_act.size}; "
                           "discrete tasks of a multitask run must have the same number of actions")
        if _kind(obs_spec) != _kind(first_obs):
            raise EnvError(f"task {name} observes {_kind(obs_spec)} but {first} observes {_kind(first_obs)}; "
                           "a multitask run trains tasks that observe the same kind of thing")
        if set(obs_spec) != set(first_obs):
            raise EnvError(f"task {name} has observation keys {sorted(obs_spec)} but {first} has "
                           f"{sorted(first_obs)}; a multitask run needs the same keys in every task")
    padded: dict[str, ArraySpec] = {}
    for key, spec in first_obs.items():
        shapes = {tuple(obs[key].shape) for obs, _ in specs}
        dtypes = {np.dtype(obs[key].dtype) for obs, _ in specs}
        if len(dtypes) > 1 or (len(shapes) > 1 and (spec.is_image or any(len(s) != 1 for s in shapes))):
            raise EnvError(f"observation {key!r} is {sorted(shapes)} {sorted(map(str, dtypes))} across the tasks; "
                           "only flat state vectors of one dtype are padded to one size")
        padded[key] = ArraySpec((max(s[0] for s in shapes),) if not spec.is_image else tuple(spec.shape), spec.dtype)
    for key in (TASK_KEY, ACTION_MASK_KEY):
        if key in padded:
            raise EnvError(f"the tasks already observe a key {key!r}, which a multitask run adds itself")
    sizes = tuple(act.size for _, act in specs)
    act = ActionSpec(first_act.discrete, max(sizes))
    padded[TASK_KEY] = ArraySpec((len(names),), np.dtype(np.float32))
    padded[ACTION_MASK_KEY] = ArraySpec((act.size,), np.dtype(np.float32))
    return TaskLayout(tuple(names), padded, act, sizes)


class PaddedTask:
    """Task ``index`` of ``layout``, speaking the layout's specs (see the module docstring)."""

    def __init__(self, env: Env, index: int, layout: TaskLayout):
        self.env, self.index, self.layout = env, index, layout
        self.obs_spec = dict(layout.obs_spec)
        self.act_spec = layout.act_spec
        self.own_actions = layout.action_sizes[index]
        self._extra = {TASK_KEY: layout.one_hot(index), ACTION_MASK_KEY: layout.mask(index)}

    @property
    def name(self) -> str:
        return self.layout.names[self.index]

    @property
    def timing(self) -> Timing:
        return self.env.timing

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        own = self.env.obs_names
        return {k: (*own[k], *(f"{k}[{i}] (padding)" for i in range(len(own[k]), self.obs_spec[k].shape[0])))
                for k in own}

    def _pad(self, step: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(step)
        for key, spec in self.layout.obs_spec.items():
            if key in step and not spec.is_image and step[key].shape != tuple(spec.shape):
                value = np.zeros(spec.shape, spec.dtype)
                value[:step[key].shape[0]] = step[key]
                out[key] = value
        out.update({k: v.copy() for k, v in self._extra.items()})
        return out

    def reset(self) -> dict[str, np.ndarray]:
        return self._pad(self.env.reset())

    def step(self, action) -> dict[str, np.ndarray]:
        """``action``: the layout's ``[A]`` (continuous; only the task's first dimensions are used) or an index."""
        if not self.act_spec.discrete:
            action = np.asarray(action, np.float32).reshape(-1)[:self.own_actions]
        return self._pad(self.env.step(action))

    def render(self) -> np.ndarray:
        return self.env.render()

    def close(self) -> None:
        self.env.close()
