"""The registry of sequence cores: ``model.dynamics`` names one, and the RSSM builds it from here.

A new core is one module (a :class:`~reverie.models.sequence_core.SequenceCore` subclass) and one line in
:data:`SEQUENCE_CORES`, or a call of :func:`register_core` from code outside the library.
"""

from __future__ import annotations

from reverie.config import ConfigError
from reverie.models.gru_core import GRUCore
from reverie.models.sequence_core import CoreSettings, SequenceCore
from reverie.models.ssm import SSMDynamics
from reverie.models.transformer_dynamics import TransformerDynamics

SEQUENCE_CORES: dict[str, type[SequenceCore]] = {
    "gru": GRUCore,
    "transformer": TransformerDynamics,
    "ssm": SSMDynamics,
}
"""Name (the value of ``model.dynamics``) -> core class."""


def register_core(name: str, core: type[SequenceCore]) -> None:
    """Make ``core`` buildable as ``name``; a name already taken is refused."""
    if not (isinstance(core, type) and issubclass(core, SequenceCore)):
        raise TypeError(f"a sequence core must be a SequenceCore subclass, got {core!r}")
    if name in SEQUENCE_CORES:
        raise ValueError(f"the sequence core name {name!r} is taken by {SEQUENCE_CORES[name].__name__}")
    SEQUENCE_CORES[name] = core


def build_core(name: str, hidden: int, deter: int, settings: CoreSettings | None = None) -> SequenceCore:
    """The core registered as ``name`` for inputs ``[.., hidden]`` and states ``[.., deter]``, with its config
    section ``settings`` (None: its defaults)."""
    if name not in SEQUENCE_CORES:
        raise ConfigError(f"model.dynamics={name!r} is not a sequence core: choose one of {', '.join(SEQUENCE_CORES)}")
    return SEQUENCE_CORES[name].build(hidden, deter, settings)
