"""DIAMOND's world model (Alonso et al., 2024): the next frame drawn by a diffusion model.

There is no latent: the state is the last ``L`` frames themselves and the actions taken in them. A step
draws the next frame from a denoiser conditioned on them (:class:`FrameDenoiserNet`, a U-Net that reads
the noisy next frame stacked with the ``L`` past frames on the channel axis, and the noise level and
the ``L`` actions through its norms), by EDM with 3 Euler steps (:mod:`reverie.models.edm`) or, for the
comparison, DDPM (:mod:`reverie.models.ddpm`). A separate recurrent model
(:class:`~reverie.models.reward_end.RewardEndModel`) reads every transition for its reward and whether
the episode ended there.

State (world-model contract), every entry ``[B, ...]``:

- ``frames [B, L, C, H, W]``: the last L frames in [-1, 1], the newest last;
- ``actions [B, L, A]``: ``actions[:, i]`` the action that led into ``frames[:, i]``;
- ``h, c [B, D]``: the reward model's LSTM memory; ``reward_logits [B, 3]``, ``end_logit [B]``: its reading
  of the transition into this state.

At an episode's first step the frame window is that frame repeated L times, with zero actions and memory
(filtering and imagination then agree on what a fresh episode looks like). Capabilities: ``decoder``
(the newest frame itself), ``reward`` (the mean of the reward classes), ``cont`` (1 - P(end)) and
``transition`` (the frame window and the actions it needs, stepped by the sampler started from zero
noise). ``features`` are the reward model's ``h`` and the newest frame, flattened.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, PositiveInt, check_ranges
from reverie.models.base import CONT, DECODER, REWARD, TRANSITION, State, TransitionMap, transition_map
from reverie.models.batch import Batch
from reverie.models.ddpm import DDPM, DDPMConfig
from reverie.models.edm import EDM, EDMConfig
from reverie.models.reward_end import RewardEndModel, reward_class
from reverie.models.state import stack_states, state_entries, where_rows
from reverie.nn.unet import FourierFeatures, UNet
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["DiffusionModelConfig", "DiffusionWorldModel", "FrameDenoiserNet", "ModelLoss"]

#: The end logit of a state no transition led into (an episode's first step): P(end) = 2e-9.
_NO_END = -20.0


@dataclass(frozen=True)
class DiffusionModelConfig:
    """DIAMOND's world model; the defaults are its Atari sizes."""

    context: PositiveInt = 4
    """Past frames (and actions) the next frame is conditioned on, L."""
    channels: tuple[int, ...] = (64, 64, 64, 64)
    """Channels of the U-Net's levels."""
    depths: tuple[int, ...] = (2, 2, 2, 2)
    """Residual blocks per U-Net level."""
    cond_dim: PositiveInt = 256
    """Size of the U-Net's conditioning vector (noise level and actions)."""
    process: Literal["edm", "ddpm"] = "edm"
    """The diffusion process: EDM (DIAMOND's) or DDPM (the comparison)."""
    edm: EDMConfig = field(default_factory=EDMConfig)
    """EDM's noise distribution, preconditioning and sampler."""
    ddpm: DDPMConfig = field(default_factory=DDPMConfig)
    """DDPM's schedule and sampler."""
    reward_conv: tuple[int, ...] = (32, 32, 32, 32)
    """Channels of the reward/end model's stride-2 convolutions."""
    reward_memory: PositiveInt = 512
    """LSTM units of the reward/end model."""

    def __post_init__(self) -> None:
        check_ranges(self)


class ModelLoss(NamedTuple):
    """What :meth:`DiffusionWorldModel.loss` returns."""

    losses: dict[str, Tensor]
    """``denoise``, ``reward``, ``end``: scalar losses."""
    states: State
    """The filtered states ``[B, T]`` (the reward model's part with gradients)."""
    complete: Tensor
    """``[B, T]`` bool: the state's frame window holds only frames of its episode (its context is complete)."""


class FrameDenoiserNet(nn.Module):
    """The network of the denoiser: ``(x_in [N, C, H, W], noise [N], frames [N, L, C, H, W], actions [N, L, A])
    -> [N, C, H, W]``; past frames are scaled by ``context_scale`` (1 / sigma_data for EDM, as DIAMOND)."""

    def __init__(self, channels: int, act_size: int, cfg: DiffusionModelConfig, context_scale: float):
        super().__init__()
        self.noise_embedding = FourierFeatures(cfg.cond_dim)
        self.action_embedding = nn.Linear(cfg.context * act_size, cfg.cond_dim)
        self.cond = nn.Sequential(nn.Linear(cfg.cond_dim, cfg.cond_dim), nn.SiLU(), nn.Linear(cfg.cond_dim, cfg.cond_dim))
        self.unet = UNet(channels * (cfg.context + 1), channels, cfg.channels, cfg.depths, cfg.cond_dim)
        self.context_scale = context_scale

    def forward(self, x_in: Tensor, noise: Tensor, frames: Tensor, actions: Tensor) -> Tensor:
        cond = self.cond(self.noise_embedding(noise) + self.action_embedding(actions.flatten(1)))
        return self.unet(torch.cat([x_in, frames.flatten(1, 2) * self.context_scale], 1), cond)


class DiffusionWorldModel(nn.Module):
    """DIAMOND's world model behind the world-model contract (see the module docstring)."""

    capabilities = frozenset({REWARD, CONT, DECODER, TRANSITION})

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: DiffusionModelConfig):
        super().__init__()
        images = sorted(k for k, s in obs_spec.items() if s.is_image)
        if len(images) != 1 or len(obs_spec) != 1:
            got = f"vectors {sorted(obs_spec)}" if not images else f"{sorted(obs_spec)}"
            raise ConfigError(f"DIAMOND's diffusion model needs images: it generates one image observation, but "
                              f"this environment's observations are {got}; use --obs pixels or an image environment")
        if not cfg.channels or len(cfg.channels) != len(cfg.depths) or min(cfg.channels + cfg.depths) < 1:
            raise ConfigError(f"model.channels and model.depths need one positive entry per U-Net level, got "
                              f"{cfg.channels} and {cfg.depths}")
        self.key = images[0]
        height, width, channels = obs_spec[self.key].shape
        self.obs_spec, self.act_spec, self.cfg = dict(obs_spec), act_spec, cfg
        self.frame_shape = (channels, height, width)
        self.feat_size = cfg.reward_memory + channels * height * width
        self.process: EDM | DDPM = EDM(cfg.edm) if cfg.process == "edm" else DDPM(cfg.ddpm)
        scale = 1 / cfg.edm.sigma_data if cfg.process == "edm" else 1.0
        self.denoiser = FrameDenoiserNet(channels, act_spec.size, cfg, scale)
        self.reward_model = RewardEndModel(channels, (height, width), act_spec.size, cfg.reward_conv, cfg.reward_memory)

    # -- frames ----------------------------------------------------------------------------------
    def to_frames(self, image: Tensor) -> Tensor:
        """uint8 images ``[..., H, W, C]`` -> float frames ``[..., C, H, W]`` in [-1, 1]."""
        return image.float().movedim(-1, -3) / 127.5 - 1

    def generate(self, frames: Tensor, actions: Tensor, generator: torch.Generator | None = None,
                 start: Tensor | None = None) -> Tensor:
        """A next frame ``[N, C, H, W]`` after ``frames [N, L, C, H, W]``, ``actions [N, L, A]`` taken in them."""
        def net(x_in: Tensor, noise: Tensor) -> Tensor:
            return self.denoiser(x_in, noise, frames, actions)
        return self.process.sample(net, (frames.shape[0], *self.frame_shape), frames.device, generator, start)

    def denoising_loss(self, frames: Tensor, actions: Tensor, target: Tensor,
                       generator: torch.Generator | None = None) -> Tensor:
        """Per-sample diffusion loss ``[N]`` of the next frame ``target [N, C, H, W]``."""
        def net(x_in: Tensor, noise: Tensor) -> Tensor:
            return self.denoiser(x_in, noise, frames, actions)
        return self.process.loss(net, target, generator)

    def set_sampler_steps(self, steps: int) -> None:
        """Sample every next frame with ``steps`` denoising steps from now on (a setting of imagination alone:
        the trained denoiser is unchanged, so a run trained at 3 steps can be imagined with 10)."""
        if steps < 1:
            raise ConfigError(f"the sampler needs at least one denoising step, got {steps}")
        if self.cfg.process == "edm":
            self.cfg = replace(self.cfg, edm=replace(self.cfg.edm, steps=steps))
            self.process = EDM(self.cfg.edm)
        else:
            self.cfg = replace(self.cfg, ddpm=replace(self.cfg.ddpm, steps=steps))
            self.process = DDPM(self.cfg.ddpm)

    @property
    def calls_per_frame(self) -> int:
        """Denoiser network calls per generated frame."""
        return self.process.calls_per_sample

    # -- the contract ----------------------------------------------------------------------------
    def initial(self, batch: int) -> State:
        device = self.reward_model.values.device
        frames = -torch.ones(batch, self.cfg.context, *self.frame_shape, device=device)
        return self._fresh(frames, batch)

    def _fresh(self, frames: Tensor, batch: int) -> dict[str, Tensor]:
        device, memory = frames.device, self.cfg.reward_memory
        return {"frames": frames, "actions": torch.zeros(batch, self.cfg.context, self.act_spec.size, device=device),
                "h": torch.zeros(batch, memory, device=device), "c": torch.zeros(batch, memory, device=device),
                "reward_logits": torch.zeros(batch, 3, device=device),
                "end_logit": torch.full((batch,), _NO_END, device=device)}

    def _advance(self, state: Mapping[str, Tensor], frame: Tensor, action: Tensor) -> dict[str, Tensor]:
        """The state after ``action [N, A]`` led from ``state`` to ``frame [N, C, H, W]``."""
        logits, end, h, c = self.reward_model(state["frames"][:, -1], action, frame, state["h"], state["c"])
        return {"frames": torch.cat([state["frames"][:, 1:], frame[:, None]], 1),
                "actions": torch.cat([state["actions"][:, 1:], action[:, None]], 1),
                "h": h, "c": c, "reward_logits": logits, "end_logit": end}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        frames = self.to_frames(obs[self.key])                                  # [B, T, C, H, W]
        batch, steps = frames.shape[:2]
        current: State = state if state is not None else self.initial(batch)
        out = []
        for t in range(steps):
            frame = frames[:, t]
            moved = self._advance(state_entries(current), frame, action[:, t].float())
            fresh = self._fresh(frame[:, None].expand(-1, self.cfg.context, -1, -1, -1), batch)
            current = where_rows(is_first[:, t], fresh, moved)
            out.append(current)
        return stack_states(out, 1), current

    def step(self, state: State, action: Tensor) -> State:
        s = state_entries(state)
        nxt = self.generate(s["frames"], torch.cat([s["actions"][:, 1:], action[:, None]], 1))
        return self._advance(s, nxt, action)

    def features(self, state: State) -> Tensor:
        s = state_entries(state)
        return torch.cat([s["h"], s["frames"][..., -1, :, :, :].flatten(-3)], -1)

    def decode(self, state: State) -> dict[str, Tensor]:
        newest = state_entries(state)["frames"][..., -1, :, :, :]
        return {self.key: ((newest + 1) * 127.5).clamp(0, 255).movedim(-3, -1)}

    def reward(self, state: State) -> Tensor:
        return self.reward_model.expected_reward(state_entries(state)["reward_logits"])

    def cont(self, state: State) -> Tensor:
        return torch.sigmoid(-state_entries(state)["end_logit"])

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """z: the frame window and the last L - 1 actions, flattened; f: one step of the sampler from zero noise
        (its noise's mean), so the map is deterministic."""
        s = state_entries(state)
        frames_size = self.cfg.context * self.frame_shape[0] * self.frame_shape[1] * self.frame_shape[2]
        shape = (-1, self.cfg.context, *self.frame_shape)

        def step(z: Tensor, a: Tensor) -> Tensor:
            frames, past = z[:, :frames_size].reshape(shape), z[:, frames_size:].reshape(z.shape[0], -1, a.shape[-1])
            actions = torch.cat([past, a[:, None]], 1)
            nxt = self.generate(frames, actions, start=torch.zeros(z.shape[0], *self.frame_shape, device=z.device))
            return torch.cat([frames[:, 1:].flatten(1), nxt.flatten(1), actions[:, 1:].flatten(1)], 1)

        z = torch.cat([s["frames"].flatten(1), s["actions"][:, 1:].flatten(1)], 1)
        return z, transition_map(step, action)

    # -- learning --------------------------------------------------------------------------------
    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> ModelLoss:
        """The denoising loss of every next frame whose context is complete, and the reward model's cross
        entropies (reward class, end) on the same transitions, from a replay batch ``[B, T]``."""
        states, _ = self.observe(batch.obs, batch.action, batch.is_first)
        s = state_entries(states)
        steps = batch.is_first.shape[1]
        started = torch.cumsum(batch.is_first.long(), 1) > 0
        complete = started | (torch.arange(steps, device=started.device) >= self.cfg.context - 1)
        valid = complete[:, :-1] & ~batch.is_first[:, 1:]                         # transitions t -> t + 1
        if not bool(valid.any()):
            zero = s["h"].sum() * 0
            return ModelLoss({"denoise": zero, "reward": zero, "end": zero}, states, complete)
        frames = s["frames"][:, :-1][valid].detach()                              # [N, L, C, H, W]
        actions = torch.cat([s["actions"][:, :-1, 1:], batch.action[:, 1:, None]], 2)[valid]
        target = self.to_frames(batch.obs[self.key][:, 1:][valid])               # [N, C, H, W]
        denoise = self.denoising_loss(frames, actions.float(), target, generator).mean()
        reward = F.cross_entropy(s["reward_logits"][:, 1:][valid], reward_class(batch.reward[:, 1:][valid]))
        end = F.binary_cross_entropy_with_logits(s["end_logit"][:, 1:][valid], batch.is_terminal[:, 1:][valid].float())
        return ModelLoss({"denoise": denoise, "reward": reward, "end": end}, states, complete)
