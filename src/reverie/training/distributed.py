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

import copy
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from reverie.config import ConfigError
from reverie.training.loop import Trainer

__all__ = ["SEED_STRIDE", "DataParallel", "ParallelTrainer", "rank_seed"]

#: Rank r's seed is run.seed + SEED_STRIDE * r.
SEED_STRIDE = 1000


def rank_seed(seed: int, rank: int) -> int:
    return seed + SEED_STRIDE * rank


@dataclass
class DataParallel:
    """This process's place in a data-parallel run, and the collectives the trainer needs."""

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
    @staticmethod
    def check(agent: Any) -> None:
        """Refuse, in one sentence, an agent that does not learn by gradient steps (``agent.data_parallel``)."""
        if not agent.data_parallel:
            raise ConfigError(f"agent '{agent.name}' does not learn by gradient steps on replay batches "
                              f"({type(agent.schedule).__name__} schedule), so its training cannot be split "
                              "across processes; train it with one process")

    def attach(self, agent: Any) -> None:
        """Make rank 0's parameters and buffers everyone's and average every gradient from now on."""
        self.check(agent)
        world = self.world

        def average(param: torch.Tensor) -> None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)

        for module in agent.modules.values():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)
            for param in module.parameters():
                if param.requires_grad:
                    param.register_post_accumulate_grad_hook(average)

    def sync_buffers(self, agent: Any) -> None:
        """Rank 0's buffers (running statistics an update changed from local data) on every rank."""
        for module in agent.modules.values():
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)


class _Silent:
    """A logger or progress display that shows and writes nothing (ranks other than 0)."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    def episode(self, *args: Any) -> None:
        pass

    def update(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


class ParallelTrainer(Trainer):
    """:class:`Trainer` for one rank of a data-parallel run (see the module docstring)."""

    def __init__(self, parallel: DataParallel, agent: Any, cfg: Any, run: Any, folder: Any, *args: Any,
                 **kwargs: Any):
        self.parallel = parallel
        if not parallel.is_main:   # rank r keeps its replay shard in replay/rank-r
            folder = copy.copy(folder)
            folder.replay = Path(folder.replay) / f"rank-{parallel.rank}"
        super().__init__(agent, cfg, run, folder, *args, **kwargs)

    def resume(self) -> bool:
        resumed = super().resume()
        # Each shard kept a different number of steps after the checkpoint: adopt rank 0's counters so
        # that every rank owes the same updates at the same agent steps.
        counters = self.parallel.broadcast(vars(self.counters).copy())
        for key, value in counters.items():
            setattr(self.counters, key, value)
        if not self.parallel.is_main:   # the checkpoint restored one torch RNG state on every rank
            torch.manual_seed(self.run.seed + self.counters.updates)
        self.parallel.attach(self.agent)
        return resumed

    def open_logger(self, **kwargs: Any) -> Any:
        return super().open_logger(**kwargs) if self.parallel.is_main else _Silent()

    def open_progress(self, **kwargs: Any) -> Any:
        return super().open_progress(**kwargs) if self.parallel.is_main else _Silent()

    def evaluate(self, logger: Any) -> None:
        if self.parallel.is_main:
            super().evaluate(logger)
        else:   # only rank 0 evaluates; the others keep its bookkeeping
            self.counters.last_eval = self.counters.env_steps
            self.latest_eval = self.latest_eval or (float("nan"), float("nan"))

    def checkpoint(self) -> None:
        if self.parallel.is_main:
            super().checkpoint()
            return
        self.replay.flush()
        c = self.counters
        c.last_checkpoint = c.env_steps
        c.pinned = max(c.pinned, self._milestones_reached())

    def _train_owed(self, prefill: int, tokens: int) -> list[dict[str, float]]:
        out = super()._train_owed(prefill, tokens)
        if out:
            self.parallel.sync_buffers(self.agent)
        return out
