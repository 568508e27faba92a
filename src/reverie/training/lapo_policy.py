"""LAPO's second half (Schmidt and Jiang, ICLR 2024): a policy cloned in latent-action space from videos, decoded
with a few labels, then fine-tuned online with PPO: ``reverie lapo-policy LAPO_RUN --out DIR``.

From a trained ``lapo`` run (its IDM; its replay, the videos, e.g. a scripted player's recorded by ``reverie
record`` and trained on with ``--dataset``):

1. every window's latent action as the IDM infers it (``o_{t-1}, o_t, o_{t+1}`` -> its continuous latent, or
   with ``target=code`` the code vector ``e_k`` it is quantised to); a
   :class:`~reverie.models.latent_policy.LatentPolicy` regressed onto them from ``o_t`` alone
   (``clone_updates`` Adam steps on the training windows; the held-out windows, the lapo run's, score it);
2. the decoder: a logistic regression from the same latents to the true actions of ``labelled`` (2.5 %) of the
   training windows, drawn by the seed; the only place the recorded actions are read besides the scores;
3. PPO (:mod:`reverie.behavior.ppo`) on the whole network in the real environment; the policy is evaluated
   (``eval_episodes`` episodes, greedy and sampled actions, the same environment seeds for every policy) at each
   of ``budgets`` environment steps (0: before any fine-tuning; a budget is reached at the end of the first
   rollout that reaches it).

``--scratch`` skips 1 and 2: the same network from its initial weights, the same PPO, the same steps: the
baseline. Results go to ``DIR/result.json`` (:func:`run_lapo_policy`), the final weights to ``DIR/policy.safetensors``.

Why not a mode of the training driver: the driver's modes feed an agent from a replay, while PPO learns from the
rollout it has just collected and throws it away; this pipeline writes a folder of its own and does not resume.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from safetensors.torch import save_file

from reverie.agents.latent_action import LatentAction, Windows, windows_of
from reverie.behavior.ppo import PPOConfig, Rollout, gae, ppo_update
from reverie.config import ConfigError, Fraction, NonNegativeInt, PositiveFloat, PositiveInt, check_ranges, to_dict
from reverie.envs import BatchEnv
from reverie.models.latent_action import LatentActionModel, to_frames
from reverie.models.latent_policy import LatentPolicy, LatentPolicyConfig, fit_linear_decoder, nearest_codes
from reverie.replay import Replay
from reverie.training.env_factory import EnvFactory
from reverie.training.offline import learned_replay
from reverie.training.run_dir import atomic_write_text
from reverie.training.session import load_run

__all__ = ["LapoPolicyConfig", "clone_policy", "evaluate_policy", "finetune", "idm_codes", "lapo_run_data",
           "run_lapo_policy"]


@dataclass(frozen=True)
class LapoPolicyConfig:
    """Everything that defines a ``reverie lapo-policy`` run (but the lapo run and the arm)."""

    policy: LatentPolicyConfig = field(default_factory=LatentPolicyConfig)
    """The policy network."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Online fine-tuning."""
    clone_updates: PositiveInt = 3000
    """Adam steps of behaviour cloning onto the IDM's codes."""
    clone_batch: PositiveInt = 128
    """Windows per cloning step."""
    clone_lr: PositiveFloat = 1e-3
    """Adam's learning rate for cloning."""
    labelled: Fraction = 0.025
    """Fraction of the training windows whose true actions the decoder is fitted on."""
    target: Literal["latent", "code"] = "latent"
    """What the policy is cloned onto and the decoder reads: the IDM's continuous latent before quantisation
    (``latent``) or the code vector it is quantised to (``code``, LAPO's choice, whose quantiser is far finer than 8
    codes)."""
    budgets: tuple[int, ...] = (0, 10_000, 25_000, 50_000, 100_000)
    """Environment steps of PPO at which the policy is evaluated (the last one ends the run)."""
    eval_episodes: PositiveInt = 20
    """Episodes per evaluation."""
    seed: NonNegativeInt = 0
    """Seeds the labels drawn, the networks, cloning, PPO and its environments."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.budgets or any(b < 0 for b in self.budgets) or list(self.budgets) != sorted(set(self.budgets)):
            raise ConfigError(f"budgets must be increasing environment-step counts of at least 0, got {self.budgets}")


def _frames(data: Windows, rows: torch.Tensor) -> torch.Tensor:
    """The current frames ``o_t`` (the window's second-to-last) of windows ``rows``: uint8 ``[B, H, W, C]``."""
    return data.frames[data.rows[rows, -2]]


@torch.no_grad()
def idm_codes(model: LatentActionModel, data: Windows, chunk: int = 1024
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The IDM's continuous latents ``[N, D]``, code vectors ``[N, D]`` and codes ``[N]`` for every window of
    ``data``."""
    latents, vectors, codes = [], [], []
    for start in range(0, len(data), chunk):
        z_e = model.idm(to_frames(data.frames[data.rows[start:start + chunk]]))
        q = model.quantizer(z_e)
        latents.append(z_e)
        vectors.append(q.latent)
        codes.append(q.codes)
    return torch.cat(latents), torch.cat(vectors), torch.cat(codes)


def clone_policy(policy: LatentPolicy, data: Windows, targets: torch.Tensor, codes: torch.Tensor,
                 codebook: torch.Tensor, train: int, cfg: LapoPolicyConfig, num_actions: int) -> dict[str, float]:
    """Clone ``policy`` onto the latents or code vectors ``targets [N, D]`` (codes ``[N]`` of ``codebook [K, D]``)
    that an IDM inferred for the windows of ``data``, on the first ``train`` of them; fit its decoder on ``labelled`` of those
    (see the module docstring). Returns the scores on the other windows: ``code_agreement`` (the code nearest the
    policy's latent is the IDM's), ``decoder_accuracy`` (the decoder names the true action from the IDM's code),
    ``policy_accuracy`` (the policy's most probable action is the true one), the cloning losses and counts."""
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.clone_lr)
    policy.train()
    loss = torch.zeros(())
    for _ in range(cfg.clone_updates):
        rows = torch.randint(train, (cfg.clone_batch,), generator=gen)
        loss = policy.clone_loss(_frames(data, rows), targets[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    policy.eval()
    rng = np.random.default_rng([cfg.seed, 3])
    labelled = rng.choice(train, size=max(int(round(cfg.labelled * train)), 2), replace=False)
    weight, bias = fit_linear_decoder(targets[labelled].numpy(), data.actions[labelled], num_actions, cfg.seed)
    policy.set_decoder(weight, bias)
    held = torch.arange(train, len(data))
    with torch.no_grad():
        latents = policy.latent(_frames(data, held))
        logits, _ = policy(_frames(data, held))
        decoded = policy.decoder(targets[held]).argmax(-1).numpy()
    actions = data.actions[held.numpy()]
    return {"clone_loss": float(loss.detach()), "held_out_mse": float((latents - targets[held]).pow(2).mean()),
            "code_agreement": float((nearest_codes(latents, codebook) == codes[held]).float().mean()),
            "decoder_accuracy": float(np.mean(decoded == actions)),
            "policy_accuracy": float(np.mean(logits.argmax(-1).numpy() == actions)),
            "labels": float(len(labelled)), "train_windows": float(train), "held_out_windows": float(len(held))}


@torch.no_grad()
def _act(policy: LatentPolicy, image: np.ndarray, greedy: bool, gen: torch.Generator
         ) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    logits, value = policy(torch.as_tensor(image))
    if greedy:
        action = logits.argmax(-1)
    else:
        action = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
    return action.numpy(), torch.log_softmax(logits, -1).gather(-1, action[:, None]).squeeze(-1), value


def evaluate_policy(policy: LatentPolicy, make_env: EnvFactory, episodes: int, greedy: bool, seed: int = 10_000
                    ) -> np.ndarray:
    """Returns ``[episodes]`` of one episode in each of ``episodes`` environments (seeds ``seed + i``), greedy
    (the most probable action) or sampled."""
    envs = BatchEnv([partial(make_env, seed + i) for i in range(episodes)])
    gen = torch.Generator().manual_seed(seed)
    try:
        step = envs.reset()
        returns, done = np.zeros(episodes), np.zeros(episodes, bool)
        while True:
            returns += np.where(done, 0.0, step["reward"])
            done |= np.asarray(step["is_last"], bool)
            if done.all():
                return returns
            step = envs.step(_act(policy, step["image"], greedy, gen)[0])
    finally:
        envs.close()


def finetune(policy: LatentPolicy, make_env: EnvFactory, cfg: LapoPolicyConfig,
             evaluate: Callable[[int], dict[str, float]], say: Callable[[str], None] = print) -> list[dict[str, float]]:
    """PPO on ``policy`` in ``cfg.ppo.envs`` environments of ``make_env`` until the last budget; ``evaluate(env
    steps)`` at every budget reached. Returns the evaluations with the training episodes' mean return since the
    one before (``train_return``, NaN where none ended)."""
    ppo = cfg.ppo
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=ppo.lr, eps=1e-5)
    envs = BatchEnv([partial(make_env, 1000 * cfg.seed + i) for i in range(ppo.envs)])
    budgets = list(cfg.budgets)
    results: list[dict[str, float]] = []
    steps, running = 0, np.zeros(ppo.envs)
    finished: list[float] = []
    try:
        step = envs.reset()
        while True:
            if budgets and steps >= budgets[0]:
                while budgets and steps >= budgets[0]:
                    budgets.pop(0)
                results.append({"env_steps": float(steps), **evaluate(steps),
                                "train_return": float(np.mean(finished)) if finished else float("nan"),
                                "train_episodes": float(len(finished))})
                say(json.dumps(results[-1]))
                finished = []
            if not budgets:
                return results
            rows: dict[str, list[Any]] = {k: [] for k in ("image", "reward", "terminal", "last", "action", "logp",
                                                          "value")}
            for t in range(ppo.steps + 1):
                for k, v in (("image", step["image"]), ("reward", step["reward"]), ("terminal", step["is_terminal"]),
                             ("last", step["is_last"])):
                    rows[k].append(torch.as_tensor(np.asarray(v)))
                action, logp, value = _act(policy, step["image"], False, gen)
                rows["value"].append(value)
                if t == ppo.steps:
                    break   # row T is the next rollout's row 0; here only its value, to bootstrap this rollout
                last = np.asarray(step["is_last"], bool)
                running += step["reward"]
                finished.extend(float(running[i]) for i in np.flatnonzero(last))
                running[last] = 0.0
                rows["action"].append(torch.as_tensor(action))
                rows["logp"].append(logp)
                steps += int(np.sum(~last))   # a row with is_last is no environment step: the env resets
                step = envs.step(action)
            r = {k: torch.stack(v) for k, v in rows.items()}
            adv = gae(r["reward"].float(), r["value"], r["terminal"], r["last"], ppo.gamma, ppo.lam)
            valid = ~r["last"][:-1].reshape(-1)
            rollout = Rollout(r["image"][:-1].flatten(0, 1)[valid], r["action"].reshape(-1)[valid],
                              r["logp"].reshape(-1)[valid], adv.reshape(-1)[valid],
                              (adv + r["value"][:-1]).reshape(-1)[valid])
            ppo_update(policy, opt, rollout, ppo, gen)
    finally:
        envs.close()


def lapo_run_data(run_dir: str | os.PathLike) -> tuple[LatentAction, EnvFactory, Windows, int]:
    """The lapo agent of ``run_dir``, its environment, its replay's windows and how many of them it trained on."""
    agent, cfg, make_env, _ = load_run(Path(run_dir))
    if not isinstance(agent, LatentAction):
        raise ConfigError(f"{run_dir} is a run of agent '{agent.name}'; reverie lapo-policy starts from a lapo run")
    if not agent.act_spec.discrete:
        raise ConfigError(f"{run_dir}'s environment has continuous actions; the latent policy decodes discrete ones")
    replay = Replay(learned_replay(run_dir), capacity=cfg.run.replay_capacity, seq_len=1, chunk_size=cfg.run.replay_chunk)
    data = windows_of(replay.chunks(overlap=True), agent.lam.key, agent.lam.cfg.context, True)
    return agent, make_env, data, agent.split(len(data))


def run_lapo_policy(lapo_run: str | os.PathLike, out: str | os.PathLike, cfg: LapoPolicyConfig, scratch: bool,
                    say: Callable[[str], None] = print) -> dict[str, Any]:
    """One arm of the comparison (see the module docstring): ``scratch`` or from the LAPO policy; writes
    ``out/result.json`` and ``out/policy.safetensors`` and returns the result."""
    folder = Path(out)
    if (folder / "result.json").exists():
        raise ConfigError(f"{folder} already holds a result; choose a new --out")
    start = time.perf_counter()
    agent, make_env, data, train = lapo_run_data(lapo_run)
    torch.manual_seed(cfg.seed)
    frame_shape = tuple(data.frames.shape[1:])
    assert len(frame_shape) == 3, "lapo runs learn from images [H, W, C]"
    policy = LatentPolicy((frame_shape[0], frame_shape[1], frame_shape[2]), agent.lam.cfg.code_size,
                          agent.act_spec.size, cfg.policy)
    pretrain: dict[str, float] = {}
    if not scratch:
        latents, vectors, codes = idm_codes(agent.lam, data)
        targets = latents if cfg.target == "latent" else vectors
        pretrain = clone_policy(policy, data, targets, codes, agent.lam.quantizer.codebook.detach(), train, cfg,
                                agent.act_spec.size)
        say(f"cloned: {json.dumps(pretrain)}")
    clone_seconds = time.perf_counter() - start

    def evaluate(steps: int) -> dict[str, float]:
        scores: dict[str, float] = {}
        for mode, greedy in (("greedy", True), ("sampled", False)):
            returns = evaluate_policy(policy, make_env, cfg.eval_episodes, greedy)
            scores.update({f"return_{mode}": float(returns.mean()), f"return_{mode}_std": float(returns.std())})
        return scores

    evals = finetune(policy, make_env, cfg, evaluate, say)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "policy.safetensors.tmp"
    save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp))
    os.replace(tmp, folder / "policy.safetensors")
    result = {"lapo_run": str(lapo_run), "arm": "scratch" if scratch else "lapo", "seed": cfg.seed,
              "config": to_dict(cfg), "pretrain": pretrain, "evals": evals, "clone_seconds": clone_seconds,
              "seconds": time.perf_counter() - start}
    atomic_write_text(folder / "result.json", json.dumps(result, indent=1) + "\n")
    return result
