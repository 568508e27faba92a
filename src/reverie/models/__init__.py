"""World models behind one interface (see :mod:`reverie.models.base`)."""

from reverie.models.base import State, WorldModel, stack_states
from reverie.models.ensemble import EnsembleConfig, ProbabilisticEnsemble
from reverie.models.rssm import RSSM, RSSMConfig
from reverie.models.world_model import RSSMWorldModel, WorldModelConfig

__all__ = ["EnsembleConfig", "ProbabilisticEnsemble", "RSSM", "RSSMConfig", "RSSMWorldModel", "State",
           "WorldModel", "WorldModelConfig", "stack_states"]
