"""TD-MPC2's implicit world model (Hansen et al., 2024): no decoder, a latent grounded by predicting itself.

Five networks on a latent ``z`` of size D (all MLPs with LayerNorm):

- encoder: observation -> ``z``, normalised by SimNorm (a softmax over each group of 8 entries), so
  that every latent lies on a product of simplices and cannot blow up or collapse to one point;
- dynamics: ``[z, a]`` -> next ``z`` (SimNorm again);
- reward: ``[z, a]`` -> the reward of that transition, a two-hot distribution over symlog bins;
- Q ensemble: ``num_q`` heads ``[z, a]`` -> two-hot return distributions, with dropout after the
  first layer, evaluated together as one batched product per layer;
- policy prior: ``z`` -> a tanh-squashed Gaussian, its log-std squeezed into [log_std_min, log_std_max].

The model learns only through :mod:`reverie.agents.tdmpc2` (latent consistency, reward and TD
losses); it has no ``decoder`` and no ``cont``.

Multitask (TD-MPC2's recipe; observations that carry the ``task`` and ``action_mask`` keys a multitask run
adds, see :mod:`reverie.envs.multitask`): a learned task embedding of ``task_dim`` entries (rows of norm at
most 1, as TD-MPC2's ``max_norm=1``) is concatenated to the input of the encoder's latent layer, the dynamics,
reward, Q heads and policy; every action entering a network is multiplied by the task's mask, and the
policy's padded dimensions are 0 (:class:`~reverie.nn.TanhNormal` with a mask), so padded dimensions change
nothing. The state then carries ``task [..., K]`` and ``action_mask [..., A]`` beside the latent.

``experts > 0`` replaces the dynamics MLP by a mixture of experts (:mod:`reverie.models.moe`) routed on
``[latent, action, task embedding]``; :meth:`TDMPC2Model.next_routed` returns its routing for the
load-balancing loss.

Differences from the reference networks: vector observations go through reverie's
:class:`~reverie.models.codecs.MultiEncoder` (symlog inputs, SiLU where TD-MPC2 has Mish), and
images through its conv encoder; hidden layers are reverie's :class:`~reverie.nn.MLP` (SiLU).

State (world-model contract): ``latent [..., D]`` and ``reward [...]`` (the predicted reward of the
transition into this state; 0 for an observed one). Capabilities:

- ``reward``: that stored reward;
- ``value``: the mean of two randomly chosen Q heads at the policy's sampled action (what TD-MPC2's
  planner bootstraps with, ``return_type='avg'``); the TD target uses the minimum of two instead
  (:meth:`TDMPC2Model.q_value` does both);
- ``policy``: the policy prior; ``transition``: the dynamics network (already deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError
from reverie.models.base import (POLICY, REWARD, ROUTING, TRANSITION, VALUE, CapabilityError, State, TransitionMap,
                                 transition_map)
from reverie.models.codecs import MultiEncoder
from reverie.models.moe import RoutedDynamics, Routing
from reverie.models.state import state_entries
from reverie.nn import MLP, SimNorm, TanhNormal, TwoHotDist, symlog_bins
from reverie.specs import ACTION_MASK_KEY, TASK_KEY, ActionSpec, ArraySpec

__all__ = ["QEnsemble", "TDMPC2Model", "TDMPC2ModelConfig", "TaskCode"]


@dataclass(frozen=True)
class TDMPC2ModelConfig:
    """Network sizes; the defaults are TD-MPC2's 5M model (``model_size: 5`` of its config)."""

    latent: int = 512
    """Size D of the latent (a multiple of ``simnorm_group``)."""
    simnorm_group: int = 8
    """Entries per SimNorm softmax group."""
    enc_units: int = 256
    """Width of the encoder's hidden layers."""
    enc_layers: int = 1
    """Hidden layers of the encoder before its latent layer (TD-MPC2's num_enc_layers=2 means one)."""
    units: int = 512
    """Width of the dynamics, reward, Q and policy MLPs (two hidden layers each)."""
    num_q: int = 5
    """Q heads in the ensemble."""
    dropout: float = 0.01
    """Dropout after the first layer of every Q head (while training)."""
    bins: int = 101
    """Bins of the two-hot reward and Q supports."""
    vmin: float = -10.0
    """Lowest bin, in symlog space."""
    vmax: float = 10.0
    """Highest bin, in symlog space."""
    log_std_min: float = -10.0
    """Lower bound of the policy's log-std."""
    log_std_max: float = 2.0
    """Upper bound of the policy's log-std."""
    cnn_depth: int = 32
    """Channels of the first conv layer (pixel observations only)."""
    task_dim: int = 96
    """Entries of the learned task embedding (multitask runs only; TD-MPC2's 96)."""
    experts: int = 0
    """Experts of a mixture-of-experts dynamics network (0: one dense MLP, TD-MPC2's)."""
    top_k: int = 2
    """Experts each dynamics input is routed to (with ``experts > 0``)."""


class TaskCode(NamedTuple):
    """Which task each row belongs to: ``onehot [..., K]`` and the task's action ``mask [..., A]``."""

    onehot: Tensor
    mask: Tensor

    def over(self, lead: tuple[int, ...] | torch.Size) -> TaskCode:
        """Broadcast to the leading axes ``lead`` (a task of ``[B]`` rows over ``[B, T]``, say)."""
        return TaskCode(*(_broadcast(x, lead) for x in self))


def _broadcast(x: Tensor, lead: tuple[int, ...] | torch.Size) -> Tensor:
    while x.dim() - 1 < len(lead):
        x = x.unsqueeze(-2)
    return x.expand(*lead, x.shape[-1])


def _latent_layer(in_dim: int, cfg: TDMPC2ModelConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, cfg.latent), nn.LayerNorm(cfg.latent), SimNorm(cfg.simnorm_group))


class QEnsemble(nn.Module):
    """``members`` MLPs ``[..., in] -> [members, ..., out]`` of two hidden layers (Linear -> dropout on the
    first -> LayerNorm -> SiLU), evaluated as one batched matrix product per layer. Output layers start at
    zero (TD-MPC2)."""

    def __init__(self, members: int, in_dim: int, units: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, units, units, out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1.0 / math.sqrt(a)   # nn.Linear's default initialisation, per member
            last = i == len(dims) - 2
            self.weights.append(nn.Parameter(torch.zeros(members, a, b) if last
                                             else torch.empty(members, a, b).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, b) if last
                                            else torch.empty(members, 1, b).uniform_(-bound, bound)))
        self.norm_weights = nn.Parameter(torch.ones(2, members, 1, units))
        self.norm_biases = nn.Parameter(torch.zeros(2, members, 1, units))
        self.members, self.dropout = members, dropout

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``x [..., in]`` -> ``[E, ..., out]``; with ``members [M]`` (indices) only those: ``[M, ..., out]``."""
        lead = x.shape[:-1]

        def pick(p: Tensor) -> Tensor:
            return p if members is None else p[members]

        count = self.members if members is None else members.shape[0]
        h = x.reshape(1, -1, x.shape[-1]).expand(count, -1, -1)                          # [E, N, in]
        for i in range(3):
            h = torch.baddbmm(pick(self.biases[i]), h, pick(self.weights[i]))
            if i < 2:
                if i == 0 and self.dropout > 0:
                    h = F.dropout(h, self.dropout, self.training)
                h = torch.addcmul(pick(self.norm_biases[i]), F.layer_norm(h, h.shape[-1:]), pick(self.norm_weights[i]))
                h = F.silu(h)
        return h.reshape(count, *lead, h.shape[-1])


class TDMPC2Model(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` (capabilities: reward, value, policy, transition)."""

    capabilities = frozenset({REWARD, VALUE, POLICY, TRANSITION})
    """The class's; an instance with mixture-of-experts dynamics adds ``routing``."""
    bins: Tensor
    """The two-hot support ``[bins]`` in symlog space (a buffer)."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: TDMPC2ModelConfig):
        super().__init__()
        if act_spec.discrete:
            raise ConfigError("TD-MPC2 plans and acts with continuous actions, but this environment's are "
                              "discrete; train dreamer or muzero on it")
        if cfg.latent % cfg.simnorm_group:
            raise ConfigError(f"model.latent ({cfg.latent}) must be a multiple of model.simnorm_group "
                              f"({cfg.simnorm_group})")
        if cfg.num_q < 2:
            raise ConfigError(f"model.num_q must be >= 2 (two random heads are compared); got {cfg.num_q}")
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.cfg = cfg
        self.feat_size = cfg.latent
        self.multitask = TASK_KEY in obs_spec
        if self.multitask and ACTION_MASK_KEY not in obs_spec:
            raise ConfigError(f"observations with a {TASK_KEY!r} key need an {ACTION_MASK_KEY!r} key beside it")
        a, d, u = act_spec.size, cfg.latent, cfg.units
        t = cfg.task_dim if self.multitask else 0
        own = {k: v for k, v in self.obs_spec.items() if k not in (TASK_KEY, ACTION_MASK_KEY)}
        self.embed = MultiEncoder(own, cfg.enc_units, cfg.enc_layers, cfg.cnn_depth)
        self.to_latent = _latent_layer(self.embed.out_dim + t, cfg)
        self.dynamics: nn.Module = (RoutedDynamics(d + a + t, u, cfg.experts, cfg.top_k, _latent_layer(u, cfg))
                                    if cfg.experts else nn.Sequential(MLP(d + a + t, None, u, 2), _latent_layer(u, cfg)))
        self.reward_head = MLP(d + a + t, cfg.bins, u, 2, zero_out=True)
        self.pi = MLP(d + t, 2 * a, u, 2)
        self.qs = QEnsemble(cfg.num_q, d + a + t, u, cfg.bins, cfg.dropout)
        self.register_buffer("bins", symlog_bins(cfg.bins, cfg.vmin, cfg.vmax), persistent=False)
        self.tasks = obs_spec[TASK_KEY].shape[0] if self.multitask else 0
        if cfg.experts:
            self.capabilities = self.capabilities | {ROUTING}
        if self.multitask:   # made last, so that a one-task model is initialised as before multitask existed
            self.task_table = nn.Parameter(torch.randn(self.tasks, t))

    # -- the networks --------------------------------------------------------------------------
    def encoders(self) -> list[nn.Module]:
        """The modules that map observations to latents (TD-MPC2 trains them at a lower learning rate)."""
        return [self.embed, self.to_latent]

    def task_of(self, entries: Mapping[str, Tensor]) -> TaskCode | None:
        """The task of observations or states that carry ``task`` and ``action_mask`` (None for one task)."""
        return TaskCode(entries[TASK_KEY].float(), entries[ACTION_MASK_KEY].float()) if self.multitask else None

    def task_embedding(self, onehot: Tensor) -> Tensor:
        """``onehot [..., K]`` -> ``[..., task_dim]``: rows of the table, each scaled to norm at most 1."""
        table = self.task_table / self.task_table.norm(dim=-1, keepdim=True).clamp_min(1.0)
        return onehot.to(table.dtype) @ table

    def _with_task(self, x: Tensor, task: TaskCode | None) -> Tensor:
        """``x [..., F]`` with the task embedding concatenated (``x`` itself for one task)."""
        if task is None:
            return x
        return torch.cat([x, self.task_embedding(_broadcast(task.onehot, x.shape[:-1])).to(x.dtype)], -1)

    def _za(self, z: Tensor, action: Tensor, task: TaskCode | None) -> Tensor:
        """``[z, action * mask, task embedding]``: what the dynamics, reward and Q heads read."""
        action = action.to(z.dtype)
        if task is not None:
            action = action * _broadcast(task.mask, action.shape[:-1]).to(z.dtype)
        return self._with_task(torch.cat([z, action], -1), task)

    def encode(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Observations ``{key: [..., *shape]}`` -> latents ``[..., D]``."""
        return self.to_latent(self._with_task(self.embed(dict(obs)), self.task_of(obs)))

    def next(self, z: Tensor, action: Tensor, task: TaskCode | None = None) -> Tensor:
        """Dynamics: ``z [..., D]``, ``action [..., A]`` -> next ``z [..., D]``."""
        return self.next_routed(z, action, task)[0]

    def next_routed(self, z: Tensor, action: Tensor, task: TaskCode | None = None) -> tuple[Tensor, Routing | None]:
        """:meth:`next` and, for mixture-of-experts dynamics, the routing of its ``prod(...)`` inputs."""
        x = self._za(z, action, task)
        if isinstance(self.dynamics, RoutedDynamics):
            return self.dynamics(x)
        return self.dynamics(x), None

    def reward_logits(self, z: Tensor, action: Tensor, task: TaskCode | None = None) -> Tensor:
        """``[..., bins]`` logits of the reward of taking ``action`` in ``z``."""
        return self.reward_head(self._za(z, action, task))

    def q_logits(self, z: Tensor, action: Tensor, heads: nn.Module | None = None,
                 members: Tensor | None = None, task: TaskCode | None = None) -> Tensor:
        """``[num_q, ..., bins]`` logits of every Q head, or ``[M, ..., bins]`` of heads ``members [M]``
        (``heads``: another ensemble of the same shape, e.g. an EMA target)."""
        return (heads or self.qs)(self._za(z, action, task), members)

    def expectation(self, logits: Tensor) -> Tensor:
        """The mean of two-hot distributions: ``[..., bins]`` -> ``[...]``."""
        return TwoHotDist(logits, self.bins).mean()

    def q_value(self, z: Tensor, action: Tensor, reduce: Literal["min", "mean"], heads: nn.Module | None = None,
                generator: torch.Generator | None = None, task: TaskCode | None = None) -> Tensor:
        """The min or mean of two randomly chosen Q heads (one choice for the whole batch): ``[...]``."""
        pick = torch.randperm(self.cfg.num_q, generator=generator)[:2].to(z.device)
        q = self.expectation(self.q_logits(z, action, heads, pick, task))             # [2, ...]
        return q.min(0).values if reduce == "min" else q.mean(0)

    def policy_dist(self, z: Tensor, task: TaskCode | None = None) -> TanhNormal:
        """The policy prior at latents ``z [..., D]`` (0 on a task's padded action dimensions)."""
        mean, raw = self.pi(self._with_task(z, task)).chunk(2, -1)
        low, high = self.cfg.log_std_min, self.cfg.log_std_max
        mask = None if task is None else _broadcast(task.mask, mean.shape[:-1])
        return TanhNormal(mean, low + 0.5 * (high - low) * (torch.tanh(raw) + 1), mask)

    # -- the world-model contract --------------------------------------------------------------
    def initial(self, batch: int) -> dict[str, Tensor]:
        """Uniform groups (the SimNorm of zeros) and no reward (multitask: no task, every action dimension)."""
        latent = torch.full((batch, self.cfg.latent), 1.0 / self.cfg.simnorm_group, device=self.bins.device)
        state = {"latent": latent, "reward": torch.zeros(batch, device=latent.device)}
        if self.multitask:
            state[TASK_KEY] = torch.zeros(batch, self.tasks, device=latent.device)
            state[ACTION_MASK_KEY] = torch.ones(batch, self.act_spec.size, device=latent.device)
        return state

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each step's latent is the encoding of its own observation: ``[B, T]`` and the last ``[B]``."""
        latent = self.encode(obs)
        states = {"latent": latent, "reward": torch.zeros(latent.shape[:-1], device=latent.device)}
        task = self.task_of(obs)
        if task is not None:
            states.update({TASK_KEY: task.onehot, ACTION_MASK_KEY: task.mask})
        return states, {k: v[:, -1] for k, v in states.items()}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        entries = state_entries(state)
        z, task = entries["latent"], self.task_of(entries)
        out = {"latent": self.next(z, action, task), "reward": self.expectation(self.reward_logits(z, action, task))}
        if task is not None:
            out.update({TASK_KEY: task.onehot, ACTION_MASK_KEY: task.mask})
        return out

    def features(self, state: State) -> Tensor:
        return state_entries(state)["latent"]

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(latent [N, D], f)`` with ``f`` the dynamics network at ``action`` (multitask: in each state's task;
        called on fewer rows, in the first state's)."""
        entries = state_entries(state)
        task = self.task_of(entries)
        if task is None:
            return entries["latent"], transition_map(self.next, action)

        def step(z: Tensor, a: Tensor) -> Tensor:
            rows = task if z.shape[0] == task.onehot.shape[0] else TaskCode(*(x[:1].expand(z.shape[0], -1) for x in task))
            return self.next(z, a, rows)
        return entries["latent"], transition_map(step, action)

    def reward(self, state: State) -> Tensor:
        return state_entries(state)["reward"]

    def routing(self, state: State, action: Tensor) -> Routing:
        """The mixture-of-experts dynamics' routing of the step from ``state [N]`` at ``action [N, A]``."""
        entries = state_entries(state)
        _, routing = self.next_routed(entries["latent"], action, self.task_of(entries))
        if routing is None:
            raise CapabilityError("this TD-MPC2 model's dynamics is one dense MLP (model.experts=0); it routes nothing")
        return routing

    def value(self, state: State) -> Tensor:
        """Mean of two random Q heads at an action sampled from the policy (TD-MPC2's terminal value)."""
        entries = state_entries(state)
        z, task = entries["latent"], self.task_of(entries)
        return self.q_value(z, self.policy_dist(z, task).sample(), "mean", task=task)

    def policy(self, state: State) -> TanhNormal:
        entries = state_entries(state)
        return self.policy_dist(entries["latent"], self.task_of(entries))
