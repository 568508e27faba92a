"""LightZero's side of bench_mcts.py: runs in the LightZero virtualenv (system torch, LightZero 0.2.0).

    python benchmarks/mcts_peers/lightzero_side.py JOB.json

Three trees, each driven by LightZero's own batched search loop:
``MuZeroMCTSPtree`` (pure-Python tree, PUCT), ``MuZeroMCTSCtree`` (C++ tree,
PUCT) and ``GumbelMuZeroMCTSCtree`` (C++ tree, Gumbel; LightZero has no Python
Gumbel tree for MuZero). Each simulation makes one batched
``model.recurrent_inference(latent [B, D], action [B])`` call for all B roots,
on the same torch network that reverie's side runs (torch_net.py).

A timed call is what LightZero's MuZero policy does around one search: draw the
root Dirichlet noise (numpy), build and prepare the roots from Python lists,
``search``, then read the root visit counts and values back (``get_distributions``,
``get_values``). The policy's per-root action sampling in Python is left out.

The network emits plain scalars, so the search's inverse value transform
(``InverseScalarTransform``, applied even with ``categorical_distribution=False``)
is replaced by the identity on the search object.
"""

from __future__ import annotations

import os
import sys
import warnings
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from easydict import EasyDict  # noqa: E402

import net  # noqa: E402
from torch_net import TorchNet  # noqa: E402


class Model(torch.nn.Module):
    """The interface LightZero's search calls: ``recurrent_inference(latent_state, action)``."""

    def __init__(self, tnet: TorchNet):
        super().__init__()
        self.tnet = tnet

    def recurrent_inference(self, latent_state, action):
        nxt, reward, value, logits = self.tnet.recurrent(latent_state, action.reshape(-1))
        return SimpleNamespace(latent_state=nxt, reward=reward[:, None], value=value[:, None], policy_logits=logits)


def make_search(tree: str, s: dict):
    from lzero.mcts.tree_search.mcts_ctree import GumbelMuZeroMCTSCtree, MuZeroMCTSCtree
    from lzero.mcts.tree_search.mcts_ptree import MuZeroMCTSPtree

    cls = {"ptree": MuZeroMCTSPtree, "ctree": MuZeroMCTSCtree, "ctree-gumbel": GumbelMuZeroMCTSCtree}[tree]
    cfg = EasyDict(dict(
        num_simulations=s["num_simulations"], discount_factor=s["discount"], pb_c_base=s["pb_c_base"],
        pb_c_init=s["pb_c_init"], root_dirichlet_alpha=s["dirichlet_alpha"], root_noise_weight=s["dirichlet_fraction"],
        max_num_considered_actions=s["max_considered_actions"], env_type="not_board_games", device="cpu",
        model=dict(support_scale=300, categorical_distribution=False),
    ))
    mcts = cls(cfg)
    mcts.inverse_scalar_transform_handle = lambda x: x  # the model outputs scalars already
    return cls, mcts


def make_call(tree: str, s: dict, w: dict, b: int, explore: bool, rng: np.random.Generator):
    k = w["W_p"].shape[0]
    model = Model(TorchNet(w))
    cls, mcts = make_search(tree, s)
    latent_roots = np.ascontiguousarray(w["root_embedding"][:b])
    logits = w["root_logits"][:b]
    values = w["root_value"][:b]
    legal = [list(range(k)) for _ in range(b)]
    to_play = [-1] * b
    alpha, frac = s["dirichlet_alpha"], s["dirichlet_fraction"]

    def call():
        policy_logits = logits.tolist()
        rewards = [0.0] * b
        roots = cls.roots(b, legal)
        if tree == "ctree-gumbel":
            # the Gumbel C++ tree draws its own root Gumbel noise (fixed scale and seed in LightZero 0.2.0)
            if explore:
                noises = rng.dirichlet([alpha] * k, size=b).astype(np.float32).tolist()
                roots.prepare(frac, noises, rewards, values.tolist(), policy_logits, to_play)
            else:
                roots.prepare_no_noise(rewards, values.tolist(), policy_logits, to_play)
        elif explore:
            noises = rng.dirichlet([alpha] * k, size=b).astype(np.float32).tolist()
            roots.prepare(frac, noises, rewards, policy_logits, to_play)
        else:
            roots.prepare_no_noise(rewards, policy_logits, to_play)
        mcts.search(roots, model, latent_roots, to_play)
        return roots.get_distributions(), roots.get_values()

    return call


def main() -> None:
    job = net.read_spec()
    torch.set_num_threads(1)
    arrays = net.load(job["weights"])
    rows = []
    for case in job["cases"]:
        k, b, tree = case["k"], case["b"], case["tree"]
        w = net.weights_for(arrays, k)
        s = net.settings(case["algorithm"], k)
        latent, action = net.probe_inputs(w)
        with torch.no_grad():
            out = Model(TorchNet(w)).recurrent_inference(torch.from_numpy(latent), torch.from_numpy(action))
        ref = net.recurrent_numpy(w, latent, action)
        probe_err = max(float(np.abs(a.numpy().reshape(r.shape) - r).max()) for a, r in
                        zip((out.latent_state, out.reward, out.value, out.policy_logits), ref))
        rng = np.random.default_rng(0)
        # the search runs under torch.no_grad() and model.eval() itself
        times = net.time_calls(make_call(tree, s, w, b, True, rng), job["warmup"], job["repeats"], job["budget_s"])
        visits, value = make_call(tree, s, w, b, False, rng)()
        system = {"ptree": "lightzero-ptree", "ctree": "lightzero-ctree", "ctree-gumbel": "lightzero-ctree"}[tree]
        rows.append({
            "system": system, "algorithm": case["algorithm"], "k": k, "b": b, "ms": times, "probe_err": probe_err,
            "sanity": {"visits": [list(map(int, v)) for v in visits], "root_value": [float(v) for v in value]},
        })
        print(f"{system} {case['algorithm']} K={k} B={b}: {net.median(times):.2f} ms", file=sys.stderr, flush=True)
    import lzero

    net.emit({
        "rows": rows,
        "versions": {"lightzero": getattr(lzero, "__version__", "?"), "torch": torch.__version__,
                     "numpy": np.__version__},
        "env": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""), "torch_threads": torch.get_num_threads()},
    })


if __name__ == "__main__":
    main()
