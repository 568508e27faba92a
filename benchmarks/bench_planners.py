"""Milliseconds per planned action for reverie's CEM and MPPI, and for peers, on one latent model.

Settings (earlier results in docs/notes/planners.md): CEM with PlaNet's 1000 candidates x horizon 12 x 10
iterations, top 100; MPPI with TD-MPC2's 512 samples, 64 elites, 6
iterations, at horizon 3 (TD-MPC2's) and 12, bootstrapping with a value head.
One start state, actions of size 6, timed under ``torch.no_grad()``.

The model is a Dreamer-size latent model with random weights: reverie's
``RSSMWorldModel`` (GRU deter 512, 32x32 categorical stoch, 512-unit heads,
255-bin two-hot reward) when it imports, else a stand-in of the same sizes
(``--model standin``). A random critic MLP on the features serves as the value.

Peers drive the very same model function (same seed, same weights):
TorchRL's CEMPlanner / MPPIPlanner through a ModelBasedEnvBase, and mbrl-lib's
CEMOptimizer through its objective function. They run in a subprocess of the
interpreter named by ``--peer-python`` (default: ``$REVERIE_PEERS_PYTHON``,
else this one), so they can live in their own virtualenv:

    python -m venv --system-site-packages ../venvs/peers
    ../venvs/peers/bin/pip install -c constraints.txt torchrl tensordict
    ../venvs/peers/bin/pip install -c constraints.txt --no-deps mbrl==0.2.0
    ../venvs/peers/bin/pip install -c constraints.txt "hydra-core>=1.3,<1.4" omegaconf termcolor
    REVERIE_PEERS_PYTHON=../venvs/peers/bin/python python benchmarks/bench_planners.py

Run ``--help`` for the options (``--repeats 1 --warmup 0`` for a quick check).
Timings move a lot when anything else runs on the machine: check ``top`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ACTION_SIZE = 6


# ---------------------------------------------------------------------------
# the latent model


class StandInRSSM(nn.Module):
    """Random-weight Dreamer-size latent dynamics: LayerNorm GRU deter 512, 32x32 categorical stoch."""

    def __init__(self, action_size: int, deter: int = 512, stoch: int = 32, classes: int = 32, units: int = 512):
        super().__init__()
        self.stoch, self.classes = stoch, classes

        def mlp(inp: int, out: int, layers: int) -> nn.Sequential:
            mods: list[nn.Module] = []
            for i in range(layers):
                mods += [nn.Linear(inp if i == 0 else units, units, bias=False), nn.LayerNorm(units), nn.SiLU()]
            return nn.Sequential(*mods, nn.Linear(units, out))

        self.img_in = nn.Sequential(nn.Linear(stoch * classes + action_size, units, bias=False), nn.LayerNorm(units), nn.SiLU())
        self.gru = nn.Linear(units + deter, 3 * deter, bias=False)
        self.gru_norm = nn.LayerNorm(3 * deter)
        self.prior = mlp(deter, stoch * classes, 1)
        self.reward_head = mlp(deter + stoch * classes, 255, 2)
        self.register_buffer("bins", torch.linspace(-20.0, 20.0, 255))

    def features(self, state: dict[str, Tensor]) -> Tensor:
        return torch.cat([state["deter"], state["stoch"].flatten(-2)], -1)  # any leading axes

    def step(self, state: dict[str, Tensor], action: Tensor) -> dict[str, Tensor]:
        x = self.img_in(torch.cat([state["stoch"].flatten(-2), action], -1))
        reset, cand, update = self.gru_norm(self.gru(torch.cat([x, state["deter"]], -1))).chunk(3, -1)
        update = torch.sigmoid(update - 1)
        deter = update * torch.tanh(torch.sigmoid(reset) * cand) + (1 - update) * state["deter"]
        logit = self.prior(deter).float().reshape(*deter.shape[:-1], self.stoch, self.classes)
        gumbel = -torch.log(-torch.log(torch.rand_like(logit).clamp(1e-20, 1.0)))  # Gumbel-max sample
        stoch = nn.functional.one_hot((logit + gumbel).argmax(-1), self.classes).float()
        return {"deter": deter.float(), "stoch": stoch, "logit": logit}

    def reward(self, state: dict[str, Tensor]) -> Tensor:
        probs = self.reward_head(self.features(state)).float().softmax(-1)
        return probs @ self.bins  # the two-hot head's mean (bins in symlog space, not decoded)


def _act_spec(size: int):
    """reverie's action spec when reverie imports (peers' venvs may lack it), else None."""
    try:
        from reverie.specs import ActionSpec
    except ImportError:
        return None
    return ActionSpec(False, size)


class BenchModel:
    """step / reward / value over a latent model; ``value`` is a random critic MLP on the features."""

    capabilities = frozenset({"reward", "value"})

    def __init__(self, kind: str, action_size: int, seed: int = 0):
        torch.manual_seed(seed)
        self.kind, self.action_size = kind, action_size
        self.act_spec = _act_spec(action_size)
        if kind == "reverie":
            import numpy as np

            from reverie.models import RSSMWorldModel, WorldModelConfig
            from reverie.specs import ActionSpec, ArraySpec

            net = RSSMWorldModel({"vector": ArraySpec((5,), np.dtype(np.float32))}, ActionSpec(False, action_size),
                                 WorldModelConfig())
            self.initial = lambda batch: net.initial(batch)
            features = net.feat_size
        else:
            net = StandInRSSM(action_size)
            self.initial = lambda batch: {"deter": torch.zeros(batch, 512), "stoch": torch.zeros(batch, 32, 32),
                                          "logit": torch.zeros(batch, 32, 32)}
            features = 512 + 32 * 32
        self.net = net.eval()
        self.critic = nn.Sequential(nn.Linear(features, 512, bias=False), nn.LayerNorm(512), nn.SiLU(),
                                    nn.Linear(512, 512, bias=False), nn.LayerNorm(512), nn.SiLU(), nn.Linear(512, 1))
        self.parameters = sum(p.numel() for m in (self.net, self.critic) for p in m.parameters())

    def step(self, state, action):
        return self.net.step(state, action)

    def reward(self, state):
        return self.net.reward(state)

    def value(self, state):
        return self.critic(self.net.features(state)).squeeze(-1).float()

    def start_state(self) -> dict[str, Tensor]:
        """One start state [1, ...]: a few random prior steps away from the all-zero state."""
        state = self.initial(1)
        with torch.no_grad():
            for _ in range(3):
                state = self.step(state, torch.zeros(1, self.action_size))
        return state


def resolve_model_kind(kind: str) -> str:
    if kind != "auto":
        return kind
    try:
        BenchModel("reverie", ACTION_SIZE)
        return "reverie"
    except Exception:  # the real RSSM is not importable or constructible here: fall back
        return "standin"


def model_flops(model: BenchModel, rows: int, horizon: int, iterations: int, value: bool) -> float:
    """Floating-point operations of the model calls one planned action needs (matmuls counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    state = {k: v.expand(rows, *v.shape[1:]).clone() for k, v in model.start_state().items()}
    action = torch.zeros(rows, model.action_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        nxt = model.step(state, action)
        model.reward(nxt)
    per_step = counter.get_total_flops()
    total = per_step * horizon * iterations
    if value:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.value(state)
        total += counter.get_total_flops() * iterations
    return float(total)


class Autocast:
    """Runs a model's calls under bfloat16 autocast (how peers get a bf16 variant of the same model)."""

    capabilities = BenchModel.capabilities

    def __init__(self, model: BenchModel):
        self.model, self.action_size, self.act_spec = model, model.action_size, model.act_spec

    def start_state(self):
        return self.model.start_state()

    def _run(self, fn, *args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(*args)

    def step(self, state, action):
        return {k: v.float() for k, v in self._run(self.model.step, state, action).items()}

    def reward(self, state):
        return self._run(self.model.reward, state).float()

    def value(self, state):
        return self._run(self.model.value, state).float()


# ---------------------------------------------------------------------------
# the cases


@dataclass(frozen=True)
class Case:
    system: str
    planner: str
    horizon: int
    candidates: int
    elites: int
    iterations: int

    @property
    def setting(self) -> str:
        return f"{self.candidates}x{self.horizon}x{self.iterations} top {self.elites}"

    @property
    def uses_value(self) -> bool:
        return self.planner == "mppi"


PLANNER_CASES = [
    ("cem", 12, 1000, 100, 10),
    ("mppi", 3, 512, 64, 6),
    ("mppi", 12, 512, 64, 6),
]
SYSTEMS = {"reverie": ("cem", "mppi"), "torchrl": ("cem", "mppi"), "mbrl-lib": ("cem",)}


def reverie_planner(model, case: Case, bf16: bool):
    from reverie.planning import plan

    state = model.start_state()
    extra = {"use_value": True, "temperature": 2.0} if case.planner == "mppi" else {}

    def act():
        return plan(case.planner, model, state, horizon=case.horizon, candidates=case.candidates,
                    elites=case.elites, iterations=case.iterations, bf16=bf16, seed=0, **extra).action

    return act


def torchrl_planner(model, case: Case):
    from tensordict import TensorDict
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded, Composite, Unbounded
    from torchrl.envs.model_based import ModelBasedEnvBase
    from torchrl.modules import ValueOperator, WorldModelWrapper
    from torchrl.modules.planners import CEMPlanner, MPPIPlanner
    from torchrl.objectives.value import TDLambdaEstimator

    start = model.start_state()
    keys = sorted(start)

    class Transition(nn.Module):
        def forward(self, *tensors):
            out = model.step(dict(zip(keys, tensors[:-1])), tensors[-1])
            return tuple(out[k] for k in keys)

    class Head(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *tensors):
            return self.fn(dict(zip(keys, tensors))).unsqueeze(-1)

    class LatentEnv(ModelBasedEnvBase):
        def __init__(self, world_model):
            super().__init__(world_model, device="cpu")
            self.state_spec = Composite({k: Unbounded(start[k].shape[1:]) for k in keys})
            self.observation_spec = Composite({k: Unbounded(start[k].shape[1:]) for k in keys})
            self.action_spec = Bounded(-1.0, 1.0, (model.action_size,))
            self.reward_spec = Unbounded((1,))

        def _reset(self, tensordict):
            return TensorDict({k: v[0] for k, v in start.items()}, batch_size=self.batch_size)

    world = WorldModelWrapper(
        TensorDictModule(Transition(), in_keys=[*keys, "action"], out_keys=keys),
        TensorDictModule(Head(model.reward), in_keys=keys, out_keys=["reward"]),
    )
    env = LatentEnv(world)
    if case.planner == "cem":
        planner = CEMPlanner(env, case.horizon, case.iterations, case.candidates, case.elites)
    else:
        value = ValueOperator(Head(model.value), in_keys=keys)
        estimator = TDLambdaEstimator(gamma=0.99, lmbda=0.95, value_network=value)
        # TorchRL multiplies the advantages by its temperature: 0.5 is our lambda = 2.0
        planner = MPPIPlanner(env, estimator, temperature=0.5, planning_horizon=case.horizon,
                              optim_steps=case.iterations, num_candidates=case.candidates, top_k=case.elites)
    root = TensorDict({k: v[0] for k, v in start.items()}, batch_size=[])
    return lambda: planner(root.clone())["action"]


def mbrl_planner(model, case: Case):
    from mbrl.planning import CEMOptimizer

    start = model.start_state()
    rows = {k: v.expand(case.candidates, *v.shape[1:]).clone() for k, v in start.items()}
    bounds = [[1.0] * model.action_size] * case.horizon
    optimizer = CEMOptimizer(
        num_iterations=case.iterations, elite_ratio=case.elites / case.candidates, population_size=case.candidates,
        lower_bound=[[-b for b in row] for row in bounds], upper_bound=bounds, alpha=0.1,
        device=torch.device("cpu"), return_mean_elites=True,
    )

    def objective(population: Tensor) -> Tensor:  # [C, H, A] -> [C]
        state, total = rows, 0.0
        for t in range(population.shape[1]):
            state = model.step(state, population[:, t])
            total = total + model.reward(state)
        return total

    x0 = torch.zeros(case.horizon, model.action_size)
    return lambda: optimizer.optimize(objective, x0)[0]


def time_calls(act, warmup: int, repeats: int) -> list[float]:
    with torch.no_grad():
        for _ in range(warmup):
            act()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            action = act()
            times.append(time.perf_counter() - start)
    if not torch.isfinite(torch.as_tensor(action)).all():
        raise RuntimeError("a planner returned a non-finite action")
    return times


def run_case(case: Case, model_kind: str, bf16: bool, warmup: int, repeats: int) -> dict:
    model = BenchModel(model_kind, ACTION_SIZE)
    runner = model if case.system == "reverie" or not bf16 else Autocast(model)
    if case.system == "reverie":
        act = reverie_planner(model, case, bf16)
    elif case.system == "torchrl":
        act = torchrl_planner(runner, case)
    else:
        act = mbrl_planner(runner, case)
    times = time_calls(act, warmup, repeats)
    flops = model_flops(model, case.candidates, case.horizon, case.iterations, case.uses_value)
    return {"ms": [1000 * t for t in times], "flops": flops, "params": model.parameters}


# ---------------------------------------------------------------------------
# driver


def peer_versions() -> dict:
    versions = {}
    for name, module in (("torchrl", "torchrl"), ("mbrl-lib", "mbrl")):
        try:
            versions[name] = __import__(module).__version__
        except Exception:
            pass
    return versions


def run_peer_subprocess(python: str, case: Case, args, bf16: bool, model_kind: str) -> dict:
    command = [python, os.path.abspath(__file__), "--peer-case", json.dumps(case.__dict__), "--model", model_kind,
               "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    if bf16:
        command.append("--peer-bf16")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="auto", choices=["auto", "reverie", "standin"],
                        help="latent model: reverie's RSSMWorldModel, the stand-in, or auto (reverie if it imports)")
    parser.add_argument("--systems", default="reverie,torchrl,mbrl-lib", help="comma-separated systems to time")
    parser.add_argument("--planners", default="cem,mppi", help="comma-separated planners to time")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--peer-python", default=os.environ.get("REVERIE_PEERS_PYTHON", sys.executable),
                        help="interpreter that has torchrl / mbrl installed (default $REVERIE_PEERS_PYTHON)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="a tenth of the candidates and elites: checks it runs, "
                        "its figures are not the benchmark")
    parser.add_argument("--peer-case", help=argparse.SUPPRESS)
    parser.add_argument("--peer-bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.peer_case:  # inside the peers' interpreter: time one case, print one JSON line
        case = Case(**json.loads(args.peer_case))
        try:
            result = run_case(case, args.model, args.peer_bf16, args.warmup, args.repeats)
            result["version"] = peer_versions().get(case.system)
        except ImportError as error:
            result = {"error": f"not installed ({error.name})"}
        print(json.dumps(result))
        return

    model_kind = resolve_model_kind(args.model)
    systems = [s for s in args.systems.split(",") if s]
    planners = set(args.planners.split(","))
    precisions = [p for p in args.precisions.split(",") if p]
    model = BenchModel(model_kind, ACTION_SIZE)
    print(f"# bench_planners  {time.strftime('%Y-%m-%d %H:%M')}  torch {torch.__version__}  threads {args.threads}  "
          f"cpus {os.cpu_count()}  {platform.processor() or platform.machine()}  load {os.getloadavg()[0]:.1f}")
    print(f"# model: {model_kind} ({model.parameters / 1e6:.1f}M parameters with critic), action size {ACTION_SIZE}, "
          f"1 start state, warmup {args.warmup}, median of {args.repeats}")

    rows = []
    header = f"{'system':<16} {'planner':<5} {'setting':<22} {'prec':<5} {'ms/action':>10} {'min':>8} {'max':>8} " \
             f"{'GFLOP/s':>8} {'vs reverie':>10}"
    print(header)
    print("-" * len(header))
    reference = {}
    for name, horizon, candidates, elites, iterations in PLANNER_CASES:
        if name not in planners:
            continue
        if args.smoke:
            candidates, elites = candidates // 10, elites // 10
        for precision in precisions:
            for system in systems:
                if name not in SYSTEMS.get(system, ()):
                    continue
                case = Case(system, name, horizon, candidates, elites, iterations)
                bf16 = precision == "bf16"
                if system == "reverie":
                    result = run_case(case, model_kind, bf16, args.warmup, args.repeats)
                    result["version"] = "local"
                else:
                    result = run_peer_subprocess(args.peer_python, case, args, bf16, model_kind)
                label = f"{system} {result.get('version') or ''}".strip()
                if "error" in result:
                    print(f"{label:<16} {name:<5} {case.setting:<22} {precision:<5} {'-':>10}  ({result['error']})")
                    continue
                median = statistics.median(result["ms"])
                key = (name, horizon, precision)
                if system == "reverie":
                    reference[key] = median
                ratio = f"{median / reference[key]:.2f}x" if key in reference else "-"
                gflops = result["flops"] / (median / 1000) / 1e9
                print(f"{label:<16} {name:<5} {case.setting:<22} {precision:<5} {median:>10.1f} {min(result['ms']):>8.1f} "
                      f"{max(result['ms']):>8.1f} {gflops:>8.1f} {ratio:>10}", flush=True)
                rows.append({**case.__dict__, "precision": precision, "model": model_kind, **result,
                             "ms_median": median})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
