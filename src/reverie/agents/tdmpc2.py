"""TD-MPC2 (Hansen, Su and Wang, 2024): a decoder-free latent model learned from replay, acting by MPPI in
its latent space with a learned terminal value and policy prior.

This file composes parts: :class:`TDMPC2Model` (encoder, dynamics, reward, Q ensemble, policy prior),
reverie's MPPI planner (:func:`reverie.planning.mppi`, run through :class:`PlannerPolicy` on the model's
contract: reward of each imagined step, ``value`` as the terminal value, 24 of the 512 candidates
sampled from the policy prior, the plan shifted between steps as the warm start), and two Adam
optimisers. Every update, on sequences of H + 1 steps:

1. TD targets ``r_t + gamma (1 - terminal) min(Q'_i, Q'_j)(z'_{t+1}, a ~ pi(z'_{t+1}))`` from the EMA
   target Q heads (two random heads), with ``z'`` the (gradient-free) encodings of the next observations;
2. the dynamics unrolled H steps from the encoding of the first observation along the replayed actions;
   losses, each weighted by ``rho^t`` and averaged over the horizon: consistency (MSE of the predicted
   latent against the stop-gradient encoding of the observation there), reward cross-entropy and the
   cross-entropy of every Q head against the TD target (two-hot over symlog bins);
3. the policy, on the (detached) unrolled latents: maximise the mean of two random Q heads at its own
   sampled action, divided by a running scale (the EMA of the 5th-95th percentile range of Q, at least
   1), plus an entropy bonus, weighted by ``rho^t``;
4. the target Q heads move towards the online ones by ``tau`` (Polyak averaging).

Transitions that cross an episode boundary inside a sampled sequence (reverie's replay streams
episodes back to back) are masked out of every loss.

Multitask (``run.env`` naming several tasks; :mod:`reverie.envs.multitask`): every network reads the task's
embedding (:class:`~reverie.models.tdmpc2.TDMPC2Model`), each sampled sequence stays in one task, and the
update logs each task's consistency loss (``task<k>/loss/consistency``, ``k`` the task's place in
``run.env``); actions sent to the environments are 0 on a task's padded dimensions. With mixture-of-experts
dynamics (``model.experts``) the Switch load-balancing loss joins the model's losses (``balance_coef``) and
the share of each task's dynamics inputs routed to each expert is logged (``task<k>/moe/expert<e>``). The agent computes in float32 whatever
``run.precision`` says: bf16 autocast made an update no faster at the default size.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from reverie.agents.base import ActOutput, AgentBase, ReplayRatio, gradient_step, observe_step, to_env_action
from reverie.agents.planner_policy import PlannerPolicy
from reverie.config import ConfigError, Fraction, NonNegativeFloat, PositiveFloat, check_ranges
from reverie.models import Batch
from reverie.agents.tdmpc2_report import routing_report, task_report
from reverie.models.tdmpc2 import TaskCode, TDMPC2Model, TDMPC2ModelConfig
from reverie.nn import TwoHotDist, polyak_update
from reverie.planning import MPPISettings
from reverie.run_config import RunConfig
from reverie.specs import ACTION_MASK_KEY, ActionSpec, ArraySpec

__all__ = ["RunningScale", "TDMPC2", "TDMPC2Config", "tdmpc2_planner", "tdmpc2_run"]


def tdmpc2_run() -> RunConfig:
    """TD-MPC2's data flow: batches of 256 sequences of horizon + 1 = 4 steps, one update per agent step
    (train_ratio = batch_size * seq_len), 1000 random agent steps first."""
    return RunConfig(env="dmc:cartpole-swingup", steps=100_000, batch_size=256, seq_len=4, train_ratio=1024.0,
                     prefill=1000, eval_every=10_000, eval_episodes=5, checkpoint_every=10_000, log_every=2000,
                     threads=1)


def tdmpc2_planner() -> MPPISettings:
    """TD-MPC2's planner: MPPI with 512 samples, 64 elites, 6 iterations, horizon 3, 24 policy samples,
    the value as terminal value, discount 0.99 (its heuristic for 500-step episodes)."""
    return MPPISettings(horizon=3, candidates=512, elites=64, iterations=6, policy_candidates=24,
                        sample_policy=True, use_value=True, discount=0.99)


@dataclass(frozen=True)
class TDMPC2Config:
    """Everything that defines a TD-MPC2 run (defaults: TD-MPC2's own hyperparameters and 5M model)."""

    model: TDMPC2ModelConfig = field(default_factory=TDMPC2ModelConfig)
    """Encoder, dynamics, reward, Q ensemble and policy networks."""
    planner: MPPISettings = field(default_factory=tdmpc2_planner)
    """MPPI in latent space (its ``discount`` is also the TD targets'; its ``horizon`` the training unroll's)."""
    acting: Literal["plan", "policy"] = "plan"
    """Act by planning (TD-MPC2) or by the policy prior alone (fast)."""
    lr: PositiveFloat = 3e-4
    """Adam learning rate of the model and the policy."""
    enc_lr_scale: PositiveFloat = 0.3
    """The encoder learns at lr * enc_lr_scale."""
    grad_clip: PositiveFloat = 20.0
    """Global gradient-norm clip (model and policy separately)."""
    consistency_coef: NonNegativeFloat = 20.0
    """Weight of the latent consistency loss."""
    reward_coef: NonNegativeFloat = 0.1
    """Weight of the reward loss."""
    value_coef: NonNegativeFloat = 0.1
    """Weight of the Q loss."""
    entropy_coef: NonNegativeFloat = 1e-4
    """Weight of the policy's entropy bonus."""
    rho: Fraction = 0.5
    """Loss weight rho^t of unrolled step t."""
    tau: Fraction = 0.01
    """Polyak rate of the target Q heads and of the running Q scale."""
    balance_coef: NonNegativeFloat = 0.01
    """Weight of the load-balancing loss of mixture-of-experts dynamics (model.experts > 0; Switch's 0.01)."""
    run: RunConfig = field(default_factory=tdmpc2_run)
    """Environment, budget and bookkeeping."""

    def __post_init__(self):
        check_ranges(self)


class RunningScale(nn.Module):
    """TD-MPC2's Q scale for the policy loss: an EMA (rate ``tau``) of the 5th-95th percentile range of a
    batch of Q values, floored at 1 before averaging; starts at 1."""

    value: Tensor

    def __init__(self, tau: float):
        super().__init__()
        self.tau = tau
        self.register_buffer("value", torch.ones(()))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        low, high = torch.quantile(x.detach().float().flatten(), torch.tensor([0.05, 0.95], device=x.device))
        self.value.lerp_((high - low).clamp(min=1.0), self.tau)

    def forward(self, x: Tensor) -> Tensor:
        return x / self.value


class TDMPC2(AgentBase):
    """The TD-MPC2 agent (see :mod:`reverie.agents.base`): MPPI (or the policy prior) to act, one model and
    one policy update per replay batch."""

    name = "tdmpc2"
    schedule = ReplayRatio()
    multitask = True

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: TDMPC2Config,
                 device: str | torch.device = "cpu"):
        super().__init__(obs_spec, act_spec, device)
        if act_spec.discrete:
            raise ConfigError("TD-MPC2 plans and acts with continuous actions, but this environment's are "
                              "discrete; train dreamer or muzero on it")
        horizon = cfg.planner.horizon
        if cfg.run.seq_len < horizon + 1:
            raise ConfigError(f"TD-MPC2 unrolls planner.horizon={horizon} steps, so it needs "
                              f"run.seq_len >= {horizon + 1}; got {cfg.run.seq_len}")
        self.cfg = cfg
        self.wm = TDMPC2Model(obs_spec, act_spec, cfg.model).to(self.device).eval()
        self.target_q = copy.deepcopy(self.wm.qs).requires_grad_(False).eval()
        self.scale = RunningScale(cfg.tau).to(self.device)
        self.modules = {"model": self.wm, "target_q": self.target_q, "scale": self.scale}
        encoder = [p for m in self.wm.encoders() for p in m.parameters()]
        ids = {id(p) for p in encoder} | {id(p) for p in self.wm.pi.parameters()}
        rest = [p for p in self.wm.parameters() if id(p) not in ids]
        groups: list[dict[str, Any]] = [{"params": encoder, "lr": cfg.lr * cfg.enc_lr_scale}, {"params": rest}]
        self.optimizers = {
            "model_opt": torch.optim.Adam(groups, lr=cfg.lr),
            "pi_opt": torch.optim.Adam(self.wm.pi.parameters(), lr=cfg.lr, eps=1e-5),
        }
        self.model = self.wm
        self.discount = cfg.planner.discount
        self.planner_defaults = {"mppi": cfg.planner}
        self.planning = PlannerPolicy(self.wm, "mppi", cfg.planner, device=self.device, name="tdmpc2+mppi")
        # while collecting, TD-MPC2 executes an elite drawn by weight plus the refitted std's noise
        self.exploring = PlannerPolicy(self.wm, "mppi", dataclasses.replace(cfg.planner, sample_action=True),
                                       device=self.device, name="tdmpc2+mppi")
        self.scales = {"consistency": cfg.consistency_coef, "reward": cfg.reward_coef, "value": cfg.value_coef,
                       "balance": cfg.balance_coef}
        self.updates = 0

    # -- acting --------------------------------------------------------------------------------
    def init_state(self, batch: int) -> Any:
        return self.planning.init_state(batch) if self.cfg.acting == "plan" else None

    @torch.no_grad()
    def act(self, step: dict[str, np.ndarray], state: Any, explore: bool) -> ActOutput:
        if self.cfg.acting == "plan":
            out = (self.exploring if explore else self.planning).act(step, state, False)
            if ACTION_MASK_KEY not in step:
                return out
            mask = np.asarray(step[ACTION_MASK_KEY], np.float32)     # a task's padded dimensions stay 0
            return out._replace(env_action=out.env_action * mask, action=out.action * mask)
        dist = self.wm.policy(observe_step(self.wm, step, None, self.device))                   # masked already
        action = (dist.sample() if explore else dist.mode()).float()
        return ActOutput(to_env_action(action, self.act_spec), action.cpu().numpy(), None, {})

    # -- learning ------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        cfg, wm = self.cfg, self.wm
        horizon = cfg.planner.horizon
        obs = {k: v[:, :horizon + 1] for k, v in batch.obs.items()}
        # step t's action and reward are stored with step t + 1 (action[:, t] led into step t)
        action = batch.action[:, 1:horizon + 1]                                           # [B, H, A]
        reward = batch.reward[:, 1:horizon + 1]                                           # [B, H]
        alive = 1.0 - batch.is_terminal[:, 1:horizon + 1].float()
        valid = torch.cumprod(1.0 - batch.is_first[:, 1:horizon + 1].float(), 1)          # inside one episode
        weight = cfg.rho ** torch.arange(horizon, device=self.device, dtype=torch.float32)
        task = wm.task_of({k: v[:, 0] for k, v in obs.items()})   # [B]: a sequence stays in its task
        over = None if task is None else task.over(reward.shape)                          # [B, H]

        with torch.no_grad():
            next_z = wm.encode({k: v[:, 1:] for k, v in obs.items()})                     # [B, H, D]
            next_action = wm.policy_dist(next_z, over).sample()
            target = reward + self.discount * alive * wm.q_value(next_z, next_action, "min", self.target_q, task=over)

        wm.train()   # dropout in the Q heads while learning only
        try:
            z = wm.encode({k: v[:, 0] for k, v in obs.items()})
            zs, routings = [z], []
            consistency = torch.zeros_like(valid[:, 0])                                  # [B]
            for t in range(horizon):
                z, routing = wm.next_routed(z, action[:, t], task)
                consistency = consistency + weight[t] * valid[:, t] * ((z - next_z[:, t]) ** 2).mean(-1)
                zs.append(z)
                routings.append(routing)
            before = torch.stack(zs[:-1], 1)                                              # [B, H, D]
            rw = weight * valid                                                           # [B, H]
            reward_loss = (rw * two_hot_ce(wm.reward_logits(before, action, over), reward, wm.bins)).sum(1)
            q_ce = two_hot_ce(wm.q_logits(before, action, task=over),
                              target.unsqueeze(0).expand(cfg.model.num_q, -1, -1), wm.bins)  # [E, B, H]
            value_loss = (rw * q_ce.mean(0)).sum(1)
            losses = {"consistency": consistency / horizon, "reward": reward_loss / horizon,
                      "value": value_loss / horizon}
            balance, usage = routing_report(routings, valid, task)
            if balance is not None:
                losses["balance"] = balance
            metrics = gradient_step(losses, self.scales, self.optimizers["model_opt"], wm.parameters(),
                                    cfg.grad_clip, prefix="model/")
        finally:
            wm.eval()

        metrics.update(usage)
        metrics.update(task_report(losses["consistency"].detach(), task))
        metrics.update(self._update_policy(torch.stack(zs, 1).detach(), valid, task))
        polyak_update(self.target_q, wm.qs, cfg.tau)
        self.updates += 1
        metrics["model/td_target"] = float(target.mean())
        return metrics

    def _update_policy(self, zs: Tensor, valid: Tensor, task: TaskCode | None) -> dict[str, float]:
        """One step on the policy loss over latents ``zs [B, H + 1, D]`` (of tasks ``task [B]``), Q heads frozen."""
        cfg, wm = self.cfg, self.wm
        over = None if task is None else task.over(zs.shape[:-1])
        wm.qs.requires_grad_(False)
        try:
            action, log_prob = wm.policy_dist(zs, over).sample_with_log_prob()
            q = wm.q_value(zs, action, "mean", task=over)                                 # [B, H + 1]
            self.scale.update(q[:, 0])
            steps = zs.shape[1]
            weight = cfg.rho ** torch.arange(steps, device=zs.device, dtype=torch.float32)
            mask = torch.cat([torch.ones_like(valid[:, :1]), valid], 1)                   # latent t is in the episode
            loss = (weight * mask * (cfg.entropy_coef * log_prob - self.scale(q))).mean()
            opt = self.optimizers["pi_opt"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = nn.utils.clip_grad_norm_(wm.pi.parameters(), cfg.grad_clip)
            opt.step()
        finally:
            wm.qs.requires_grad_(True)
        return {"loss/policy": float(loss.detach()), "pi/grad_norm": float(norm), "pi/scale": float(self.scale.value),
                "pi/entropy": float(-log_prob.detach().mean()), "pi/q": float(q.detach().mean())}

    def tensors(self) -> dict[str, dict[str, Any]]:
        return {**super().tensors(), "progress": {"updates": self.updates}}

    def load_tensors(self, tensors: dict[str, dict[str, Any]]) -> None:
        super().load_tensors(tensors)
        self.updates = int(tensors["progress"]["updates"])


def two_hot_ce(logits: Tensor, target: Tensor, bins: Tensor) -> Tensor:
    """Cross-entropy of two-hot distributions ``logits [..., K]`` against the two-hot symlog encoding of
    ``target [...]``: ``[...]``."""
    return TwoHotDist(logits, bins).loss(target)
