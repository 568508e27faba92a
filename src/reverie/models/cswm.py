"""C-SWM, contrastively trained structured world models (Kipf, van der Pol and Welling, ICLR 2020).

The latent state is a set of K object slots, each a vector of size D:

- object extractor: a CNN from the image ``[H, W, C]`` to K feature maps in [0, 1] (a sigmoid), one per
  slot; ``small`` (the paper's 2D shapes: one 10 x 10 convolution of stride 10, then 1 x 1), ``medium``
  (Atari: 9 x 9, then 5 x 5 of stride 5) or ``large`` (3D cubes: four 3 x 3 convolutions, full resolution);
- object encoder: one MLP shared by the slots, each slot's flattened map -> its embedding ``[D]``;
- transition: a graph neural network on the fully connected graph of slots. An edge MLP reads every
  ordered pair ``[z_i, z_j]``; node ``i``'s MLP reads ``[z_i, a_i, sum_j edge(z_i, z_j)]`` and gives the
  change of slot ``i``: ``z' = z + T(z, a)``. The action ``a_i`` of a slot is its own block of the
  action (``factored``: action ``[K * A_slot]``, the block-pushing worlds' one-hot over object x
  direction) or the whole action (``copy``: Atari). ``interactions=False`` drops the edges (the
  paper's "no GNN" ablation: one MLP per object).

Training is contrastive, with no decoder (:func:`contrastive_loss`): the energy of a pair of states is
``E(x, y) = mean_k ||x_k - y_k||^2 / (2 sigma^2)``; the loss is ``E(z + T(z, a), z')`` for the encoded
next state ``z'`` plus the hinge ``max(0, margin - E(z, z~))`` against a negative ``z~``, the encoded
state of another transition of the batch (the batch shuffled).

Sizes as the paper's 2D shapes: K = 5, D = 2, hidden 512 (encoder and GNN MLPs), 32 extractor channels,
sigma 0.5, margin 1. Differences from the reference code: obs and next obs go through the extractor's
BatchNorm as one batch, not two.

Ablations (config options, the paper's Table 1 rows): ``interactions=False`` (no GNN: each slot moves by
its own MLP), ``slots=1`` (no factored state: one slot for the whole image) and ``objective="decoder"``
(no contrastive loss: the same encoder and GNN trained through a decoder in pixel space,
:class:`SlotDecoder`, as the reference code's ``--decoder``: each slot's embedding passes one MLP to a map at
the extractor's resolution, the K maps a 1 x 1 and a 10 x 10 / stride 10 transposed convolution back to the
image; the loss is the binary cross-entropy of the observation decoded from its encoding plus that of the
next observation decoded from the predicted ``z + T(z, a)``, summed over pixels, averaged over the batch).

State (world-model contract): ``objects [..., K, D]``; ``features`` flattens it to ``[..., K * D]``.
Capabilities: ``transition`` (the GNN step, deterministic), and ``decoder`` when trained with one. No
reward or cont: nothing is trained for them. Planning toward a goal observation uses the latent goal cost
(:meth:`CSWMModel.goal_cost`: the squared distance summed over slots, the paper's energy ``d``; see
:mod:`reverie.models.latent_goal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reverie.config import ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, check_ranges
from reverie.models.base import DECODER, TRANSITION, State, TransitionMap, transition_map
from reverie.models.codecs import split_keys
from reverie.models.state import state_entries
from reverie.specs import ActionSpec, ArraySpec

__all__ = ["CSWMModel", "CSWMModelConfig", "ObjectExtractor", "SlotDecoder", "TransitionGNN", "contrastive_loss",
           "energy", "goal_distance", "reconstruction_loss"]

#: How much smaller than the image the object maps of each extractor size are
EXTRACTOR_STRIDE = {"small": 10, "medium": 5, "large": 1}


@dataclass(frozen=True)
class CSWMModelConfig:
    """Network sizes; the defaults are the paper's for 2D shapes."""

    slots: PositiveInt = 5
    """K, object slots."""
    embedding: PositiveInt = 2
    """D, size of each slot's embedding."""
    hidden: PositiveInt = 512
    """Width of the object encoder's and the GNN's MLPs."""
    channels: PositiveInt = 32
    """Channels of the object extractor's hidden convolutions (the reference: hidden / 16)."""
    extractor: Literal["small", "medium", "large"] = "small"
    """Object extractor: small (shapes, maps at 1/10 resolution), medium (Atari, 1/5), large (cubes, full)."""
    action: Literal["factored", "copy"] = "factored"
    """How the action reaches the slots: each slot its own block of K (factored) or all of it (copy)."""
    interactions: bool = True
    """Edges between slots (the GNN); false: each slot moves by its own MLP (the paper's ablation)."""
    sigma: PositiveFloat = 0.5
    """Energy scale: E = mean over slots of the squared distance / (2 sigma^2)."""
    margin: NonNegativeFloat = 1.0
    """Hinge margin of the negative energy."""
    objective: Literal["contrastive", "decoder"] = "contrastive"
    """Training loss: the contrastive hinge (C-SWM) or pixel reconstruction through a decoder from the slots
    (the reference's ``--decoder`` baseline; small extractor only)."""

    def __post_init__(self) -> None:
        check_ranges(self)


def energy(x: Tensor, y: Tensor, sigma: float) -> Tensor:
    """``E(x, y) = mean_k ||x_k - y_k||^2 / (2 sigma^2)`` for slot states ``[..., K, D]`` -> ``[...]``."""
    return (x - y).pow(2).sum(-1).mean(-1) / (2 * sigma ** 2)


def goal_distance(x: Tensor, goal: Tensor) -> Tensor:
    """The latent goal cost ``sum_k ||x_k - g_k||^2`` (the paper's ``d``: squared distance summed over slots) of
    slot states ``[..., K, D]`` -> ``[...]``."""
    return (x - goal).pow(2).sum((-2, -1))


def contrastive_loss(state: Tensor, predicted: Tensor, next_state: Tensor, negative: Tensor, sigma: float,
                     margin: float) -> tuple[Tensor, dict[str, Tensor]]:
    """C-SWM's hinge loss on a batch of transitions (all ``[B, K, D]``): ``mean E(predicted, next_state) +
    mean max(0, margin - E(state, negative))``, with ``negative`` the encoded states of other transitions.
    Returns (loss ``[]``, its two terms ``[]`` by name)."""
    positive = energy(predicted, next_state, sigma).mean()
    hinge = F.relu(margin - energy(state, negative, sigma)).mean()
    return positive + hinge, {"positive": positive, "hinge": hinge}


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """The paper's MLP: Linear, ReLU, Linear, LayerNorm, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.LayerNorm(hidden),
                         nn.ReLU(), nn.Linear(hidden, out_dim))


class ObjectExtractor(nn.Module):
    """Images ``[N, C, H, W]`` in [0, 1] -> K object maps ``[N, K, H / s, W / s]`` in [0, 1] (s: the stride)."""

    def __init__(self, in_channels: int, channels: int, slots: int, size: str):
        super().__init__()
        layers: list[nn.Module]
        if size == "small":
            layers = [nn.Conv2d(in_channels, channels, 10, stride=10), nn.BatchNorm2d(channels), nn.ReLU(),
                      nn.Conv2d(channels, slots, 1)]
        elif size == "medium":
            layers = [nn.Conv2d(in_channels, channels, 9, padding=4), nn.BatchNorm2d(channels), nn.LeakyReLU(),
                      nn.Conv2d(channels, slots, 5, stride=5)]
        else:
            layers = []
            for i in range(3):
                layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                           nn.BatchNorm2d(channels), nn.ReLU()]
            layers.append(nn.Conv2d(channels, slots, 3, padding=1))
        self.net = nn.Sequential(*layers, nn.Sigmoid())
        for m in self.modules():    # the reference's initialisation of the convolutions
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image)


class TransitionGNN(nn.Module):
    """``T(z [N, K, D], slot_actions [N, K, A_slot]) -> [N, K, D]``, the change of every slot: a message-passing
    step on the fully connected graph of slots (no edges with ``interactions=False``). Permuting the slots
    (and their actions) permutes the output the same way."""

    def __init__(self, embedding: int, slot_action: int, hidden: int, interactions: bool):
        super().__init__()
        self.interactions, self.hidden = interactions, hidden
        self.edge = _mlp(2 * embedding, hidden, hidden) if interactions else None
        self.node = _mlp(embedding + slot_action + (hidden if interactions else 0), hidden, embedding)

    def forward(self, z: Tensor, slot_actions: Tensor) -> Tensor:
        parts = [z, slot_actions.to(z.dtype)]
        K = z.shape[-2]
        if self.edge is not None and K > 1:
            # ordered pairs (i, j), i != j, sorted by i: node i's K - 1 messages are contiguous
            eye = torch.eye(K, dtype=torch.bool, device=z.device)
            rows, cols = (~eye).nonzero(as_tuple=True)
            messages = self.edge(torch.cat([z[..., rows, :], z[..., cols, :]], -1))     # [N, K (K - 1), H]
            parts.append(messages.reshape(*z.shape[:-2], K, K - 1, -1).sum(-2))           # [N, K, H]
        elif self.edge is not None:     # one slot: no other slot sends it a message
            parts.append(z.new_zeros(*z.shape[:-1], self.hidden))
        return self.node(torch.cat(parts, -1))


class SlotDecoder(nn.Module):
    """Slot states ``[N, K, D]`` -> image logits ``[N, C, H, W]``: the small extractor run backwards (one MLP
    shared by the slots to each slot's map ``[H / s, W / s]``, then 1 x 1 and s x s / stride s transposed
    convolutions from the K maps to the image's channels)."""

    def __init__(self, embedding: int, slots: int, hidden: int, channels: int, out_channels: int,
                 map_shape: tuple[int, int], stride: int):
        super().__init__()
        self.slots, self.map_shape = slots, map_shape
        cells = map_shape[0] * map_shape[1]
        self.mlp = _mlp(embedding, hidden, cells)
        self.up = nn.Sequential(nn.ConvTranspose2d(slots, channels, 1), nn.ReLU(),
                                nn.ConvTranspose2d(channels, out_channels, stride, stride=stride))

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-2]
        maps = self.mlp(z.reshape(-1, *z.shape[-2:]))                           # [N, K, h * w]
        logits = self.up(maps.reshape(-1, self.slots, *self.map_shape))         # [N, C, H, W]
        return logits.reshape(*lead, *logits.shape[1:])


def reconstruction_loss(logits: Tensor, image: Tensor) -> Tensor:
    """``sum over pixels of BCE(sigmoid(logits), image / 255)``, averaged over the batch: logits ``[N, C, H, W]``,
    image ``[N, H, W, C]`` (uint8) -> ``[]``."""
    target = image.permute(0, 3, 1, 2).to(logits.dtype) / 255.0
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


def to_image(logits: Tensor) -> Tensor:
    """Logits ``[..., C, H, W]`` -> an image ``[..., H, W, C]`` in [0, 255] (float)."""
    return torch.sigmoid(logits).movedim(-3, -1) * 255.0


class CSWMModel(nn.Module):
    """Implements :class:`reverie.models.base.WorldModel` (capabilities: transition, and decoder with one) and
    :class:`reverie.models.latent_goal.LatentGoalModel`; see the module docstring."""

    def __init__(self, obs_spec: Mapping[str, ArraySpec], act_spec: ActionSpec, cfg: CSWMModelConfig):
        super().__init__()
        vectors, images = split_keys(obs_spec)
        if not images or vectors:
            raise ConfigError(f"C-SWM finds objects in images, but the observations are {sorted(obs_spec)} "
                              f"({'no images' if not images else 'with vectors ' + str(vectors)}); use --obs pixels "
                              "or an environment that gives images only")
        height, width = obs_spec[images[0]].shape[:2]
        stride = EXTRACTOR_STRIDE[cfg.extractor]
        if height % stride or width % stride:
            raise ConfigError(f"the {cfg.extractor} object extractor makes maps at 1/{stride} of the image, so the "
                              f"image sides must be multiples of {stride}; got {height} x {width} (set run.image_size)")
        if cfg.objective == "decoder" and cfg.extractor != "small":
            raise ConfigError(f"model.objective=decoder has a decoder for the small object extractor only (the 2D "
                              f"shapes worlds), not model.extractor={cfg.extractor}")
        if cfg.action == "factored" and act_spec.size % cfg.slots:
            raise ConfigError(f"factored actions give each of model.slots={cfg.slots} objects its own block of "
                              f"the action, but the environment's actions have {act_spec.size} entries; set "
                              f"model.slots to a divisor of {act_spec.size} or model.action=copy")
        self.obs_spec, self.act_spec, self.cfg = dict(obs_spec), act_spec, cfg
        self.image_keys = images
        self.feat_size = cfg.slots * cfg.embedding
        self.map_size = (height // stride) * (width // stride)
        in_channels = sum(obs_spec[k].shape[2] for k in images)
        self.slot_action = act_spec.size // cfg.slots if cfg.action == "factored" else act_spec.size
        self.extractor = ObjectExtractor(in_channels, cfg.channels, cfg.slots, cfg.extractor)
        self.encoder = _mlp(self.map_size, cfg.hidden, cfg.embedding)
        self.gnn = TransitionGNN(cfg.embedding, self.slot_action, cfg.hidden, cfg.interactions)
        self.image_channels = [obs_spec[k].shape[2] for k in images]
        self.decoder = (SlotDecoder(cfg.embedding, cfg.slots, cfg.hidden, cfg.channels, in_channels,
                                    (height // stride, width // stride), stride)
                        if cfg.objective == "decoder" else None)
        self.capabilities = frozenset({TRANSITION} | ({DECODER} if self.decoder is not None else set()))

    # -- the networks --------------------------------------------------------------------------
    def object_maps(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Observations ``{key: [..., H, W, C]}`` (uint8 images) -> object maps ``[..., K, H / s, W / s]``."""
        image = torch.cat([obs[k] for k in self.image_keys], -1)
        lead = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
        maps = self.extractor(x)
        return maps.reshape(*lead, *maps.shape[1:])

    def encode(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Observations ``{key: [..., H, W, C]}`` -> slot states ``[..., K, D]``."""
        maps = self.object_maps(obs)
        return self.encoder(maps.flatten(-2))

    def slot_actions(self, action: Tensor) -> Tensor:
        """Model-space actions ``[..., A]`` -> each slot's action ``[..., K, A_slot]``."""
        if self.cfg.action == "factored":
            return action.reshape(*action.shape[:-1], self.cfg.slots, self.slot_action)
        return action.unsqueeze(-2).expand(*action.shape[:-1], self.cfg.slots, action.shape[-1])

    def next(self, z: Tensor, action: Tensor) -> Tensor:
        """One step: ``z [..., K, D]``, ``action [..., A]`` -> ``z + T(z, a)``."""
        return z + self.gnn(z, self.slot_actions(action))

    # -- the world-model contract --------------------------------------------------------------
    def initial(self, batch: int) -> dict[str, Tensor]:
        """Every slot at the origin (C-SWM has no state before its first observation)."""
        device = next(self.parameters()).device
        return {"objects": torch.zeros(batch, self.cfg.slots, self.cfg.embedding, device=device)}

    def observe(self, obs: Mapping[str, Tensor], action: Tensor, is_first: Tensor,
                state: State | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Each step's state is the encoding of its own image (C-SWM is not recurrent): ``[B, T]`` and the
        last ``[B]``."""
        objects = self.encode(obs)
        return {"objects": objects}, {"objects": objects[:, -1]}

    def step(self, state: State, action: Tensor) -> dict[str, Tensor]:
        return {"objects": self.next(state_entries(state)["objects"], action)}

    def features(self, state: State) -> Tensor:
        return state_entries(state)["objects"].flatten(-2)

    def transition(self, state: State, action: Tensor) -> tuple[Tensor, TransitionMap]:
        """``(features [N, K * D], f)`` with ``f`` the GNN step at ``action`` on flattened slot states."""
        K, D = self.cfg.slots, self.cfg.embedding

        def flat_next(z: Tensor, a: Tensor) -> Tensor:
            return self.next(z.reshape(*z.shape[:-1], K, D), a).flatten(-2)

        return self.features(state), transition_map(flat_next, action)

    def decode(self, state: State) -> dict[str, Tensor]:
        """Predicted observations ``{key: [..., H, W, C]}`` in [0, 255] (only with ``objective="decoder"``)."""
        if self.decoder is None:
            raise ConfigError("this C-SWM was trained without a decoder (model.objective=contrastive)")
        image = to_image(self.decoder(state_entries(state)["objects"]))
        return dict(zip(self.image_keys, image.split(self.image_channels, -1)))

    # -- planning toward a goal (reverie.models.latent_goal.LatentGoalModel) ---------------------------
    def goal_state(self, obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The state of goal observations ``{key: [N, H, W, C]}``: their encodings ``objects [N, K, D]``."""
        return {"objects": self.encode(obs)}

    def goal_cost(self, state: State, goal: State) -> Tensor:
        """The energy between states and goals of the same rows: :func:`goal_distance` of their slots ``[N]``."""
        return goal_distance(state_entries(state)["objects"], state_entries(goal)["objects"])

    # -- training ------------------------------------------------------------------------------
    def loss(self, obs: Mapping[str, Tensor], action: Tensor, next_obs: Mapping[str, Tensor],
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The contrastive loss of transitions ``obs {key: [B, H, W, C]}``, ``action [B, A]``, ``next_obs``;
        negatives are the batch's encoded states shuffled (a permutation drawn from ``generator``). With
        ``objective="decoder"``: the reconstruction of ``obs`` plus that of ``next_obs`` from the predicted next
        state (the encoder sees ``obs`` only, as the reference's baseline)."""
        if self.decoder is not None:
            return self._decoder_loss(obs, action, next_obs)
        both = self.encode({k: torch.cat([obs[k], next_obs[k]]) for k in self.image_keys})   # one BatchNorm batch
        z, z_next = both.chunk(2)
        perm = torch.randperm(z.shape[0], generator=generator).to(z.device)
        loss, terms = contrastive_loss(z, self.next(z, action), z_next, z[perm], self.cfg.sigma, self.cfg.margin)
        with torch.no_grad():
            terms["slot_spread"] = z.std(0).mean()    # collapsed slots (all states alike) read as ~0
        return loss, terms

    def _decoder_loss(self, obs: Mapping[str, Tensor], action: Tensor,
                      next_obs: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        assert self.decoder is not None
        z = self.encode(obs)
        image = torch.cat([obs[k] for k in self.image_keys], -1)
        next_image = torch.cat([next_obs[k] for k in self.image_keys], -1)
        now = reconstruction_loss(self.decoder(z), image)
        ahead = reconstruction_loss(self.decoder(self.next(z, action)), next_image)
        with torch.no_grad():
            spread = z.std(0).mean()
        return now + ahead, {"reconstruction": now, "prediction": ahead, "slot_spread": spread}
