"""Environment packages reverie installs through its extras, and the one sentence for a missing one.

Environments come from optional packages (gymnasium's box2d for CarRacing, vizdoom, dm_control, ale-py,
MinAtar, popgym). When one is missing, the import fails deep inside gymnasium or the package (gymnasium's
``DependencyNotInstalled`` traceback for CarRacing); :func:`missing_package` turns such a failure into one
sentence that names the extra of reverie to install.
"""

from __future__ import annotations

from typing import Mapping

from reverie.envs.spaces import EnvError

__all__ = ["EXTRAS", "missing_package"]

#: top-level module -> (the package that provides it, the extra of reverie that installs it)
EXTRAS: Mapping[str, tuple[str, str]] = {
    "Box2D": ("box2d", "box2d"),
    "vizdoom": ("vizdoom", "vizdoom"),
    "dm_control": ("dm-control", "dmc"),
    "mujoco": ("mujoco", "dmc"),
    "ale_py": ("ale-py", "atari"),
    "minatar": ("MinAtar", "minatar"),
    "popgym": ("popgym", "popgym"),
}


def missing_package(env_name: str, err: BaseException) -> EnvError | None:
    """An :class:`EnvError` naming the extra to install if ``err`` (or an exception it was raised from) is
    a module of :data:`EXTRAS` that is not installed; None for any other failure."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        name = getattr(cause, "name", None) if isinstance(cause, ModuleNotFoundError) else None
        top = name.split(".")[0] if name else None
        if top is not None and top in EXTRAS:
            package, extra = EXTRAS[top]
            return EnvError(f"{env_name} needs the {package} package, which is not installed: "
                            f"pip install 'reverie[{extra}]'")
        cause = cause.__cause__ or cause.__context__
    return None
