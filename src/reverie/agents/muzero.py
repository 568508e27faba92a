"""MuZero (Schrittwieser et al., 2020): a value-equivalent model learned from replay, acting by tree search.

This file only composes parts: :class:`MuZeroModel` (representation, dynamics, prediction), the tree
search planner :func:`reverie.planning.tree_search.mcts_plan` (PUCT, or Gumbel MuZero with
``search.algorithm=gumbel``) run on that model for every step, the search's policy and root value
stored in the replay beside each step (the agent's ``extras``), the targets of
:mod:`reverie.agents.muzero_targets`, and one Adam optimiser.

Value targets bootstrap, n steps ahead, from a target network's value of the observation there
(``bootstrap=model``, as EfficientZero and LightZero do; the target network is a copy refreshed
every ``target_every`` updates), or from the root value the search stored beside that step
(``bootstrap=search``, the MuZero paper). The stored values were computed by networks that may be
thousands of updates old, which holds the values back while the policy improves.

Reanalysis (``reanalyse`` > 0): for that fraction of every batch the stored search policies and
values are replaced by a fresh search with the latest network before the targets are built
(MuZero Reanalyse), so old data keeps teaching the current model.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
import torch

from reverie.agents.base import ActOutput, AgentBase, ReplayRatio, gradient_step, observe_step, to_env_action
from reverie.agents.muzero_targets import unroll_targets
from reverie.config import ConfigError, Fraction, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.models import Batch
from reverie.models.muzero import MuZeroModel, MuZeroModelConfig
from reverie.models.state import flatten_batch
from reverie.planning.tree_search import MCTSPlannerSettings, mcts_plan
from reverie.run_config import RunConfig
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["MuZero", "MuZeroConfig", "muzero_run"]


def muzero_run() -> RunConfig:
    """CartPole-sized: 8 environments searched together, sequences of 1 + unroll + td_steps steps, a
    quarter of an update per environment step (train_ratio = 0.25 * batch_size * seq_len)."""
    return RunConfig(env="gym:CartPole-v1", steps=50_000, num_envs=8, batch_size=128, seq_len=16,
                     train_ratio=512.0, prefill=16, eval_every=5000, eval_episodes=10, checkpoint_every=5000,
                     log_every=1000, threads=1)


@dataclass(frozen=True)
class MuZeroConfig:
    """Everything that defines a MuZero run."""

    model: MuZeroModelConfig = field(default_factory=MuZeroModelConfig)
    """Representation, dynamics and prediction networks."""
    search: MCTSPlannerSettings = field(default_factory=MCTSPlannerSettings)
    """The tree search that acts and makes the policy targets (its ``discount`` is also the targets')."""
    unroll: PositiveInt = 5
    """K: steps the dynamics is unrolled along real actions in every update."""
    td_steps: PositiveInt = 10
    """n: rewards summed before bootstrapping."""
    bootstrap: Literal["model", "search"] = "model"
    """Where the value n steps ahead comes from: the target network, or the search's stored root value."""
    target_every: PositiveInt = 100
    """Updates between refreshes of the target network (``bootstrap=model``)."""
    lr: PositiveFloat = 3e-3
    """Adam learning rate."""
    weight_decay: NonNegativeFloat = 1e-4
    """L2 weight decay (MuZero uses 1e-4)."""
    grad_clip: PositiveFloat = 10.0
    """Global gradient-norm clip."""
    value_scale: NonNegativeFloat = 0.25
    """Weight of the value loss (MuZero Reanalyse uses 0.25)."""
    reward_scale: NonNegativeFloat = 1.0
    """Weight of the reward loss."""
    policy_scale: NonNegativeFloat = 1.0
    """Weight of the policy loss."""
    dynamics_grad: Fraction = 0.5
    """Gradient scale into the dynamics at every unrolled step (MuZero: 1/2)."""
    reanalyse: Fraction = 0.0
    """Fraction of every batch whose policy and value targets a fresh search recomputes."""
    run: RunConfig = field(default_factory=muzero_run)
    """Environment, budget and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)


class MuZero(AgentBase):
    """The MuZero agent (see :mod:`reverie.agents.base`): tree search to act, one update per replay batch."""

    name = "muzero"
    schedule = ReplayRatio()

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: MuZeroConfig,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        if not act_spec.discrete:
            raise ConfigError("MuZero searches a tree of discrete actions, but this environment's actions are "
                              "continuous; train dreamer, planet or pets on it")
        need = 1 + cfg.unroll + cfg.td_steps
        if cfg.run.seq_len < need:
            raise ConfigError(f"MuZero needs run.seq_len >= 1 + unroll + td_steps = {need}; got {cfg.run.seq_len}")
        self.cfg = cfg
        self.wm = MuZeroModel(obs_spec, act_spec, cfg.model).to(self.device)
        self.target = copy.deepcopy(self.wm).requires_grad_(False)
        self.modules = {"model": self.wm, "target": self.target}
        self.optimizers = {"model_opt": torch.optim.Adam(self.wm.parameters(), lr=cfg.lr,
                                                         weight_decay=cfg.weight_decay)}
        self.model = self.wm
        self.discount = cfg.search.discount
        self.greedy = dataclasses.replace(cfg.search, explore=False)
        self.exploring = dataclasses.replace(cfg.search, explore=True)
        self.planner_defaults = {"mcts": self.greedy}
        self.extras_spec = {"search_policy": ArraySpec((act_spec.size,), np.dtype(np.float32)),
                            "root_value": ArraySpec((), np.dtype(np.float32))}
        self.scales = {"value": cfg.value_scale, "reward": cfg.reward_scale, "policy": cfg.policy_scale}
        self.updates = 0

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> None:
        return None   # each step's latent comes from its own observation

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        latent = observe_step(self.wm, step, None, self.device)
        result = mcts_plan(self.wm, latent, self.exploring if explore else self.greedy)
        action = result.action
        extras = {"search_policy": result.extras["search_policy"].float().cpu().numpy(),
                  "root_value": result.extras["root_value"].float().cpu().numpy()}
        return ActOutput(to_env_action(action, self.act_spec), action.cpu().numpy(), None, extras)

    # -- learning ------------------------------------------------------------------------------
    @torch.no_grad()
    def reanalysed(self, batch: Batch, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh search policies ``[rows, T, K]`` and values ``[rows, T]`` for the first ``rows`` sequences."""
        b, t = batch.shape
        obs = {k: v[:rows] for k, v in batch.obs.items()}
        states, _ = self.wm.observe(obs, batch.action[:rows], batch.is_first[:rows])
        result = mcts_plan(self.wm, flatten_batch(states), self.greedy)
        return (result.extras["search_policy"].reshape(rows, t, -1),
                result.extras["root_value"].reshape(rows, t))

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        policy, value = batch.extras["search_policy"].float(), batch.extras["root_value"].float()
        if cfg.bootstrap == "model":
            with torch.no_grad():
                states, _ = self.target.observe(batch.obs, batch.action, batch.is_first)
                value = self.target.value(states).float()
        rows = round(cfg.reanalyse * batch.shape[0])
        if rows:
            fresh_policy, fresh_value = self.reanalysed(batch, rows)
            policy = torch.cat([fresh_policy, policy[rows:]])
            value = torch.cat([fresh_value, value[rows:]])
        targets = unroll_targets(batch, value, policy, cfg.unroll, cfg.td_steps, cfg.search.discount)
        first = {k: v[:, 0] for k, v in batch.obs.items()}                              # [B, ...] per key
        losses, metrics = self.wm.unroll_loss(first, targets.actions, targets.value, targets.reward, targets.policy,
                                              targets.value_mask, targets.reward_mask, targets.policy_mask,
                                              cfg.dynamics_grad)
        metrics.update(gradient_step(losses, self.scales, self.optimizers["model_opt"], self.wm.parameters(),
                                     cfg.grad_clip, prefix="model/"))
        metrics["model/target_value"] = float(targets.value[:, 0].mean())
        self.updates += 1
        if self.updates % cfg.target_every == 0:
            self.target.load_state_dict(self.wm.state_dict())
        return metrics

    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(), "progress": {"updates": self.updates}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        self.updates = int(tensors["progress"]["updates"])
