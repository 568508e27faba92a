"""World models behind one contract (see :mod:`reverie.models.base`).

Families: the RSSM (categorical = DreamerV2/V3, Gaussian = PlaNet/DreamerV1)
in :mod:`~reverie.models.world_model`, its deterministic path a sequence core
(:mod:`~reverie.models.sequence_core`) named in :mod:`~reverie.models.cores`, PETS' probabilistic ensemble in
:mod:`~reverie.models.ensemble_model`, DIAMOND's diffusion model of the next frame in
:mod:`~reverie.models.diffusion`.
"""

from reverie.models.base import (CAPABILITIES, CONT, DECODER, POLICY, REWARD, VALUE, CapabilityError, Dynamics,
                                 ModelWithHeads, WorldModel, capabilities_of, has, require, with_heads)
from reverie.models.batch import Batch, BatchError
from reverie.models.cores import build_core, register_core
from reverie.models.diffusion import DiffusionModelConfig, DiffusionWorldModel
from reverie.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from reverie.models.ensemble_model import EnsembleWorldModel
from reverie.models.rssm import RSSM, RSSMConfig
from reverie.models.sequence_core import SequenceCore
from reverie.models.state import State, StateError, stack_states
from reverie.models.world_model import RSSMWorldModel, WorldModelConfig, loss_scales

__all__ = [
    "CAPABILITIES", "CONT", "DECODER", "POLICY", "REWARD", "VALUE", "Batch", "BatchError", "CapabilityError",
    "DiffusionModelConfig", "DiffusionWorldModel", "Dynamics", "EnsembleConfig", "EnsembleWorldModel", "ModelWithHeads", "ProbabilisticEnsemble", "RSSM",
    "RSSMConfig", "RSSMWorldModel", "SequenceCore", "State", "StateError", "WorldModel",
    "WorldModelConfig", "build_core", "capabilities_of", "has", "loss_scales", "register_core", "require",
    "stack_states", "with_heads",
]
