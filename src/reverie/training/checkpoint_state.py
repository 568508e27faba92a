"""A nested training state as flat tensors plus a JSON structure, and back, with nothing pickled.

:func:`split_state` turns a nested state (an optimiser ``state_dict()``:
tensors mixed with ints, floats, tuples and integer keys) into tensors named
by their path, for the safetensors file, and a JSON-able structure recording
every container and non-tensor leaf; :func:`join_state` rebuilds it exactly.
:class:`CheckpointError`, the error of all checkpoint code, is defined here
because this module, which :mod:`reverie.training.checkpoint` imports, raises
it too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "join_state", "split_state"]


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, truncated, foreign or for another agent."""


def split_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into flat tensors and a JSON-able structure.

    ``state`` may nest dicts (str or int keys), lists and tuples whose leaves are
    tensors, numpy arrays, bools, ints, floats (NaN/inf included), strings or
    None, e.g. ``{"model": module.state_dict(), "opt": optimizer.state_dict()}``.
    Tensors are named by their path (``"model/encoder.0.weight"``,
    ``"opt/state/0/exp_avg"``); the structure records every name, container
    type and non-tensor leaf, so :func:`join_state` rebuilds ``state`` exactly.
    """
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, prefix, tensors)
    return tensors, structure


def join_state(tensors: dict[str, torch.Tensor], structure: Any) -> Any:
    """Inverse of :func:`split_state`: rebuild the nested state from its two halves."""
    return _decode(structure, tensors)


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        return {"__tensor__": _add(tensors, path, obj)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise CheckpointError(f"state entry '{path}' is an object array; only numeric arrays can be saved")
        return {"__ndarray__": _add(tensors, path, torch.from_numpy(np.ascontiguousarray(obj)))}
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, dict):
        plain = all(isinstance(k, str) and not k.startswith("__") for k in obj)
        items = [(k, _encode(v, _child(path, k), tensors)) for k, v in obj.items()]
        if plain:
            return dict(items)
        for k, _ in items:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise CheckpointError(f"state entry '{path}' has key {k!r}; only str and int keys can be saved")
        # Integer keys (optimiser state is keyed by parameter index) survive as pairs.
        return {"__dict__": [[k, v] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        kind = "__tuple__" if isinstance(obj, tuple) else "__list__"
        return {kind: [_encode(v, _child(path, i), tensors) for i, v in enumerate(obj)]}
    raise CheckpointError(
        f"state entry '{path}' has type {type(obj).__name__}; checkpoints hold tensors, arrays, numbers, "
        "strings, None and dicts/lists of them"
    )


def _child(path: str, key: Any) -> str:
    return f"{path}/{key}" if path else str(key)


def _add(tensors: dict[str, torch.Tensor], name: str, tensor: torch.Tensor) -> str:
    name = name or "tensor"
    if name in tensors:  # keys containing '/' can collide after joining: disambiguate
        i = 1
        while f"{name}#{i}" in tensors:
            i += 1
        name = f"{name}#{i}"
    tensors[name] = tensor
    return name


def _decode(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        raise CheckpointError("checkpoint structure is malformed (bare list)")
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (tag, body), = node.items()
        if tag == "__tensor__":
            return tensors[body]
        if tag == "__ndarray__":
            return tensors[body].numpy()
        if tag == "__float__":
            return float(body)
        if tag == "__list__":
            return [_decode(v, tensors) for v in body]
        if tag == "__tuple__":
            return tuple(_decode(v, tensors) for v in body)
        if tag == "__dict__":
            return {k: _decode(v, tensors) for k, v in body}
    return {k: _decode(v, tensors) for k, v in node.items()}
