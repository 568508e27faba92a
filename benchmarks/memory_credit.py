"""Why the memory suite fails at k = 200: four measurements on the probe's world model, none of which trains it.

For each delay k and each variant of ``benchmarks/memory_suite.py`` (the same ``default`` preset model, built and
seeded as there, on the same random-action episodes):

1. **coverage**: the fraction of the replay's training windows (``reverie.replay.Replay``, ``--seq-lens`` steps,
   uniform starts over a stream of whole episodes, as a Dreamer run samples them) that hold an episode's cue *and*
   the step whose reward answers it: if 0, no update ever sees both, whatever the model;
2. **decay**: the SSM's eigenvalues at initialisation: for each layer, the fraction of its channels that keep at
   least half of what they were written over the k + 1 steps from the cue's input to the answer (``|a|^(k+1)``),
   and the largest weight the cue keeps there relative to a unit input, ``max dt |a|^(k+1)``;
3. **reward share**: the norm of the gradient of the answer steps' reward loss (weighted as the update weighs it:
   ``reward_scale`` times its share of the mean over B x T) over the norm of the whole update's gradient;
4. **credit**: how much of a gradient at the answer step's ``deter`` (a fixed random readout ``u . deter_{k+2}``:
   at initialisation the reward head's last layer is zero, so no reward gradient reaches the features) reaches the
   cue's embedding (step 0) relative to the query's (step k + 1), ``|dL/de_0| / |dL/de_{k+1}|``, averaged over a
   batch of whole episodes.

    OMP_NUM_THREADS=1 python benchmarks/memory_credit.py --ks 10 50 200 --dynamics gru ssm \
        --override model.reward_scale=100
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import numpy as np
import torch

from reverie.models import Batch, loss_scales
from reverie.models.ssm import SSMDynamics, SSMLayer
from reverie.replay.store import Replay

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from memory_suite import DYNAMICS, build, episodes  # noqa: E402  (the probe's own model and data)


def coverage(data: dict[str, np.ndarray], seq_len: int, windows: int, seed: int) -> float:
    """Fraction of ``windows`` replay windows of ``seq_len`` steps holding some episode's cue and its answer."""
    n, T = data["reward"].shape
    replay = Replay(None, capacity=n * T, seq_len=seq_len, chunk_size=min(256, n * T), seed=seed)
    keys = ("obs", "action", "reward", "is_first", "is_last", "is_terminal")
    for i in range(n):
        for t in range(T):
            replay.add({k: data[k][i:i + 1, t] for k in keys} | {"step": np.array([i * T + t])})
    step = replay.sample(windows)["step"]                                           # [W, L] global step index
    first = step % T == 0                                                           # the cue's step
    # an episode's cue at window position j and its answer (step T - 1 of the same episode) at j + T - 1
    both = first[:, :max(seq_len - T + 1, 0)].any(1) if seq_len >= T else np.zeros(windows, bool)
    return float(both.mean())


def decay(core: SSMDynamics, k: int) -> list[tuple[float, float]]:
    """Per SSM layer: (fraction of channels with ``|a|^(k+1) >= 0.5``, ``max dt |a|^(k+1)``) at the constant dt."""
    out = []
    for layer in core.layers:
        assert isinstance(layer, SSMLayer)
        dt = torch.nn.functional.softplus(layer.dt_bias.detach())
        keep = torch.exp(-torch.exp(layer.log_rate.detach()) * dt * (k + 1))       # |a|^(k+1)
        out.append((float((keep >= 0.5).float().mean()), float((dt * keep).max())))
    return out


def gradients(agent, data: dict[str, np.ndarray], k: int, batch: int) -> tuple[float, float]:
    """(reward share of the update's gradient norm, |dL/de_0| / |dL/de_{k+1}|) on ``batch`` whole episodes."""
    wm, (key,) = agent.wm, agent.obs_spec
    b = Batch.build({(key if name == "obs" else name): v[:batch] for name, v in data.items() if name != "cue"},
                    agent.obs_spec, agent.act_spec)
    captured: list[torch.Tensor] = []
    hook = wm.encoder.register_forward_hook(lambda module, inputs, output: captured.append(output))
    losses, _, post, _ = wm.loss(b)
    hook.remove()
    embed = captured[0]                                                             # [B, T, E]
    scales = loss_scales(agent.cfg.model)
    answer = torch.zeros_like(losses["reward"])
    answer[:, k + 2] = 1.0
    answer_loss = scales["reward"] * (losses["reward"] * answer).mean()
    total = sum(scales[name] * v.mean() for name, v in losses.items())
    params = [p for p in wm.parameters() if p.requires_grad]
    g_answer = torch.autograd.grad(answer_loss, params, retain_graph=True, allow_unused=True)
    g_total = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    # the memory path alone: the reward head's last layer starts at zero (DreamerV3), so at initialisation no
    # reward gradient reaches the features; a fixed random readout of the answer step's deter stands in for it
    readout = torch.randn(post["deter"].shape[-1], generator=torch.Generator().manual_seed(0))
    (d_embed,) = torch.autograd.grad((post["deter"][:, k + 2] @ readout).sum(), [embed])

    def norm(gs):
        return float(torch.sqrt(sum((g.float() ** 2).sum() for g in gs if g is not None)))

    share = norm(g_answer) / norm(g_total)
    d_embed = d_embed.norm(dim=-1)                                                  # [B, T]
    credit = float((d_embed[:, 0] / d_embed[:, k + 1].clamp_min(1e-30)).mean())
    return share, credit


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50, 200])
    p.add_argument("--dynamics", nargs="+", default=["gru", "ssm"], choices=DYNAMICS)
    p.add_argument("--seq-lens", type=int, nargs="+", default=[32, 64, 256])
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--windows", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    print("| k | " + " | ".join(f"windows of {L} holding cue and answer" for L in args.seq_lens) + " |")
    print("|---|" + "---|" * len(args.seq_lens))
    data = {k: episodes(k, args.episodes, args.seed) for k in args.ks}
    for k in args.ks:
        cells = [f"{coverage(data[k], L, args.windows, args.seed):.3f}" for L in args.seq_lens]
        print(f"| {k} | " + " | ".join(cells) + " |")

    print("\n| k | dynamics | SSM layers: channels keeping half over k+1 steps; max dt |a|^(k+1) "
          "| answer's reward share of the gradient norm | credit to the cue |du.h/de_0| / |du.h/de_k+1| |")
    print("|---|---|---|---:|---:|")
    for k in args.ks:
        for dyn in args.dynamics:
            probe = SimpleNamespace(preset="default", batch=args.batch, seed=args.seed, context=0,
                                    override=args.override)
            agent = build(k, dyn, probe)
            core = agent.wm.rssm.core
            spectrum = ("; ".join(f"{f:.2f}, {w:.1e}" for f, w in decay(core, k))
                        if isinstance(core, SSMDynamics) else "-")
            share, credit = gradients(agent, data[k], k, args.batch)
            print(f"| {k} | {dyn} | {spectrum} | {share:.3f} | {credit:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
