"""Data-parallel training with ``torch.distributed``: N learner processes, one agent.

Started by ``torchrun --nproc-per-node N -m reverie train ...`` (or ``reverie train --nproc N``, which
runs exactly that through ``torch.distributed.run``); a process learns its rank from torchrun's
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``. Backend: gloo on CPU, nccl on CUDA (rank ``r`` on
``cuda:LOCAL_RANK``).

What each rank does:

- collects with its own environments into its own replay shard (rank 0 in ``replay/``, rank ``r``
  in ``replay/rank-r/``), seeded with ``run.seed + 1000 * rank`` (environments, replay sampler,
  exploration noise, torch);
- runs the single-process schedule on its own data (``run.steps``, ``run.batch_size`` and
  ``run.train_ratio`` are per rank, so the global batch is N x ``run.batch_size`` and the run
  takes N x ``run.steps`` environment steps);
- averages gradients: every trainable parameter of the agent's modules gets a hook that all-reduces
  (mean) its gradient the moment backward has accumulated it, so gradient clipping and every
  optimiser see the average, whatever order of losses and optimisers the agent's ``update`` has.
  Parameters start equal (broadcast from rank 0) and so stay equal; buffers that an update changes
  from local data (Dreamer's return-percentile EMA) are broadcast from rank 0 after the updates of
  every agent step, as DDP does with its buffers.

Rank 0 alone takes the folder's lock and writes run.json, the config, metrics, TensorBoard,
checkpoints, the curves and the summary; every rank resumes from the same checkpoint and then
adopts rank 0's counters, so all ranks owe the same updates at the same moments (a collective that
one rank skipped would hang the others). Agents whose learning is not a gradient step
(``agent.data_parallel`` false: PETS refits, staged pipelines) are refused in one sentence.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from reverie.agents.base import Agent, AgentBase
from reverie.config import ConfigError
from reverie.run_config import AgentConfig
from reverie.training.driver import Driver
from reverie.training.run_dir import RunFolder, RunFolderError

__all__ = ["SEED_STRIDE", "DataParallel", "rank_seed"]

#: Rank r's seed is run.seed + SEED_STRIDE * r.
SEED_STRIDE = 1000


def rank_seed(seed: int, rank: int) -> int:
    return seed + SEED_STRIDE * rank


@dataclass
class DataParallel:
    """This process's place in a data-parallel run, and the collectives the driver needs: the
    :class:`~reverie.training.driver.Topology` of one rank."""

    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> DataParallel | None:
        """The torchrun launch this process is part of (``WORLD_SIZE`` > 1), else None."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self, device: str) -> str:
        """Join the process group (gloo on CPU, nccl on CUDA); returns this rank's device."""
        cuda = device.startswith("cuda")
        if cuda:
            device = f"cuda:{self.local_rank}"
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
        return device

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    # -- the agent ---------------------------------------------------------------------------------
    # -- the topology the driver consults ---------------------------------------------------------
    def open_folder(self, run_dir: str | Path, agent_name: str, cfg: AgentConfig) -> RunFolder:
        """Rank 0 takes the run folder's lock and prepares it (or finds it unusable); every rank learns which."""
        folder, error = None, None
        if self.is_main:
            try:
                folder, _ = RunFolder.prepare(run_dir, agent_name, cfg)
            except ValueError as e:
                error = e
        message = self.broadcast(None if error is None else str(error))
        if error is not None:
            raise error
        if message is not None:
            raise RunFolderError(message)
        return folder if folder is not None else RunFolder(run_dir)

    def replay_dir(self, folder: RunFolder) -> Path:
        """Rank 0's replay is the folder's; rank r keeps its shard in ``replay/rank-r``."""
        return folder.replay if self.is_main else folder.replay / f"rank-{self.rank}"

    def after_resume(self, driver: Driver) -> None:
        """Each shard kept a different number of steps after the checkpoint: adopt rank 0's counters, so
        every rank owes the same updates at the same agent steps; then share rank 0's parameters."""
        counters = self.broadcast(vars(driver.counters).copy())
        for key, value in counters.items():
            setattr(driver.counters, key, value)
        if not self.is_main:   # the checkpoint restored one torch RNG state on every rank
            torch.manual_seed(driver.run.seed + driver.counters.updates)
        self.attach(driver.agent)

    def after_updates(self, agent: Agent) -> None:
        self.sync_buffers(agent)

    def summary(self, seed: int) -> dict[str, Any]:
        return {"world_size": self.world, "rank_seeds": [rank_seed(seed, r) for r in range(self.world)]}

    def finish(self) -> None:
        self.barrier()

    @staticmethod
    def check(agent: Agent) -> None:
        """Refuse, in one sentence, an agent that does not learn by gradient steps (``agent.data_parallel``)."""
        if not (isinstance(agent, AgentBase) and agent.data_parallel):
            raise ConfigError(f"agent '{agent.name}' does not learn by gradient steps on replay batches "
                              f"({type(agent.schedule).__name__} schedule), so its training cannot be split "
                              "across processes; train it with one process")

    def attach(self, agent: Agent) -> None:
        """Make rank 0's parameters and buffers everyone's and average every gradient from now on."""
        self.check(agent)
        world = self.world

        def average(param: torch.Tensor) -> None:
            assert param.grad is not None   # the hook runs once a gradient was accumulated
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)

        assert isinstance(agent, AgentBase), "check() refuses agents without declared modules"
        for module in agent.modules.values():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
            for param in module.parameters():
                if param.requires_grad:
                    param.register_post_accumulate_grad_hook(average)

    def sync_buffers(self, agent: Agent) -> None:
        """Rank 0's buffers (running statistics an update changed from local data) on every rank."""
        assert isinstance(agent, AgentBase), "check() refuses agents without declared modules"
        for module in agent.modules.values():
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)
