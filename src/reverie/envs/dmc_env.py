"""Adapter from a DeepMind Control Suite task to reverie's step-dict convention.

``obs="state"``: every entry of the task's observation dict, flattened and
concatenated in the task's own order, as ``vector`` float32 ``[D]``.
``obs="pixels"``: ``physics.render`` from camera 0 (camera 2 for quadruped,
the usual choice in the literature) as ``image`` uint8 ``[H, W, 3]``.

dm_control ends most tasks with its own time limit and discount 1: that is a
truncation (``is_last`` without ``is_terminal``); an end with discount 0 is
terminal. Pixels on a headless Linux machine use EGL, which needs the Debian
packages ``libegl1 libegl-mesa0 libgl1-mesa-dri``.

The first reset and the first step are checked once against the task's
``observation_spec()`` (keys and shapes) and the reward for being one finite
number, so a custom task that breaks its spec ends in one sentence.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from reverie.envs.checks import check_dm_observation, check_reward
from reverie.envs.spaces import ActionSpec, ArraySpec, EnvError, Timing, make_step, unit_to_bounds
from reverie.envs.variants import load_dmc_variant

#: Camera per domain for pixel observations; domains not listed use camera 0.
DEFAULT_CAMERAS = {"quadruped": 2}

_EGL_HINT = (
    "install the Debian packages libegl1 libegl-mesa0 libgl1-mesa-dri and set MUJOCO_GL=egl "
    "(or MUJOCO_GL=osmesa / glfw where those work)"
)


def import_suite():
    """Import ``dm_control.suite``, choosing EGL rendering on Linux unless MUJOCO_GL is set.

    dm_control picks its OpenGL backend once, at import, so the variable must
    be set before the first import anywhere in the process.
    """
    if sys.platform.startswith("linux"):
        os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        from dm_control import suite
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] in ("dm_control", "mujoco"):
            raise EnvError(
                "dm_control is not installed: pip install 'reverie[dmc]' for dmc:DOMAIN-TASK envs"
            ) from None
        raise EnvError(
            f"dm_control could not load its renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, "
            f"{err}): {_EGL_HINT}, or set MUJOCO_GL=disable for state observations only"
        ) from None
    except (ImportError, OSError, RuntimeError, AttributeError) as err:
        # A missing libEGL surfaces from PyOpenGL as one of these, at import time.
        raise EnvError(
            f"dm_control could not load its renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}, "
            f"{type(err).__name__}: {err}): {_EGL_HINT}, or set MUJOCO_GL=disable for state "
            "observations only"
        ) from None
    return suite


def dmc_task_names() -> list[str]:
    """Every known task as ``"domain-task"`` (benchmarking and extra tasks)."""
    suite = import_suite()
    return [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]


class DmcEnv:
    """A dm_control suite task speaking step dicts.

    Args:
        task: ``"domain-task"``, e.g. ``"cartpole-swingup"``, ``"ball_in_cup-catch"``.
        obs: ``"state"`` or ``"pixels"``.
        seed: the task's random seed (initial states, noise).
        size: ``(height, width)`` of rendered frames.
        camera: camera id for frames; ``None`` picks :data:`DEFAULT_CAMERAS`.
        variant: physics settings to change (cartpole's ``pole_length``, ``pole_mass``, ``cart_mass``;
            see :mod:`reverie.envs.variants`); empty or None: the task as dm_control ships it.
    """

    def __init__(
        self,
        task: str,
        obs: str = "state",
        seed: int | None = 0,
        size: tuple[int, int] = (64, 64),
        camera: int | None = None,
        variant: Mapping[str, Any] | None = None,
    ):
        if obs not in ("state", "pixels"):
            raise EnvError(f"obs={obs!r} is not an observation mode for dmc: choose 'state' or 'pixels'")
        suite = import_suite()
        domain, _, task_name = task.partition("-")
        if (domain, task_name) not in set(suite.ALL_TASKS):
            names = [f"{d}-{t}" for d, t in suite.ALL_TASKS]
            close = difflib.get_close_matches(task, names, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
                f"; write DOMAIN-TASK, e.g. 'cartpole-swingup' (known domains: "
                f"{', '.join(sorted({d for d, _ in suite.ALL_TASKS}))})"
            )
            raise EnvError(f"dm_control has no task {task!r}{hint}")
        self.name = task
        if variant:
            self.name = f"{task}?{'&'.join(f'{k}={v}' for k, v in variant.items())}"
            self._env = load_dmc_variant(domain, task_name, variant, seed)
        else:
            self._env = suite.load(domain, task_name, task_kwargs={"random": seed})
        self._pixels = obs == "pixels"
        self._size = (int(size[0]), int(size[1]))
        self._camera = DEFAULT_CAMERAS.get(domain, 0) if camera is None else int(camera)
        self._needs_reset = True
        self._unchecked = {"reset", "step"}   # each is checked against the spec once, the first time
        self._frame: np.ndarray | None = None

        if self._pixels:
            self.obs_spec = {"image": ArraySpec((*self._size, 3), np.dtype(np.uint8))}
        else:
            dim = sum(int(np.prod(spec.shape)) for spec in self._env.observation_spec().values())
            self.obs_spec = {"vector": ArraySpec((dim,), np.dtype(np.float32))}
        spec = self._env.action_spec()
        self._low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
        self._high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
        self.act_spec = ActionSpec(discrete=False, size=int(np.prod(spec.shape)))

    @property
    def timing(self) -> Timing:
        """The task's control time step (physics steps per control step times the physics step)."""
        return Timing(float(self._env.control_timestep()), "control_timestep")

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        """The task's own observation names, one per dimension (``position[0]``, ``velocity``, ...)."""
        if self._pixels:
            return {}
        names = []
        for key, spec in self._env.observation_spec().items():
            size = int(np.prod(spec.shape))
            names.extend([key] if size == 1 else [f"{key}[{i}]" for i in range(size)])
        return {"vector": tuple(names)}

    def _render_frame(self) -> np.ndarray:
        try:
            return self._env.physics.render(*self._size, camera_id=self._camera)
        except Exception as err:  # the GL backend fails here when no context can be made
            raise EnvError(
                f"dm_control could not render {self.name} ({type(err).__name__}: {err}): {_EGL_HINT}"
            ) from None

    def _observe(self, time_step) -> dict[str, np.ndarray]:
        if self._pixels:
            self._frame = self._render_frame()
            return {"image": self._frame}
        parts = [np.asarray(v, np.float32).reshape(-1) for v in time_step.observation.values()]
        return {"vector": np.concatenate(parts)}

    def _check_once(self, time_step, method: str) -> None:
        """Check ``time_step`` against the task's spec the first time ``method`` returns one."""
        if method not in self._unchecked:
            return
        where = f"{self.name} {method}()"
        check_dm_observation(time_step.observation, self._env.observation_spec(), where)
        if method == "step":
            check_reward(time_step.reward, where)
        self._unchecked.discard(method)

    def reset(self) -> dict[str, np.ndarray]:
        """First step of a new episode."""
        time_step = self._env.reset()
        self._check_once(time_step, "reset")
        self._needs_reset = False
        return make_step(self._observe(time_step), is_first=True)

    def step(self, action) -> dict[str, np.ndarray]:
        """Act once; ``action`` is float32 ``[A]`` in [-1, 1], rescaled to the task's bounds."""
        if self._needs_reset:
            # dm_env would silently start a new episode here; say so instead.
            raise EnvError(f"{self.name}: call reset() before step(), and again after a step with is_last")
        time_step = self._env.step(unit_to_bounds(action, self._low, self._high))
        self._check_once(time_step, "step")
        is_last = bool(time_step.last())
        self._needs_reset = is_last
        return make_step(
            self._observe(time_step),
            reward=float(time_step.reward or 0.0),
            is_last=is_last,
            is_terminal=is_last and float(time_step.discount) == 0.0,
        )

    def render(self) -> np.ndarray:
        """The current frame, uint8 ``[H, W, 3]`` at ``size``."""
        if self._pixels and self._frame is not None:
            return self._frame
        return self._render_frame()

    def close(self) -> None:
        self._env.close()
