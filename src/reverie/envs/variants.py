"""Physics variants of an environment, written into its name: ``TASK?key=value&key=value``.

``gym:Pendulum-v1?g=4.0`` passes ``g=4.0`` to ``gymnasium.make`` (any keyword argument the
environment's constructor takes); ``dmc:cartpole-swingup?pole_length=1.5&pole_mass=0.2`` builds the
cartpole from dm_control's own model XML with the pole edited (:func:`cartpole_xml`). Values are read as
Python literals (``4``, ``4.0``, ``true``/``false``) and kept as text otherwise.

A key the environment does not take is refused in one sentence that lists the keys it does take.
"""

from __future__ import annotations

import ast
import inspect
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from typing import Any

from reverie.envs.spaces import EnvError

__all__ = ["CARTPOLE_KEYS", "Variant", "cartpole_xml", "check_gym_keys", "load_dmc_variant", "split_variant"]

Variant = dict[str, Any]

#: The cartpole's physics a dmc variant may change: the pole's length (m) and mass (kg), the cart's mass.
CARTPOLE_KEYS = ("pole_length", "pole_mass", "cart_mass")

#: dm_control's cartpole tasks by name: (swing_up, sparse), the arguments of its ``Balance`` task.
_CARTPOLE_TASKS = {"balance": (False, False), "balance_sparse": (False, True),
                   "swingup": (True, False), "swingup_sparse": (True, True)}


def _value(text: str) -> Any:
    words = {"true": True, "false": False, "none": None}
    if text.lower() in words:
        return words[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def split_variant(task: str) -> tuple[str, Variant]:
    """``"Pendulum-v1?g=4.0&max_episode_steps=100"`` -> ``("Pendulum-v1", {"g": 4.0, "max_episode_steps": 100})``.

    A task without ``?`` comes back with an empty variant. EnvError for a part that is not ``key=value``
    or a key given twice.
    """
    base, sep, query = task.partition("?")
    variant: Variant = {}
    if not sep:
        return task, variant
    for part in query.split("&"):
        key, eq, text = part.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise EnvError(f"the variant part {part!r} of {task!r} is not key=value (write e.g. '{base}?g=4.0')")
        if key in variant:
            raise EnvError(f"the variant of {task!r} sets {key!r} twice")
        variant[key] = _value(text.strip())
    return base, variant


def _refuse(task: str, unknown: list[str], allowed: list[str]) -> EnvError:
    return EnvError(f"{task} takes no variant key {', '.join(repr(k) for k in unknown)}; "
                    f"the keys it takes are: {', '.join(allowed) or 'none'}")


def check_gym_keys(env_id: str, entry_point: Any, variant: Mapping[str, Any]) -> None:
    """Refuse keys that neither the environment's constructor (``entry_point``: a class or function, or its
    ``"module:Name"`` string) nor ``gymnasium.make`` itself takes, naming the ones that are allowed."""
    import gymnasium as gym

    creator = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    params = inspect.signature(creator).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return   # the constructor takes any keyword
    own = [name for name, p in params.items() if name != "self" and p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    made = ["max_episode_steps", "disable_env_checker"]   # what gymnasium.make takes for itself
    unknown = [key for key in variant if key not in own and key not in made]
    if unknown:
        raise _refuse(f"gym:{env_id}", unknown, own + made)


def cartpole_xml(xml: str | bytes, pole_length: float | None = None, pole_mass: float | None = None,
                 cart_mass: float | None = None) -> str:
    """dm_control's cartpole model XML with the single pole and the cart edited.

    The pole is the geom named ``pole_1`` (a capsule from its hinge straight up, ``fromto="0 0 0 0 0 L"``,
    1 m long in the stock model, mass 0.1 kg from the ``pole`` default class); the cart is the geom named
    ``cart`` (1 kg). Each setting given is written on the named geom itself, so it overrides the default
    class; ``None`` leaves that part as it is.
    """
    root = ElementTree.fromstring(xml)
    pole = root.find(".//body[@name='pole_1']/geom[@name='pole_1']")
    cart = root.find(".//body[@name='cart']/geom[@name='cart']")
    if pole is None or cart is None:
        raise EnvError("dm_control's cartpole XML has no geoms named 'pole_1' and 'cart'; its model changed")
    for name, value in (("pole_length", pole_length), ("pole_mass", pole_mass), ("cart_mass", cart_mass)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
            raise EnvError(f"dmc cartpole variant {name} must be a positive number, got {value!r}")
    if pole_length is not None:
        pole.set("fromto", f"0 0 0 0 0 {float(pole_length)!r}")
    if pole_mass is not None:
        pole.set("mass", repr(float(pole_mass)))
    if cart_mass is not None:
        cart.set("mass", repr(float(cart_mass)))
    return ElementTree.tostring(root, encoding="unicode")


def load_dmc_variant(domain: str, task: str, variant: Mapping[str, Any], seed: int | None) -> Any:
    """A dm_control ``control.Environment`` of ``domain-task`` with the physics ``variant`` asks for.

    Only cartpole's single-pole tasks take variants (:data:`CARTPOLE_KEYS`); EnvError otherwise.
    """
    name = f"dmc:{domain}-{task}"
    if domain != "cartpole" or task not in _CARTPOLE_TASKS:
        raise EnvError(f"{name} takes no variant keys; physics variants exist for "
                       f"{', '.join(f'dmc:cartpole-{t}' for t in _CARTPOLE_TASKS)} ({', '.join(CARTPOLE_KEYS)})")
    unknown = [key for key in variant if key not in CARTPOLE_KEYS]
    if unknown:
        raise _refuse(name, unknown, list(CARTPOLE_KEYS))
    from dm_control.rl import control
    from dm_control.suite import cartpole, common

    xml, assets = cartpole.get_model_and_assets()
    physics = cartpole.Physics.from_xml_string(cartpole_xml(xml, **variant), assets)
    swing_up, sparse = _CARTPOLE_TASKS[task]
    return control.Environment(physics, cartpole.Balance(swing_up=swing_up, sparse=sparse, random=seed),
                               time_limit=cartpole._DEFAULT_TIME_LIMIT)
