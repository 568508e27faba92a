"""Model merging: combine the weights of several runs of one architecture into one model.

Every function takes flat state dicts (``{name: Tensor}``, all of one architecture) and returns a new
one; nothing is modified in place. With ``base`` the weights the runs were fine-tuned from, and the
*task vector* of a fine-tuned run ``tau_t = theta_t - base``:

- :func:`average`: the element-wise mean of N state dicts ("model soup"; Wortsman et al. 2022).
- :func:`task_arithmetic`: ``base + lam * sum_t tau_t`` (Ilharco et al. 2023, "Editing models with task
  arithmetic"). ``lam = 1 / N`` is the average of the runs.
- :func:`ties`: TIES-merging (Yadav et al. 2023, "TIES-Merging: resolving interference when merging
  models"): (1) *trim* each task vector to its ``density`` fraction of largest magnitudes over the whole
  model (entries tied with the threshold are kept, as in the authors' ``topk_values_mask``), the rest set
  to 0; (2) *elect* a sign per entry, the sign of the sum of the trimmed values (an entry whose sum is
  exactly 0 takes the sign of the sum of all elected signs, the authors' "majority" rule); (3) *disjoint
  mean* per entry over the trimmed values whose sign agrees with the elected one (0 when none does);
  then ``base + lam * merged``.

Only floating-point entries are merged (in float64, then cast back to the entry's dtype). Other
entries (integer and boolean buffers) are taken from the base (from the first state dict for
:func:`average`): a 0-d one is a counter that fine-tuning may move (e.g. batch norm's
``num_batches_tracked``) and may differ between the runs; a larger one is structure (indices, masks)
and must be equal in every run, otherwise :class:`MergeError`.

:func:`split_weights` and :func:`join_weights` turn an agent's checkpointed tensors (named state dicts
of modules and optimisers) into the flat weights merged here and back.

Pure: no files, clocks or loggers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["METHODS", "MergeError", "average", "check_same_architecture", "join_weights", "merge", "split_weights",
           "task_arithmetic", "task_vectors", "ties"]

#: Names of the merging methods, as ``reverie merge --method`` spells them.
METHODS = ("average", "task-arithmetic", "ties")

StateDict = Mapping[str, Tensor]


class MergeError(ValueError):
    """State dicts that cannot be merged (other architectures, another base), or bad merge settings."""


def check_same_architecture(state_dicts: Sequence[StateDict], names: Sequence[str]) -> None:
    """MergeError naming the first entry that one state dict lacks or holds with another shape or kind
    than the first one; ``names`` say which run each state dict is, for the message."""
    if len(state_dicts) != len(names):
        raise ValueError(f"{len(state_dicts)} state dicts but {len(names)} names")
    if not state_dicts:
        raise MergeError("there is nothing to merge: give at least one run")
    first, first_name = state_dicts[0], names[0]
    for sd, name in zip(state_dicts[1:], names[1:]):
        missing, extra = sorted(set(first) - set(sd)), sorted(set(sd) - set(first))
        if missing or extra:
            key, holder, other = (missing[0], first_name, name) if missing else (extra[0], name, first_name)
            raise MergeError(f"{holder} and {other} are of different architectures: {holder} has a parameter "
                             f"'{key}' that {other} has not")
        for key, t in first.items():
            u = sd[key]
            if tuple(t.shape) != tuple(u.shape):
                raise MergeError(f"{first_name} and {name} are of different architectures: '{key}' is "
                                 f"{list(t.shape)} in {first_name} but {list(u.shape)} in {name}")
            if t.is_floating_point() != u.is_floating_point():
                raise MergeError(f"{first_name} and {name} are of different architectures: '{key}' is "
                                 f"{t.dtype} in {first_name} but {u.dtype} in {name}")


def _names(n: int, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [f"state dict {i}" for i in range(n)]


def _copy_other(key: str, reference: Tensor, others: Sequence[Tensor], names: Sequence[str]) -> Tensor:
    """A non-float entry: the reference's value, after checking a structural one is the same everywhere."""
    if reference.dim() > 0:
        for t, name in zip(others, names):
            if not torch.equal(t.to(reference.device), reference):
                raise MergeError(f"'{key}' is a {reference.dtype} buffer that is not a float and differs in "
                                 f"{name}; such entries (indices, masks) cannot be merged")
    return reference.clone()


def _check_fraction(value: float, what: str, allow_zero: bool = False) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        raise MergeError(f"{what} must be in {'[0' if allow_zero else '(0'}, 1], got {value}")


def average(state_dicts: Sequence[StateDict], names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The element-wise mean of ``state_dicts`` (non-float entries from the first one, see the module
    docstring)."""
    names = _names(len(state_dicts), names)
    check_same_architecture(state_dicts, names)
    out: dict[str, Tensor] = {}
    for key, ref in state_dicts[0].items():
        values = [sd[key] for sd in state_dicts]
        if ref.is_floating_point():
            mean = torch.stack([v.to(ref.device, torch.float64) for v in values]).mean(0)
            out[key] = mean.to(ref.dtype)
        else:
            out[key] = _copy_other(key, ref, values[1:], names[1:])
    return out


def task_vectors(base: StateDict, finetuned: Sequence[StateDict], names: Sequence[str] | None = None
                 ) -> list[dict[str, Tensor]]:
    """``theta_t - base`` of every float entry (float64) of each fine-tuned state dict."""
    if not finetuned:
        raise MergeError("there is nothing to merge: give at least one fine-tuned run")
    names = _names(len(finetuned), names)
    check_same_architecture([base, *finetuned], ["the base", *names])
    return [{k: sd[k].to(b.device, torch.float64) - b.to(torch.float64) for k, b in base.items()
             if b.is_floating_point()} for sd in finetuned]


def _apply(base: StateDict, delta: Mapping[str, Tensor], coef: float, finetuned: Sequence[StateDict],
           names: Sequence[str]) -> dict[str, Tensor]:
    """``base + coef * delta`` on float entries; the base's value (checked) on the others."""
    out: dict[str, Tensor] = {}
    for key, b in base.items():
        if b.is_floating_point():
            out[key] = (b.to(torch.float64) + coef * delta[key]).to(b.dtype)
        else:
            out[key] = _copy_other(key, b, [sd[key] for sd in finetuned], names)
    return out


def task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], coef: float,
                    names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """``base + coef * sum_t (finetuned_t - base)`` (Ilharco et al. 2023)."""
    names = _names(len(finetuned), names)
    vectors = task_vectors(base, finetuned, names)
    total = {k: torch.stack([v[k] for v in vectors]).sum(0) for k in vectors[0]}
    return _apply(base, total, coef, finetuned, names)


def _trim(vector: Mapping[str, Tensor], density: float) -> dict[str, Tensor]:
    """``vector`` with every entry below its ``density`` fraction of largest magnitudes (over all keys)
    set to 0; entries tied with the threshold are kept."""
    if not vector:
        return {}
    flat = torch.cat([v.reshape(-1) for v in vector.values()]).abs()
    keep = max(1, int(round(density * flat.numel())))
    threshold = torch.topk(flat, keep).values[-1]
    return {k: torch.where(v.abs() >= threshold, v, torch.zeros_like(v)) for k, v in vector.items()}


def ties(base: StateDict, finetuned: Sequence[StateDict], coef: float = 1.0, density: float = 0.2,
         names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """TIES-merging (Yadav et al. 2023; trim to ``density``, elect signs, disjoint mean, see the module
    docstring), scaled by ``coef`` and added to ``base``."""
    _check_fraction(density, "the kept fraction of each task vector (--trim)")
    names = _names(len(finetuned), names)
    trimmed = [_trim(v, density) for v in task_vectors(base, finetuned, names)]
    merged: dict[str, Tensor] = {}
    if trimmed and trimmed[0]:
        keys = list(trimmed[0])
        stacked = {k: torch.stack([t[k] for t in trimmed]) for k in keys}           # key -> [N, *shape]
        elected = {k: torch.sign(s.sum(0)) for k, s in stacked.items()}
        majority = torch.sign(torch.stack([e.sum() for e in elected.values()]).sum())
        for k in keys:
            sign = torch.where(elected[k] == 0, majority, elected[k])
            agree = torch.where(sign > 0, stacked[k] > 0, stacked[k] < 0)             # [N, *shape]
            chosen = stacked[k] * agree
            merged[k] = chosen.sum(0) / agree.sum(0).clamp(min=1)
    return _apply(base, merged, coef, finetuned, names)


def merge(method: str, finetuned: Sequence[StateDict], base: StateDict | None = None, coef: float = 1.0,
          density: float = 0.2, names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """``method`` (one of :data:`METHODS`) on ``finetuned``; ``base`` is needed by task arithmetic and TIES,
    ``coef`` is their ``lam``, ``density`` TIES' kept fraction."""
    if method == "average":
        return average(finetuned, names)
    if method not in METHODS:
        raise MergeError(f"unknown merging method {method!r}; choose one of {', '.join(METHODS)}")
    if base is None:
        raise MergeError(f"{method} adds task vectors to the weights the runs were fine-tuned from; give the base")
    if method == "task-arithmetic":
        return task_arithmetic(base, finetuned, coef, names)
    return ties(base, finetuned, coef, density, names)


def _is_weights(entry: Any) -> bool:
    return isinstance(entry, Mapping) and bool(entry) and all(isinstance(v, Tensor) for v in entry.values())


def split_weights(tensors: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An agent's checkpointed tensors -> (its module weights flattened as ``"entry/param"``, the rest).

    A module's ``state_dict()`` (a flat map of tensors) counts as weights; optimiser states (nested, with
    step counts and settings) and counters do not and come back in the rest unchanged."""
    flat: dict[str, Tensor] = {}
    rest: dict[str, Any] = {}
    for name, entry in tensors.items():
        if _is_weights(entry):
            flat.update({f"{name}/{k}": v for k, v in entry.items()})
        else:
            rest[name] = entry
    return flat, rest


def join_weights(flat: Mapping[str, Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_weights`."""
    out: dict[str, Any] = {k: v for k, v in rest.items()}
    for key, value in flat.items():
        name, _, param = key.partition("/")
        out.setdefault(name, {})[param] = value
    return out
