"""The RSSM world model of PlaNet and Dreamer: encoder, RSSM, decoder, reward and continuation heads.

The latent space is grounded by reconstruction (``objective=reconstruction``, DreamerV3), by predicting
the next observation's embedding from the prior (``objective=latent``: no decoder, as TD-MPC2 and the
JEPA line of work), or by both.

Losses follow DreamerV3: reconstruction (symlog MSE for vectors, MSE for
images, or a Bernoulli per cell for binary images), reward as a symlog two-hot distribution, continuation
as a Bernoulli, and the KL between posterior and prior split into a dynamics term
(trains the prior) and a representation term (trains the posterior), each
clipped from below at ``free_nats``. :meth:`RSSMWorldModel.loss` returns the
terms unweighted; the agent that trains the model weighs them
(:func:`loss_scales` gives the config's weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal, Mapping, cast

import torch
from torch import Tensor, nn

from reverie.config import Fraction, NonNegativeFloat, check_ranges
from reverie.models.base import CONT, DECODER, REWARD, TRANSITION, State, TransitionMap, transition_map
from reverie.models.batch import Batch
from reverie.models.codecs import MultiDecoder, MultiEncoder
from reverie.models.rssm import RSSM, RSSMConfig
from reverie.models.ssm import SSMConfig
from reverie.models.transformer_dynamics import TransformerConfig
from reverie.nn import MLP, Bernoulli, TwoHotDist, polyak_update, symlog_bins
from reverie.specs import ActionSpec, ArraySpec


@dataclass(frozen=True)
class WorldModelConfig:
    """Architecture and loss weights of the RSSM world model."""

    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    """The recurrent state-space model's sizes and latent family."""
    dynamics: Literal["gru", "transformer", "ssm"] = "gru"
    """The deterministic path, a sequence core from :mod:`reverie.models.cores`: DreamerV3's GRU, a causal
    transformer over the past latents and actions (STORM-like, a KV cache of ``transformer.context`` tokens),
    or a diagonal SSM trained with a parallel scan (R2I-like). The last two compute the posterior from the
    embedding alone. A core's settings are the section of this config named like it (``ssm``, ``transformer``)."""
    ssm: SSMConfig = field(default_factory=SSMConfig)
    """Sizes of the SSM dynamics (``dynamics=ssm``)."""
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    """Sizes of the transformer dynamics (``dynamics=transformer``)."""
    objective: Literal["reconstruction", "latent", "both"] = "reconstruction"
    """What grounds the latent space beside reward and continuation: DreamerV3's reconstruction of
    every observation; the latent objective (JEPA / TD-MPC2 style): the prior at step t predicts the
    encoder's embedding of observation t, against a stop-gradient target, with no decoder at all (the
    model then lacks the ``decoder`` capability); or both."""
    latent_scale: float = 1.0
    """Weight of the latent prediction loss (``objective=latent`` or ``both``)."""
    latent_target: Literal["stopgrad", "ema", "none"] = "stopgrad"
    """The latent objective's collapse guard: the encoder's own embedding under stop-gradient (BYOL's and
    TD-MPC2's form), the embedding of a slow copy of the encoder (``ema``: its weights follow the encoder's
    with ``latent_target_decay``), or ``none``: gradient through the target too (no guard; the control
    of the collapse-guard comparison in BENCHMARKS.md)."""
    latent_target_decay: Fraction = 0.99
    """Per-update decay of the EMA target encoder (``latent_target=ema``): w <- d * w + (1 - d) * w_encoder."""
    latent_variance: NonNegativeFloat = 0.0
    """Weight of a variance term on the embedding (VICReg's hinge: the mean over dimensions of
    ``relu(1 - std)`` over the batch), another guard against collapse; 0 turns it off."""
    units: int = 512
    """Width of the encoder, decoder and head MLPs."""
    layers: int = 2
    """Hidden layers of the encoder, decoder and head MLPs."""
    cnn_depth: int = 32
    """Channels of the first convolution (doubling per stage) for image observations."""
    image_loss: Literal["mse", "bernoulli"] = "mse"
    """How decoded images are scored: DreamerV3's squared error, or a Bernoulli per cell and channel for
    binary images (MinAtar's 0/255 object channels), whose decoded frame is then exactly 0 or 255."""
    reward_bins: int = 255
    """Bins of the symlog two-hot reward head."""
    free_nats: float = 1.0
    """KL values below this are not penalised (free bits), per step."""
    dyn_scale: float = 0.5
    """Weight of the dynamics KL term (trains the prior)."""
    rep_scale: float = 0.1
    """Weight of the representation KL term (trains the posterior)."""
    rec_scale: float = 1.0
    """Weight of the observation reconstruction loss."""
    reward_scale: float = 1.0
    """Weight of the reward prediction loss."""
    cont_scale: float = 1.0
    """Weight of the continuation prediction loss."""
    lr: float = 1e-4
    """Adam learning rate."""
    eps: float = 1e-8
    """Adam epsilon."""
    grad_clip: float = 1000.0
    """Global gradient-norm clip."""

    def __post_init__(self) -> None:
        check_ranges(self)


def loss_scales(cfg: WorldModelConfig) -> dict[str, float]:
    """The weight of each term of :meth:`RSSMWorldModel.loss` in the config."""
    return {"rec": cfg.rec_scale, "latent": cfg.latent_scale, "variance": cfg.latent_variance,
            "reward": cfg.reward_scale, "cont": cfg.cont_scale, "dyn": cfg.dyn_scale, "rep": cfg.rep_scale}


def latent_prediction_loss(predicted: Tensor, target: Tensor, stop_gradient: bool = True) -> Tensor:
    """Squared distance between the L2-normalised prediction and the L2-normalised, stop-gradient target,
    per step ``[...]`` (in [0, 4]; BYOL's form): the target only says where to go, so the encoder is not
    pulled towards its own prediction, and normalising removes the trivial minimum of shrinking every
    embedding to zero. ``stop_gradient=False`` lets the gradient into the target too (no guard)."""
    p = nn.functional.normalize(predicted, dim=-1)
    t = nn.functional.normalize(target.detach() if stop_gradient else target, dim=-1)
    return (p - t).pow(2).sum(-1)


def variance_hinge(embed: Tensor) -> Tensor:
    """VICReg's variance term of embeddings ``[..., E]``: the mean over dimensions of ``relu(1 - std)``,
    the standard deviation taken over every leading position (a scalar; 0 once each dimension varies)."""
    flat = embed.reshape(-1, embed.shape[-1])
    return torch.relu(1.0 - torch.sqrt(flat.var(0) + 1e-4)).mean()


class RSSMWorldModel(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` with an RSSM; capabilities: reward, cont, decoder
    (unless trained by the latent objective alone), and transition where the sequence core's next ``deter`` is a
    map of ``deter`` alone (the GRU; the SSM's and transformer's recurrent state is their memory, so they do not
    offer the map on ``deter``).

    Actions enter the model as float vectors ``[..., A]``: one-hot for
    discrete action spaces, values in [-1, 1] for continuous ones.
    """

    bins: Tensor
    """The reward head's two-hot support ``[reward_bins]`` in symlog space (a buffer)."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: WorldModelConfig):
        super().__init__()
        self.cfg = cfg
        self.obs_spec = dict(obs_spec)
        self.act_spec = act_spec
        self.encoder = MultiEncoder(obs_spec, cfg.units, cfg.layers, cfg.cnn_depth)
        self.rssm = RSSM(cfg.rssm, self.encoder.out_dim, act_spec.size, cfg.dynamics, getattr(cfg, cfg.dynamics, None))
        caps = {REWARD, CONT, DECODER, TRANSITION}
        if not self.rssm.core.markov_in_deter:
            caps.discard(TRANSITION)
        feat = self.rssm.feat_dim
        self.decoder: MultiDecoder | None = None
        if cfg.objective != "latent":
            self.decoder = MultiDecoder(obs_spec, feat, cfg.units, cfg.layers, cfg.cnn_depth, cfg.image_loss)
        else:
            caps.discard(DECODER)
        self.predictor: MLP | None = None
        self.target_encoder: MultiEncoder | None = None
        if cfg.objective != "reconstruction":
            self.predictor = MLP(feat, self.encoder.out_dim, cfg.units, cfg.layers)
            if cfg.latent_target == "ema":
                self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.capabilities = frozenset(caps)
        self.reward_head = MLP(feat, cfg.reward_bins, cfg.units, cfg.layers, zero_out=True)
        self.cont_head = MLP(feat, 1, cfg.units, cfg.layers)
        self.register_buffer("bins", symlog_bins(cfg.reward_bins), persistent=False)
        self.feat_size = feat
        self.memory_keys = frozenset(self.rssm.core.memory_keys)

    # -- the interface -------------------------------------------------------------------------
    def initial(self, batch: int) -> State:
        return self.rssm.initial(batch)

    def features(self, state: State) -> Tensor:
        return self.rssm.features(state)

    def embed(self, obs: Mapping[str, Tensor]) -> Tensor:
        self.check_obs(obs)
        return self.encoder(obs)

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[State, State]:
        return self.rssm.observe(self.embed(obs), action, is_first, state)

    def step(self, state: State, action: Tensor) -> State:
        return self.rssm.img_step(state, action)

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(deter [N, D], f)``: the recurrent state and the prior step on it with the stochastic latent at
        its prior expectation (:meth:`RSSM.mean_step`)."""
        return cast("Mapping[str, Tensor]", state)["deter"], transition_map(self.rssm.mean_step, action)  # a flat dict

    def reward(self, state: State) -> Tensor:
        return TwoHotDist(self.reward_head(self.features(state)), self.bins).mean()

    def cont(self, state: State) -> Tensor:
        return Bernoulli(self.cont_head(self.features(state)).squeeze(-1)).probs

    def decode(self, state: State) -> dict[str, Tensor]:
        out = {}
        for k, dist in cast(MultiDecoder, self.decoder)(self.features(state)).items():   # decoder capability
            x = dist.mode()
            out[k] = ((x + 0.5) * 255).clamp(0, 255) if self.obs_spec[k].is_image else x
        return out

    # -- training ------------------------------------------------------------------------------
    def loss(self, batch: Batch, state: State | None = None
             ) -> tuple[dict[str, Tensor], dict[str, Tensor], State, State]:
        """Per-step losses ``{rec, latent, reward, cont, dyn, rep}`` each ``[B, T]`` (``rec`` with a decoder,
        ``latent`` with the latent objective) (unweighted; the KL terms clipped
        at ``free_nats``), metrics (detached 0-dim tensors: the caller reads them as numbers, so a compiled
        loss neither syncs nor guards on their values), posterior states ``[B, T]`` and the last state ``[B]``."""
        cfg = self.cfg
        embed = self.embed(batch.obs)                               # [B, T, E], also the latent objective's target
        post, last = self.rssm.observe(embed, batch.action, batch.is_first, state)
        prior = self.rssm.prior(post["deter"])
        dyn, rep = self.rssm.kl(post, prior)                        # [B, T]
        feat = self.features(post)                                  # [B, T, F]
        losses: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {"wm/kl": dyn.detach().mean()}
        if self.decoder is not None:
            rec: Tensor | float = 0.0
            for k, dist in self.decoder(feat).items():
                target = batch.obs[k].float() / 255.0 - 0.5 if self.obs_spec[k].is_image else batch.obs[k]
                rec = rec + dist.loss(target)
            rec = cast(Tensor, rec)                                 # a sum over at least one key
            losses["rec"] = rec
            metrics["wm/rec"] = rec.detach().mean()
        if self.predictor is not None:
            if self.target_encoder is not None:
                with torch.no_grad():
                    target = self.target_encoder(batch.obs)
            else:
                target = embed
            losses["latent"] = latent_prediction_loss(self.predictor(self.features(prior)), target,
                                                      stop_gradient=cfg.latent_target != "none")
            metrics["wm/latent"] = losses["latent"].detach().mean()
            if cfg.latent_variance > 0:
                losses["variance"] = variance_hinge(embed).expand(embed.shape[:2])
        reward = TwoHotDist(self.reward_head(feat), self.bins).loss(batch.reward)
        cont_target = 1.0 - batch.is_terminal.float()
        cont = Bernoulli(self.cont_head(feat).squeeze(-1)).loss(cont_target)
        losses.update({
            "reward": reward,
            "cont": cont,
            "dyn": torch.clamp(dyn, min=cfg.free_nats),
            "rep": torch.clamp(rep, min=cfg.free_nats),
        })
        return losses, metrics, post, last

    def update_target(self) -> None:
        """Move the EMA target encoder (``latent_target=ema``) towards the encoder by one update's decay."""
        if self.target_encoder is not None:
            polyak_update(self.target_encoder, self.encoder, 1 - self.cfg.latent_target_decay)

    def check_obs(self, obs: Mapping[str, Tensor]) -> None:
        """Raise a clear error if observation keys or shapes differ from the spec."""
        for k, spec in self.obs_spec.items():
            if k not in obs:
                raise ValueError(f"observation is missing key '{k}' (the model was built for keys "
                                 f"{sorted(self.obs_spec)})")
            shape = tuple(obs[k].shape[obs[k].dim() - len(spec.shape):]) if obs[k].dim() >= len(spec.shape) else ()
            if shape != tuple(spec.shape):
                raise ValueError(f"observation '{k}' has shape {tuple(obs[k].shape)}, but the model expects "
                                 f"[..., {', '.join(map(str, spec.shape))}]")
