"""How much a latent-action model's codes are actions: pure functions of arrays (codes, true actions, frames).

A latent-action model (:mod:`reverie.models.latent_action`) never reads the true actions; these functions
are where they come back, on held-out data, to score what it learned:

- agreement of codes and actions (:func:`code_action_agreement`): normalised and adjusted mutual information
  (scikit-learn's, arithmetic normalisation) and the accuracy of the majority mapping code -> action, fitted
  on training windows and scored on held-out ones, beside the accuracy of always naming the most frequent
  action (chance); :func:`probe_accuracy`: a linear probe (logistic regression) from the IDM's continuous
  latent to the action, an upper bound of what the codes could name;
- decoding latent actions into true ones from a few labels (LAPO's second stage, offline): the same logistic
  regression on the IDM's continuous latent (before quantisation), fitted on a small random fraction of the
  training windows' labels (2.5 % by default), and the majority mapping fitted on those same labels, scored on
  the held-out windows beside chance and the rate of the no-op action;
- the controllability of the dream: :func:`pairwise_spread` (how far apart the next frames the forward model
  imagines under different codes from one start are), to be read against the model's own error
  (:func:`frame_error`), and :func:`nearest_code` (the code whose imagined frame is nearest the real next
  frame: read through the mapping, it names the action whose effect the code has).

Distances between frames are sums of squared differences over a frame in [0, 1] (for MinAtar's 0/1 cells: the
number of cells that differ, where the frames are sharp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score
from torch import Tensor

from reverie.models.latent_action import LatentActionModel, to_frames

__all__ = ["CodeActionAgreement", "LatentActionReport", "code_action_agreement", "frame_error", "held_out_report", "latent_action_report",
           "majority_mapping", "mapping_accuracy", "nearest_code", "pairwise_spread", "probe_accuracy"]


@dataclass(frozen=True)
class CodeActionAgreement:
    """How well the codes of held-out windows name their true actions."""

    nmi: float
    """Normalised mutual information of codes and actions (1: each code one action and each action one code)."""
    ami: float
    """Mutual information adjusted for chance (0 for codes independent of actions)."""
    mapping: np.ndarray
    """``[K]`` int: the action each code maps to (its most frequent action on the training windows)."""
    accuracy: float
    """Fraction of held-out windows whose code maps to their true action."""
    chance: float
    """Fraction of held-out windows whose action is the most frequent held-out action."""
    used_codes: int
    """Codes chosen for at least one held-out window."""


def _labels(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (len(values) and values.min() < 0):
        raise ValueError(f"{name} must be a 1-D array of whole numbers of at least 0, got {values.dtype} "
                         f"{values.shape}")
    return values.astype(np.int64)


def _pair(codes: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, actions = _labels("codes", codes), _labels("actions", actions)
    if len(codes) != len(actions) or not len(codes):
        raise ValueError(f"codes and actions must be equally long and not empty, got {len(codes)} and {len(actions)}")
    return codes, actions


def majority_mapping(codes: np.ndarray, actions: np.ndarray, num_codes: int) -> np.ndarray:
    """``[num_codes]``: each code's most frequent action among ``codes [N]`` / ``actions [N]`` (ties: the lowest
    action); a code never chosen maps to the most frequent action overall."""
    codes, actions = _pair(codes, actions)
    if codes.max() >= num_codes:
        raise ValueError(f"code {codes.max()} is outside [0, {num_codes})")
    counts = np.zeros((num_codes, actions.max() + 1), np.int64)
    np.add.at(counts, (codes, actions), 1)
    mapping = counts.argmax(1)
    mapping[counts.sum(1) == 0] = np.bincount(actions).argmax()
    return mapping


def mapping_accuracy(mapping: np.ndarray, codes: np.ndarray, actions: np.ndarray) -> float:
    """Fraction of ``codes [N]`` that ``mapping [K]`` maps to ``actions [N]``."""
    codes, actions = _pair(codes, actions)
    return float(np.mean(np.asarray(mapping)[codes] == actions))


def code_action_agreement(train_codes: np.ndarray, train_actions: np.ndarray, test_codes: np.ndarray,
                          test_actions: np.ndarray, num_codes: int) -> CodeActionAgreement:
    """Mutual information of ``test_codes`` and ``test_actions`` and the accuracy on them of the majority mapping
    fitted on ``train_codes`` / ``train_actions`` (see :class:`CodeActionAgreement`)."""
    mapping = majority_mapping(train_codes, train_actions, num_codes)
    codes, actions = _pair(test_codes, test_actions)
    return CodeActionAgreement(
        nmi=float(normalized_mutual_info_score(actions, codes)),
        ami=float(adjusted_mutual_info_score(actions, codes)),
        mapping=mapping, accuracy=mapping_accuracy(mapping, codes, actions),
        chance=float(np.bincount(actions).max() / len(actions)), used_codes=int(len(np.unique(codes))))


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                   seed: int = 0) -> float:
    """Held-out accuracy of a linear probe (multinomial logistic regression on standardised features, L2 weight
    1) from ``train_x [N, D]`` to ``train_y [N]``, scored on ``test_x [M, D]`` / ``test_y [M]``."""
    train_y, test_y = _labels("train_y", train_y), _labels("test_y", test_y)
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    if len(np.unique(train_y)) < 2:
        return float(np.mean(test_y == train_y[0]))
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    probe = LogisticRegression(max_iter=1000, random_state=seed).fit((train_x - mean) / std, train_y)
    return float(np.mean(probe.predict((test_x - mean) / std) == test_y))


def frame_error(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[S]``: the sum of squared differences over each frame of ``prediction`` and ``target`` (``[S, ...]``)."""
    prediction, target = np.asarray(prediction, np.float64), np.asarray(target, np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"predictions {prediction.shape} and targets {target.shape} must have one shape")
    return ((prediction - target) ** 2).reshape(len(target), -1).sum(-1)


def pairwise_spread(predictions: np.ndarray) -> np.ndarray:
    """``[S]``: for each start, the mean over the pairs of codes ``k < l`` of the distance between the frames
    imagined under them, ``predictions [S, K, ...]`` (K >= 2)."""
    p = np.asarray(predictions, np.float64)
    if p.ndim < 3 or p.shape[1] < 2:
        raise ValueError(f"predictions must be [S, K, ...] with K >= 2 codes, got {p.shape}")
    flat = p.reshape(p.shape[0], p.shape[1], -1)                              # [S, K, F]
    sq = (flat ** 2).sum(-1)                                                  # [S, K]
    dist = sq[:, :, None] + sq[:, None, :] - 2 * np.einsum("skf,slf->skl", flat, flat)   # [S, K, K]
    k = p.shape[1]
    upper = np.triu_indices(k, 1)
    return np.maximum(dist[:, upper[0], upper[1]], 0.0).mean(-1)


def nearest_code(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[S]``: for each start, the code whose imagined frame (``predictions [S, K, ...]``) is nearest the real
    next frame (``targets [S, ...]``); ties: the lowest code."""
    p, t = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    if p.shape[:1] + p.shape[2:] != t.shape:
        raise ValueError(f"predictions {p.shape} must be [S, K, *frame] for targets {t.shape}")
    return ((p - t[:, None]) ** 2).reshape(p.shape[0], p.shape[1], -1).sum(-1).argmin(1)


@dataclass(frozen=True)
class LatentActionReport:
    """A latent-action model scored on held-out windows (see the module docstring); ``agreement`` and
    ``effect`` are None where the true actions are not discrete."""

    agreement: CodeActionAgreement | None
    """The IDM's codes against the true actions (mapping fitted on the training windows)."""
    probe: float | None
    """Held-out accuracy of a linear probe from the IDM's continuous latent to the true action."""
    effect: CodeActionAgreement | None
    """The nearest code (the code whose imagined frame is nearest the real one) against the true actions, read
    through the IDM's mapping (``effect.mapping`` is that mapping, ``effect.accuracy`` its accuracy)."""
    error: float
    """Mean held-out frame error of the forward model under the IDM's code."""
    error_baseline: float | None
    """Mean held-out frame error of the forward model without a latent (None without a baseline)."""
    spread: float
    """Mean distance between the frames imagined under different codes from one held-out start."""
    windows: int
    """Held-out windows scored."""
    decoder: float | None = None
    """Held-out accuracy of the logistic regression from the IDM's continuous latent to the true action fitted
    on ``labels`` labelled training windows only."""
    decoder_mapping: float | None = None
    """Held-out accuracy of the majority mapping code -> action fitted on those ``labels`` windows."""
    labels: int = 0
    """Labelled training windows the decoder was fitted on."""
    noop: float | None = None
    """Fraction of held-out windows whose true action is the no-op (an accuracy a decoder must beat)."""

    def metrics(self, prefix: str) -> dict[str, float]:
        """The figures as flat metrics ``{prefix + name: value}`` (the mapping as ``map/<code>``)."""
        out = {"error": self.error, "spread": self.spread, "windows": float(self.windows)}
        if self.error_baseline is not None:
            out["error_baseline"] = self.error_baseline
        if self.agreement is not None and self.effect is not None and self.probe is not None:
            a = self.agreement
            out.update({"nmi": a.nmi, "ami": a.ami, "accuracy": a.accuracy, "chance": a.chance,
                        "used_codes": float(a.used_codes), "probe": self.probe, "effect_nmi": self.effect.nmi,
                        "effect_accuracy": self.effect.accuracy})
            out.update({f"map/{k}": float(v) for k, v in enumerate(a.mapping)})
        if self.decoder is not None and self.decoder_mapping is not None:
            out.update({"decoder": self.decoder, "decoder_map": self.decoder_mapping, "labels": float(self.labels)})
        if self.noop is not None:
            out["noop"] = self.noop
        return {prefix + k: v for k, v in out.items()}


@torch.no_grad()
def latent_action_report(model: LatentActionModel, train: Tensor, train_actions: np.ndarray | None,
                         test: Tensor, test_actions: np.ndarray | None, chunk: int = 256,
                         labelled: Tensor | None = None, labelled_actions: np.ndarray | None = None,
                         noop_action: int | None = None) -> LatentActionReport:
    """Score ``model`` on held-out windows ``test`` (uint8 ``[M, L + 1, H, W, C]``, the last frame the one to
    predict) with their true actions ``test_actions [M]`` (None where the actions are not discrete), the
    code -> action mapping fitted on ``train [N, L + 1, H, W, C]`` / ``train_actions [N]``, the few-label decoder
    on ``labelled`` / ``labelled_actions`` (when given); ``noop_action``: the index of the no-op (None: no
    no-op rate). Runs the model in chunks of ``chunk`` windows, in its current mode (call ``eval()`` first)."""
    if len(test) == 0 or len(train) == 0:
        raise ValueError(f"scoring latent actions needs training and held-out windows, got {len(train)} and {len(test)}")

    def run(windows: Tensor) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {}
        device = model.quantizer.codebook.device
        for start in range(0, len(windows), chunk):
            frames = to_frames(windows[start:start + chunk].to(device))         # [n, L + 1, C, H, W]
            past, target = frames[:, :-1], frames[:, -1]
            z_e = model.idm(frames)
            q = model.quantizer(z_e)
            out = {"codes": q.codes, "latents": z_e, "target": target,
                   "predicted": torch.sigmoid(model.predict(past, q.latent)),
                   "every_code": model.predict_every_code(past)}
            if model.baseline is not None:
                out["baseline"] = torch.sigmoid(model.predict_without_latent(past))
            for k, v in out.items():
                parts.setdefault(k, []).append(v.float().cpu().numpy() if k != "codes" else v.cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}

    held = run(test)
    error = float(frame_error(held["predicted"], held["target"]).mean())
    baseline = float(frame_error(held["baseline"], held["target"]).mean()) if "baseline" in held else None
    spread = float(pairwise_spread(held["every_code"]).mean()) if model.cfg.codes > 1 else 0.0
    agreement = effect = probe = decoder = decoder_mapping = noop = None
    labels = 0
    if train_actions is not None and test_actions is not None:
        fitted = run(train)
        k = model.cfg.codes
        agreement = code_action_agreement(fitted["codes"], train_actions, held["codes"], test_actions, k)
        nearest = nearest_code(held["every_code"], held["target"])
        effect = code_action_agreement(fitted["codes"], train_actions, nearest, test_actions, k)
        probe = probe_accuracy(fitted["latents"], train_actions, held["latents"], test_actions)
        if labelled is not None and labelled_actions is not None:
            few = run(labelled)
            decoder = probe_accuracy(few["latents"], labelled_actions, held["latents"], test_actions)
            decoder_mapping = code_action_agreement(few["codes"], labelled_actions, held["codes"], test_actions,
                                                    k).accuracy
            labels = len(labelled)
        if noop_action is not None:
            noop = float(np.mean(_labels("test_actions", test_actions) == noop_action))
    return LatentActionReport(agreement, probe, effect, error, baseline, spread, len(test), decoder, decoder_mapping,
                              labels, noop)


def held_out_report(model: LatentActionModel, frames: Tensor, rows: Tensor, actions: np.ndarray | None, train: int,
                    limit: int, labelled: float = 0.025, seed: int = 0,
                    noop_action: int | None = None) -> LatentActionReport:
    """:func:`latent_action_report` on windows stored as frames ``[F, H, W, C]`` and rows ``[N, L + 1]`` (a
    window's frames, oldest first) with true actions ``[N]`` (None: not discrete): the first ``limit`` windows
    after the first ``train`` (those the model never trained on) are scored, the mapping fitted on ``limit``
    windows spread evenly over the first ``train``, the few-label decoder on a ``labelled`` fraction of the
    ``train`` windows drawn at random (a generator seeded by ``seed``; at least 2 windows)."""
    if not 0 < train < len(rows):
        raise ValueError(f"held-out scoring needs windows on both sides of train={train}, out of {len(rows)}")
    if not 0 < labelled <= 1:
        raise ValueError(f"the labelled fraction must be in (0, 1], got {labelled}")
    test = np.arange(train, len(rows))[:limit]
    fit = np.linspace(0, train - 1, min(limit, train)).round().astype(np.int64)
    few = np.sort(np.random.default_rng([seed, 3]).choice(train, min(train, max(2, round(labelled * train))),
                                                          replace=False))
    take = lambda idx: frames[rows[torch.as_tensor(idx)]]     # noqa: E731
    model.eval()
    if actions is None:
        return latent_action_report(model, take(fit), None, take(test), None)
    return latent_action_report(model, take(fit), actions[fit], take(test), actions[test], labelled=take(few),
                                labelled_actions=actions[few], noop_action=noop_action)
