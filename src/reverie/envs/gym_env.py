"""Adapter from a gymnasium environment to reverie's step-dict convention.

Observation spaces become specs as follows (``size`` only when given):

- ``Box`` uint8 ``[H, W, 3]`` -> an image (resized to ``image_size``);
- any other ``Box`` -> flattened float32 ``[D]``;
- ``Discrete(n)`` -> one-hot float32 ``[n]``; ``MultiBinary`` -> flattened float32;
- ``Dict`` -> each entry by its own key, converted as above.

A top-level non-Dict observation is called ``image`` if it is an image and
``vector`` otherwise. ``obs="pixels"`` ignores the observation and returns
``env.render()`` (``render_mode="rgb_array"``) as ``image`` instead.

Actions: ``Discrete`` takes an int index, ``Box`` takes float32 ``[A]`` in
[-1, 1] rescaled to the true bounds. ``terminated`` sets ``is_last`` and
``is_terminal``; ``truncated`` (e.g. gymnasium's TimeLimit) sets ``is_last``
only, so value targets keep bootstrapping through time limits.

The first reset and the first step are checked against the declared spaces
(:mod:`reverie.envs.checks`): a wrong shape, dtype, bound or Dict key, a
reward that is not one finite number or flags that are not bools end in one
sentence. That replaces gymnasium's passive env checker (warnings, and
asserts for Dict keys), which is turned off for envs built from an id unless
``disable_env_checker=False`` is passed.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from PIL import Image

from reverie.envs.checks import check_gym_reset, check_gym_step, is_image_space
from reverie.envs.packages import missing_package
from reverie.envs.spaces import (
    STEP_KEYS,
    ActionSpec,
    ArraySpec,
    EnvError,
    Timing,
    default_obs_names,
    discrete_index,
    make_step,
    unit_to_bounds,
)

OBS_MODES = ("state", "pixels")


def resize_image(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize uint8 ``frame [H, W, 3]`` to ``size = (height, width)`` with PIL (bilinear, antialiased)."""
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    height, width = size
    image = Image.fromarray(np.ascontiguousarray(frame))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def check_image_frame(frame: object, what: str) -> np.ndarray:
    """``frame`` as uint8 ``[H, W, 3]``, or :class:`EnvError` naming ``what`` produced it."""
    arr = np.asarray(frame) if frame is not None else None
    if arr is None or arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        got = "None" if arr is None else f"{arr.dtype}{list(arr.shape)}"
        raise EnvError(f"{what} must return a uint8 [H, W, 3] frame, got {got}")
    return arr


def _obs_converter(
    space: gym.Space, where: str, image_size: tuple[int, int] | None
) -> tuple[ArraySpec, Callable[[Any], np.ndarray]]:
    """The spec of one observation entry and the function turning raw values into it."""
    if is_image_space(space):
        shape = (*image_size, 3) if image_size is not None else tuple(space.shape)
        spec = ArraySpec(shape, np.dtype(np.uint8))
        return spec, lambda x: resize_image(np.asarray(x, np.uint8), image_size)
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        dim = int(np.prod(space.shape))
        return ArraySpec((dim,), np.dtype(np.float32)), lambda x: np.asarray(x, np.float32).reshape(dim)
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)
        eye = np.eye(n, dtype=np.float32)
        return ArraySpec((n,), np.dtype(np.float32)), lambda x: eye[int(x) - start].copy()
    raise EnvError(
        f"observation space {where} is {space}, which reverie does not support: use Box, "
        "Discrete, MultiBinary or a Dict of those (e.g. wrap the env with "
        "gymnasium.wrappers.FlattenObservation)"
    )


def _action_converter(space: gym.Space) -> tuple[ActionSpec, Callable[[Any], Any]]:
    """The action spec in the model's convention and the map back to the env's own actions."""
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)
        return ActionSpec(discrete=True, size=n), lambda a: start + discrete_index(a, n)
    if isinstance(space, gym.spaces.Box) and np.issubdtype(space.dtype, np.floating):
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise EnvError(
                f"action space {space} has unbounded dimensions, so [-1, 1] cannot be rescaled "
                "onto it: give the env finite bounds (e.g. gymnasium.wrappers.ClipAction)"
            )
        dtype = space.dtype
        return (
            ActionSpec(discrete=False, size=int(np.prod(space.shape))),
            lambda a: unit_to_bounds(a, low, high).astype(dtype),
        )
    raise EnvError(
        f"action space {space} is not supported: reverie handles Discrete and float Box "
        "actions (e.g. wrap MultiDiscrete actions into a Discrete with your own wrapper)"
    )


def find_gym_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """Look up a registered id, importing ``module`` first for ``"module:Id-v0"``.

    Raises :class:`EnvError` with close matches when the id is unknown.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise missing_package(f"gym:{env_id}", err) or EnvError(
                f"cannot import module {module!r} named in gym id {env_id!r} ({err}); "
                "check that it is installed and on the Python path"
            ) from None
    if name.startswith("reverie/"):
        importlib.import_module("reverie.envs.memory")  # registers reverie's own ids (the memory suite)
        importlib.import_module("reverie.envs.shapes")  # and the block-pushing worlds
        importlib.import_module("reverie.envs.atari_pairs")  # and C-SWM's Atari episodes
    try:
        return gym.spec(name)
    except gym.error.Error:
        pass
    ids = list(gym.registry.keys())
    close = difflib.get_close_matches(name, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else (
        "; register it with gymnasium.register or write 'gym:your_module:Id-v0' so the "
        "module that registers it is imported first"
    )
    raise EnvError(f"gymnasium has no environment {name!r}{hint}") from None


def gym_timing(env: gym.Env) -> Timing:
    """Seconds per step of a gymnasium env by the conventions gymnasium's own envs follow: the
    unwrapped env's ``dt`` (Pendulum, Acrobot, every MuJoCo env), else its ``tau`` (CartPole), else
    one frame at ``metadata["render_fps"]``; unknown when none is there."""
    raw = env.unwrapped
    for attr in ("dt", "tau"):
        value = getattr(raw, attr, None)
        if isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and value > 0:
            return Timing(float(value), attr)
    fps = (env.metadata or {}).get("render_fps")
    if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps > 0:
        return Timing(1.0 / float(fps), "render_fps")
    return Timing()


def _supports_rgb_array(env_spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether the entry point declares ``rgb_array`` rendering (checked before construction)."""
    entry = env_spec.entry_point
    try:
        creator = gym.envs.registration.load_env_creator(entry) if isinstance(entry, str) else entry
    except (ImportError, AttributeError, ValueError, gym.error.DependencyNotInstalled):
        return False     # gymnasium.make says why, below
    metadata = getattr(creator, "metadata", None)
    return isinstance(metadata, dict) and "rgb_array" in (metadata.get("render_modes") or ())


class GymEnv:
    """A gymnasium environment speaking step dicts.

    Args:
        env: a registered id (``"CartPole-v1"``, ``"my_pkg.module:MyEnv-v0"``)
            or an already built ``gymnasium.Env``.
        obs: ``"state"`` (the env's observation) or ``"pixels"`` (rendered frames).
        seed: seeds the first reset (later resets continue that random stream);
            ``None`` leaves the env unseeded.
        image_size: ``(height, width)`` every image observation is resized to;
            ``None`` keeps the native size.
        timing: seconds per step, when the env's own conventions do not say it right (Atari's
            frameskip); None reads them (:func:`gym_timing`).
        make_kwargs: extra keyword arguments for ``gymnasium.make``.
    """

    def __init__(
        self,
        env: str | gym.Env,
        obs: str = "state",
        seed: int | None = 0,
        image_size: tuple[int, int] | None = None,
        timing: Timing | None = None,
        **make_kwargs: Any,
    ) -> None:
        if obs not in OBS_MODES:
            raise EnvError(f"obs={obs!r} is not an observation mode: choose one of {OBS_MODES}")
        if isinstance(env, str):
            env_spec = find_gym_spec(env)
            if obs == "pixels" or _supports_rgb_array(env_spec):
                make_kwargs.setdefault("render_mode", "rgb_array")
            make_kwargs.setdefault("disable_env_checker", True)   # reverie checks the first reset and step
            try:
                env = gym.make(env_spec, **make_kwargs)
            except (ImportError, gym.error.DependencyNotInstalled) as err:
                raise missing_package(f"gym:{env}", err) or err from None
        elif not isinstance(env, gym.Env):
            raise EnvError(f"GymEnv needs a gymnasium id or gymnasium.Env, got {type(env).__name__}")
        self._env = env
        self._pixels = obs == "pixels"
        self._seed = seed
        self._image_size = image_size
        self._needs_reset = True
        self._unchecked = {"reset", "step"}   # each is checked against the spaces once, the first time
        self._frame: np.ndarray | None = None
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        self.name = name

        if self._pixels:
            if env.render_mode != "rgb_array":
                raise EnvError(
                    f"obs='pixels' needs {name} built with render_mode='rgb_array', "
                    f"it has render_mode={env.render_mode!r}"
                )
            h, w = image_size if image_size is not None else self._probe_frame_size()
            self.obs_spec = {"image": ArraySpec((h, w, 3), np.dtype(np.uint8))}
            self._convert: dict[str, Callable[[Any], np.ndarray]] = {}
        else:
            self.obs_spec, self._convert = self._observation_specs(env.observation_space)
        self.act_spec, self._to_env_action = _action_converter(env.action_space)
        self._timing = timing if timing is not None else gym_timing(env)

    @property
    def timing(self) -> Timing:
        """Seconds per step (see :func:`gym_timing`)."""
        return self._timing

    @property
    def obs_names(self) -> dict[str, tuple[str, ...]]:
        """``key[i]`` per dimension: gymnasium spaces name no dimensions (a Dict names its keys)."""
        return default_obs_names(self.obs_spec)

    def _observation_specs(
        self, space: gym.Space
    ) -> tuple[dict[str, ArraySpec], dict[str, Callable[[Any], np.ndarray]]]:
        if isinstance(space, gym.spaces.Dict):
            specs: dict[str, ArraySpec] = {}
            converters: dict[str, Callable[[Any], np.ndarray]] = {}
            for key, sub in space.spaces.items():
                if not isinstance(key, str) or key in STEP_KEYS:
                    raise EnvError(
                        f"Dict observation key {key!r} clashes with the step-dict keys {STEP_KEYS} "
                        "or is not a string: rename it in the env"
                    )
                if isinstance(sub, gym.spaces.Dict):
                    raise EnvError(
                        f"Dict observation entry {key!r} is itself a Dict: flatten nested Dicts "
                        "into one level of keys"
                    )
                specs[key], converters[key] = _obs_converter(sub, f"entry {key!r}", self._image_size)
            return specs, converters
        spec, convert = _obs_converter(space, "", self._image_size)
        key = "image" if spec.is_image else "vector"
        return {key: spec}, {key: convert}

    def _probe_frame_size(self) -> tuple[int, int]:
        # Native pixel size is only known after a render, which needs a reset.
        # The first real reset() reseeds, so this probe does not change the episode it starts.
        self._env.reset(seed=self._seed)
        frame = check_image_frame(self._env.render(), f"{self.name}.render()")
        return frame.shape[0], frame.shape[1]

    def _observe(self, raw_obs: Any) -> dict[str, np.ndarray]:
        if self._pixels:
            self._frame = check_image_frame(self._env.render(), f"{self.name}.render()")
            return {"image": resize_image(self._frame, self._image_size)}
        if len(self._convert) == 1 and not isinstance(raw_obs, dict):
            (key, convert), = self._convert.items()
            return {key: convert(raw_obs)}
        return {key: convert(raw_obs[key]) for key, convert in self._convert.items()}

    @property
    def _declared_space(self) -> gym.Space | None:
        """The space raw observations are checked against (None for pixels, which ignore them)."""
        return None if self._pixels else self._env.observation_space

    def reset(self) -> dict[str, np.ndarray]:
        """First step of a new episode; obs keys as in ``obs_spec``."""
        if self._seed is not None:
            result = self._env.reset(seed=self._seed)
            self._seed = None  # later resets continue the seeded stream
        else:
            result = self._env.reset()
        if "reset" in self._unchecked:
            check_gym_reset(result, self._declared_space, f"{self.name} reset()")
            self._unchecked.discard("reset")
        raw, _ = result
        self._needs_reset = False
        return make_step(self._observe(raw), is_first=True)

    def step(self, action: npt.ArrayLike) -> dict[str, np.ndarray]:
        """Act once; ``action`` is an int index or float32 ``[A]`` in [-1, 1]."""
        if self._needs_reset:
            raise EnvError(f"{self.name}: call reset() before step(), and again after a step with is_last")
        result = self._env.step(self._to_env_action(action))
        if "step" in self._unchecked:
            check_gym_step(result, self._declared_space, f"{self.name} step()")
            self._unchecked.discard("step")
        raw, reward, terminated, truncated, _ = result
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        return make_step(
            self._observe(raw),
            reward=float(reward),
            is_last=terminated or truncated,
            is_terminal=terminated,
        )

    def render(self) -> np.ndarray:
        """The current frame at the env's native size, uint8 ``[H, W, 3]``."""
        if self._pixels and self._frame is not None:
            return self._frame
        if self._env.render_mode != "rgb_array":
            raise EnvError(
                f"{self.name} was not built with render_mode='rgb_array', so it cannot render frames"
            )
        return check_image_frame(self._env.render(), f"{self.name}.render()")

    def close(self) -> None:
        self._env.close()
