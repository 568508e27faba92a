"""One rank of the two-process gloo checks in test_distributed.py (run as a script: RANK WORLD PORT OUT)."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch import nn

from reverie.agents.base import AgentBase, ReplayRatio, gradient_step
from reverie.agents.registry import agent_entry, resolve_config
from reverie.models.batch import Batch
from reverie.specs import ActionSpec, ArraySpec
from reverie.training.distributed import DataParallel

OBS = {"vector": ArraySpec((4,), np.dtype(np.float32))}
ACT = ActionSpec(discrete=True, size=2)


class Toy(AgentBase):
    """A linear regression 'agent': one Adam step on the mean squared error, gradients clipped hard."""

    name = "toy"
    schedule = ReplayRatio()

    def __init__(self):
        super().__init__(OBS, ACT, "cpu")
        self.net = nn.Linear(3, 2)
        self.modules = {"net": self.net}
        self.optimizers = {"opt": torch.optim.Adam(self.net.parameters(), lr=0.1)}

    def update(self, x, y):
        loss = ((self.net(x) - y) ** 2).mean(-1)
        return gradient_step({"mse": loss}, {"mse": 1.0}, self.optimizers["opt"], self.net.parameters(), 0.05)


def global_batch():
    rng = np.random.default_rng(0)
    return torch.as_tensor(rng.normal(size=(8, 3)), dtype=torch.float32), torch.as_tensor(
        rng.normal(size=(8, 2)), dtype=torch.float32)


def random_steps(seed, b=2, t=8):
    rng = np.random.default_rng(seed)
    return {"vector": rng.normal(size=(b, t, 4)).astype(np.float32),
            "action": np.eye(2, dtype=np.float32)[rng.integers(0, 2, (b, t))],
            "reward": rng.normal(size=(b, t)).astype(np.float32),
            "is_first": np.zeros((b, t), bool), "is_last": np.zeros((b, t), bool),
            "is_terminal": np.zeros((b, t), bool),
            "search_policy": rng.dirichlet(np.ones(2), (b, t)).astype(np.float32),
            "root_value": rng.normal(size=(b, t)).astype(np.float32)}


def dreamer_batch(seed):
    return Batch.build(random_steps(seed), OBS, ACT)


def main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    parallel = DataParallel.from_env()
    parallel.init("cpu")
    torch.manual_seed(1000 * rank)   # different initial weights: attach must make rank 0's everyone's
    toy = Toy()
    parallel.attach(toy)
    x, y = global_batch()
    rows = slice(rank * 4, (rank + 1) * 4)
    toy.update(x[rows], y[rows])
    cfg = resolve_config("dreamer", "tiny", ["run.batch_size=2", "run.seq_len=8"])
    dreamer = agent_entry("dreamer").build(OBS, ACT, cfg, "cpu")
    parallel.attach(dreamer)
    for i in range(2):
        dreamer.update(dreamer_batch(100 * rank + i))
        parallel.sync_buffers(dreamer)
    muzero = agent_entry("muzero").build(OBS, ACT, resolve_config("muzero", "tiny", []), "cpu")
    parallel.attach(muzero)
    muzero.update(Batch.build(random_steps(50 + rank, t=6), OBS, ACT, "cpu", muzero.extras_spec))
    arrays = {f"toy.{k}": v.detach().numpy() for k, v in toy.net.state_dict().items()}
    for prefix, agent in (("", dreamer), ("muzero.", muzero)):
        for name, module in agent.modules.items():
            arrays.update({f"{prefix}{name}.{k}": v.detach().numpy() for k, v in module.state_dict().items()})
    np.savez(os.path.join(out, f"rank{rank}.npz"), **arrays)
    parallel.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
