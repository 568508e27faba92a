"""Latent actions learned from observations alone (LAPO: Schmidt and Jiang, ICLR 2024; Genie: Bruce et al., 2024).

No action is ever read: two networks explain a video of frames.

- The inverse-dynamics model (IDM, :class:`InverseDynamics`) reads a window of frames ``o_{t-L+1} .. o_{t+1}``
  and gives a continuous latent ``z_e [D]``; a vector quantiser (:class:`VectorQuantizer`) snaps it to the
  nearest of K code vectors ``e_k``: VQ-VAE's codebook loss ``||sg(z_e) - e_k||^2``, commitment loss
  ``||z_e - sg(e_k)||^2`` (weighted by ``beta``) and straight-through gradients ``z_e + sg(e_k - z_e)``, so
  the forward model's gradient reaches the IDM as if there were no rounding.
- The forward dynamics model (FDM, :class:`ForwardDynamics`) reads the past frames ``o_{t-L+1} .. o_t`` and the
  quantised latent and predicts ``o_{t+1}`` per cell and channel as Bernoulli logits: pixels are scaled to
  [0, 1] and scored by binary cross-entropy with soft targets (exact for MinAtar's 0/255 object channels),
  summed over the frame.

The IDM sees the future frame, the FDM does not; the only way the future reaches the FDM is through K
codes, ``log2 K`` bits a step, so the codes learn what the past cannot tell: in a game, mostly the action
taken. A baseline FDM of the same shape that reads no latent (a zero vector) is trained beside it on the
same windows: the gap between their errors is what the latent carries.

World-model contract (the dream, played by picking a code a step):

- ``act_spec``: ``ActionSpec(discrete=True, size=K, latent=True)``, the codes (a soft mixture of one-hots
  mixes code vectors);
- state ``{"frames": [B, L, C, H, W]}`` in [0, 1], the newest last; at an episode's first step the frame
  repeated L times (as training windows at episode starts are padded);
- ``step``: the FDM at the chosen code vector; its probabilities are the next frame (deterministic);
- ``features``: the window flattened; capabilities: ``decoder`` (the newest frame, scaled to [0, 255]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, NonNegativeFloat, PositiveInt, check_ranges
from reverie.models.base import DECODER, State
from reverie.models.state import stack_states, state_entries, where_rows
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["ForwardDynamics", "InverseDynamics", "LatentActionLoss", "LatentActionModel",
           "LatentActionModelConfig", "Quantised", "VectorQuantizer", "to_frames"]


@dataclass(frozen=True)
class LatentActionModelConfig:
    """Sizes of the IDM, the quantiser and the forward model."""

    codes: PositiveInt = 8
    """K, latent action codes."""
    code_size: PositiveInt = 16
    """D, size of a code vector."""
    context: PositiveInt = 2
    """L, past frames the forward model reads (the IDM reads them and the next one)."""
    channels: PositiveInt = 32
    """Channels of every convolution."""
    hidden: PositiveInt = 128
    """Width of the IDM's MLP."""
    beta: NonNegativeFloat = 0.25
    """Weight of the commitment loss (VQ-VAE's 0.25)."""
    baseline: bool = True
    """Train the forward model without a latent beside it (the reference for what the latent carries)."""

    def __post_init__(self) -> None:
        check_ranges(self)


def to_frames(image: Tensor) -> Tensor:
    """uint8 images ``[..., H, W, C]`` -> float frames ``[..., C, H, W]`` in [0, 1]."""
    return image.float().movedim(-1, -3) / 255.0


class Quantised(NamedTuple):
    """What :class:`VectorQuantizer` gives for latents ``z_e [N, D]``."""

    latent: Tensor
    """``[N, D]``: the chosen code vectors in the forward pass, gradients straight through to ``z_e``."""
    codes: Tensor
    """``[N]`` long: the chosen codes."""
    codebook: Tensor
    """``[N]``: ``||sg(z_e) - e||^2 / D`` (moves the codes towards the latents)."""
    commitment: Tensor
    """``[N]``: ``||z_e - sg(e)||^2 / D`` (keeps the latents near their codes)."""


class VectorQuantizer(nn.Module):
    """K code vectors of size D; ``forward(z_e [N, D])`` -> :class:`Quantised` (nearest code by Euclidean
    distance). Codes start uniform in ``[-1/K, 1/K]`` (as VQ-VAE's)."""

    def __init__(self, codes: int, size: int):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codes, size).uniform_(-1 / codes, 1 / codes))
        self.usage: Tensor
        self.register_buffer("usage", torch.full((codes,), 1.0 / codes))

    @torch.no_grad()
    def restart_unused(self, z_e: Tensor, index: Tensor, decay: float, threshold: float,
                       generator: torch.Generator | None = None) -> int:
        """Track each code's share of the latents (an exponential moving average with ``decay`` of the shares in
        batches ``index [N]``) and move every code whose share fell below ``threshold / K`` onto a latent of
        ``z_e [N, D]`` drawn at random (Jukebox's random restarts: a code no latent is near gets no gradient, so
        without them most codes are never used). Returns how many codes moved."""
        codes = self.codebook.shape[0]
        share = torch.bincount(index, minlength=codes).float() / max(len(index), 1)
        self.usage.mul_(decay).add_(share, alpha=1 - decay)
        dead = (self.usage < threshold / codes).nonzero().squeeze(-1)
        if dead.numel() == 0 or len(z_e) == 0:
            return 0
        rows = torch.randint(len(z_e), (dead.numel(),), generator=generator, device=z_e.device)
        self.codebook[dead] = z_e.detach()[rows].to(self.codebook.dtype)
        self.usage[dead] = 1.0 / codes
        return int(dead.numel())

    def forward(self, z_e: Tensor) -> Quantised:
        index = torch.cdist(z_e.detach(), self.codebook.detach()).argmin(-1)      # [N]
        chosen = self.codebook[index]                                            # [N, D]
        codebook = (z_e.detach() - chosen).pow(2).mean(-1)
        commitment = (z_e - chosen.detach()).pow(2).mean(-1)
        return Quantised(z_e + (chosen - z_e).detach(), index, codebook, commitment)


class InverseDynamics(nn.Module):
    """The IDM: window ``[N, L + 1, C, H, W]`` -> continuous latent ``z_e [N, D]``.

    3 x 3 convolutions on the frames stacked on the channel axis (dilations 1, 2), then each channel's maximum
    and mean over the frame, then an MLP. Pooling over the frame makes the IDM blind to where a change happens,
    only to what it is ("a paddle cell moved one to the left"), which is what an action is; an IDM that can
    read positions may instead name the next frame by a hash of where things end up, which explains the next
    frame as well but is no action."""

    def __init__(self, frame_shape: tuple[int, int, int], cfg: LatentActionModelConfig):
        super().__init__()
        ch = cfg.channels
        self.convs = nn.Sequential(nn.Conv2d((cfg.context + 1) * frame_shape[0], ch, 3, padding=1), nn.SiLU(),
                                   nn.Conv2d(ch, ch, 3, padding=2, dilation=2), nn.SiLU())
        self.head = nn.Sequential(nn.Linear(2 * ch, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.code_size))

    def forward(self, window: Tensor) -> Tensor:
        h = self.convs(window.flatten(1, 2))                                     # [N, ch, H, W]
        return self.head(torch.cat([h.amax((-2, -1)), h.mean((-2, -1))], -1))


class ForwardDynamics(nn.Module):
    """The FDM: (past frames ``[N, L, C, H, W]``, latent ``[N, D]``) -> next-frame logits ``[N, C, H, W]``.

    Dilated 3 x 3 convolutions at full resolution (dilations 1, 2, 4, 1: each cell sees the 17 x 17 cells
    around it); the latent, through a linear layer, is added to every cell after the first one. There is no
    global path on purpose: the model is the same at every cell (but the borders), so a code cannot mean
    "the object is at cell 3" (a hash of where things are, which explains the next frame as well as an
    action does) but only a change that is the same everywhere, as an action's is."""

    def __init__(self, frame_shape: tuple[int, int, int], cfg: LatentActionModelConfig):
        super().__init__()
        c, ch = frame_shape[0], cfg.channels
        self.condition = nn.Linear(cfg.code_size, ch)
        self.first = nn.Conv2d(cfg.context * c, ch, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(ch, ch, 3, padding=d, dilation=d) for d in (2, 4, 1))
        self.out = nn.Conv2d(ch, c, 1)

    def forward(self, past: Tensor, latent: Tensor) -> Tensor:
        h = F.silu(self.first(past.flatten(1, 2)) + self.condition(latent)[:, :, None, None])   # [N, ch, H, W]
        for conv in self.body:
            h = h + F.silu(conv(h))
        return self.out(h)


class LatentActionLoss(NamedTuple):
    """What :meth:`LatentActionModel.loss` returns."""

    losses: dict[str, Tensor]
    """Scalars: ``predict`` (the FDM's cross-entropy, nats a frame), ``codebook``, ``commitment`` and, with the
    baseline, ``baseline`` (its cross-entropy)."""
    codes: Tensor
    """``[N]`` long: the code the IDM chose for each window."""
    latents: Tensor
    """``[N, D]``: the IDM's continuous latents before quantisation (detached)."""


class LatentActionModel(nn.Module):
    """IDM, quantiser and forward model behind the world-model contract (see the module docstring)."""

    capabilities = frozenset({DECODER})

    def __init__(self, obs_spec: Mapping[str, ArraySpec], cfg: LatentActionModelConfig):
        super().__init__()
        images = sorted(k for k, s in obs_spec.items() if s.is_image)
        if len(images) != 1 or len(obs_spec) != 1:
            raise ConfigError(f"the latent-action model learns from video: it needs one image observation, but "
                              f"this environment's observations are {sorted(obs_spec)}; use --obs pixels or an "
                              "image environment")
        self.key = images[0]
        height, width, channels = obs_spec[self.key].shape
        self.frame_shape = (channels, height, width)
        self.obs_spec, self.cfg = dict(obs_spec), cfg
        self.act_spec = ActionSpec(discrete=True, size=cfg.codes, latent=True)
        self.feat_size = cfg.context * channels * height * width
        self.idm = InverseDynamics(self.frame_shape, cfg)
        self.quantizer = VectorQuantizer(cfg.codes, cfg.code_size)
        self.fdm = ForwardDynamics(self.frame_shape, cfg)
        self.baseline = ForwardDynamics(self.frame_shape, cfg) if cfg.baseline else None

    # -- the pieces -------------------------------------------------------------------------------
    def infer(self, window: Tensor) -> Quantised:
        """The IDM's codes for windows ``[N, L + 1, C, H, W]`` (frames in [0, 1])."""
        return self.quantizer(self.idm(window))

    def predict(self, past: Tensor, latent: Tensor) -> Tensor:
        """Next-frame logits ``[N, C, H, W]`` after past frames ``[N, L, C, H, W]`` under latents ``[N, D]``."""
        return self.fdm(past, latent)

    def predict_every_code(self, past: Tensor) -> Tensor:
        """Next-frame probabilities under each code: ``[N, K, C, H, W]`` for past frames ``[N, L, C, H, W]``."""
        n, k = past.shape[0], self.cfg.codes
        latent = self.quantizer.codebook[None].expand(n, -1, -1).reshape(n * k, -1)
        probs = torch.sigmoid(self.fdm(past.repeat_interleave(k, 0), latent))
        return probs.reshape(n, k, *self.frame_shape)

    def predict_without_latent(self, past: Tensor) -> Tensor:
        """The baseline's next-frame logits ``[N, C, H, W]``; ConfigError when it is not trained."""
        if self.baseline is None:
            raise ConfigError("this latent-action model trains no baseline (model.baseline=false)")
        return self.baseline(past, past.new_zeros(past.shape[0], self.cfg.code_size))

    # -- learning ---------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, Tensor]) -> LatentActionLoss:
        """The losses on ``batch = {"frames": uint8 [N, L + 1, H, W, C]}`` (windows of consecutive frames, the
        last one to predict). Observations only: a batch with any other key (actions) is refused."""
        if set(batch) != {"frames"}:
            raise ValueError(f"the latent-action model learns from frames alone; its batch holds only 'frames', "
                             f"got {sorted(batch)}")
        window = to_frames(batch["frames"])                                        # [N, L + 1, C, H, W]
        if tuple(window.shape[1:]) != (self.cfg.context + 1, *self.frame_shape):
            raise ValueError(f"windows must be [N, {self.cfg.context + 1}, H, W, C] frames of "
                             f"{self.obs_spec[self.key].shape}, got {tuple(batch['frames'].shape)}")
        past, target = window[:, :-1], window[:, -1]
        z_e = self.idm(window)
        q = self.quantizer(z_e)
        losses = {"predict": self._cross_entropy(self.predict(past, q.latent), target),
                  "codebook": q.codebook.mean(), "commitment": q.commitment.mean()}
        if self.baseline is not None:
            losses["baseline"] = self._cross_entropy(self.predict_without_latent(past), target)
        return LatentActionLoss(losses, q.codes, z_e.detach())

    @staticmethod
    def _cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
        """Bernoulli cross-entropy summed over a frame, mean over the batch."""
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(-1).mean()

    # -- the contract -----------------------------------------------------------------------------
    def initial(self, batch: int) -> State:
        device = self.quantizer.codebook.device
        return {"frames": torch.zeros(batch, self.cfg.context, *self.frame_shape, device=device)}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Fold real frames into the window; ``action`` is not read (the model knows no real actions)."""
        frames = to_frames(obs[self.key])                                          # [B, T, C, H, W]
        batch, steps = frames.shape[:2]
        current: State = state if state is not None else self.initial(batch)
        out = []
        for t in range(steps):
            frame = frames[:, t]
            window = state_entries(current)["frames"]
            moved = {"frames": torch.cat([window[:, 1:], frame[:, None]], 1)}
            fresh = {"frames": frame[:, None].expand(-1, self.cfg.context, -1, -1, -1)}
            current = where_rows(is_first[:, t], fresh, moved)
            out.append(current)
        return stack_states(out, 1), current

    def step(self, state: State, action: Tensor) -> State:
        window = state_entries(state)["frames"]
        latent = action.float() @ self.quantizer.codebook                          # [N, D]
        nxt = torch.sigmoid(self.predict(window, latent))
        return {"frames": torch.cat([window[:, 1:], nxt[:, None]], 1)}

    def features(self, state: State) -> Tensor:
        return state_entries(state)["frames"].flatten(-4)

    def decode(self, state: State) -> dict[str, Tensor]:
        newest = state_entries(state)["frames"][..., -1, :, :, :]
        return {self.key: (newest * 255.0).clamp(0, 255).movedim(-3, -1)}
