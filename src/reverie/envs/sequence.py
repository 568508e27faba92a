"""Task sequences for continual learning: ``"A>B>C"`` trains on A, then B, then C.

Each task is an environment name as :func:`reverie.envs.make_env` takes it (physics variants included:
``gym:Pendulum-v1?g=10>gym:Pendulum-v1?g=4``). Every task but the last is trained for ``switch_every``
environment steps; the last runs to the end of the budget. So task ``k`` is the training environment for
the steps ``[k * switch_every, (k + 1) * switch_every)`` and the run switches at the steps
``switch_every, 2 * switch_every, ...``. Without ``switch_every`` the budget is split evenly.

``>`` separates tasks (a comma is the multitask syntax: several environments at once).
"""

from __future__ import annotations

from dataclasses import dataclass

from reverie.envs.spaces import EnvError

__all__ = ["TaskSequence", "is_sequence", "parse_sequence"]

SEPARATOR = ">"


def is_sequence(env: str) -> bool:
    """Whether ``env`` names a task sequence (two or more tasks)."""
    return SEPARATOR in env


@dataclass(frozen=True)
class TaskSequence:
    """The tasks of a run and the environment steps at which it switches from one to the next."""

    tasks: tuple[str, ...]
    """Environment names, in training order."""
    switch_every: int
    """Environment steps per task (the last task runs to the end of the budget)."""

    @property
    def switches(self) -> tuple[int, ...]:
        """The environment steps at which task ``k`` (k >= 1) starts: ``k * switch_every``."""
        return tuple(k * self.switch_every for k in range(1, len(self.tasks)))

    def index_at(self, env_steps: int) -> int:
        """Index of the task trained at environment step ``env_steps``."""
        return min(int(env_steps) // self.switch_every, len(self.tasks) - 1)

    def task_at(self, env_steps: int) -> str:
        return self.tasks[self.index_at(env_steps)]


def parse_sequence(env: str, steps: int, switch_every: int | None = None) -> TaskSequence:
    """The sequence ``env`` names (a single task is a sequence of one), over a budget of ``steps``.

    ``switch_every`` None splits ``steps`` evenly (rounded down). EnvError for an empty task, or a schedule
    that leaves a task without steps.
    """
    tasks = tuple(part.strip() for part in env.split(SEPARATOR))
    if any(not task for task in tasks):
        raise EnvError(f"the task sequence {env!r} has an empty task: write 'A>B>C' with a task between every '>'")
    every = switch_every if switch_every is not None else max(steps // len(tasks), 1)
    last_start = every * (len(tasks) - 1)
    if len(tasks) > 1 and last_start >= steps:
        raise EnvError(f"switching every {every} steps, the last of the {len(tasks)} tasks of {env!r} would start "
                       f"at step {last_start}, at or past the end of run.steps={steps}: lower the switch interval "
                       "or raise the steps")
    return TaskSequence(tasks, every)
