"""Step several environments together, in this process or one subprocess each.

Every value of a batched step dict has a leading ``[N]`` axis. An env whose
previous step had ``is_last`` is reset on the next ``step`` call instead of
stepped (its action is ignored) and returns its ``is_first`` step, so a
driver can call ``step`` forever. Before the first ``reset`` every env counts
as finished, so the first ``step`` also resets them all.

With ``parallel=True`` each env lives in its own process (``forkserver``
where the platform has it, else ``spawn``: never ``fork``, which copies
threads and OpenGL/torch state badly). The env constructors are sent with
cloudpickle, so lambdas and closures work. Each env is seeded by its own
constructor, so parallel and serial runs give identical steps.

The first two batches of steps (the first reset and the first step) are
checked against the shared specs with :func:`~reverie.envs.spaces.check_step`,
so an env of one's own that breaks the step-dict convention is named in one
sentence instead of failing inside ``np.stack``; later batches are not checked.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from reverie.envs.spaces import ActionSpec, ArraySpec, Env, EnvError, check_step

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

T = TypeVar("T")

try:  # gymnasium depends on cloudpickle, so it is normally present
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover - plain pickle still handles module-level functions
    _pickler = pickle


class EnvWorkerError(EnvError):
    """An environment that failed in its worker process; ``worker_traceback`` is the worker's full traceback,
    for whoever debugs the env."""

    def __init__(self, message: str, worker_traceback: str) -> None:
        super().__init__(message)
        self.worker_traceback = worker_traceback


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _worker(conn: Connection, payload: bytes) -> None:
    """Subprocess loop: build the env, then answer ``(command, data)`` messages until 'close'.

    Replies are ``("ok", result)`` or ``("error", message)``; an exception
    never kills the loop, so the parent decides what to do.
    """
    env = None
    try:
        env = pickle.loads(payload)()  # constructor sent by our own parent, not a file
        conn.send(("ok", (env.obs_spec, env.act_spec)))
    except BaseException as err:  # noqa: BLE001 - every failure must reach the parent
        conn.send(("error", _describe(err), traceback.format_exc()))
    try:
        while True:
            command, data = conn.recv()
            if command == "close":
                break
            try:
                if env is None:
                    raise EnvError("the environment could not be built")
                conn.send(("ok", _run(env, command, data)))
            except Exception as err:  # noqa: BLE001
                conn.send(("error", _describe(err), traceback.format_exc()))
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # parent went away or was interrupted: just exit
    finally:
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing is best effort on the way out
                pass
        conn.close()


def _run(env: Env, command: str, data: np.ndarray | None) -> Any:
    """What ``command`` returns: a step dict (reset, step) or a frame (render)."""
    if command == "reset":
        return env.reset()
    if command == "step":
        return env.step(data)
    if command == "render":
        return env.render()
    raise EnvError(f"unknown BatchEnv command {command!r}")


class _Handle(Protocol):
    """One env of a BatchEnv, in this process or in a worker: ``send`` a command, ``receive`` its result."""

    def specs(self, index: int) -> tuple[dict[str, ArraySpec], ActionSpec]:
        """The env's (obs_spec, act_spec); EnvError if it could not be built."""
        ...

    def send(self, command: str, data: np.ndarray | None = None) -> None: ...

    def receive(self, index: int) -> Any:
        """What the command sent last returned (see :func:`_run`); EnvError naming env ``index`` if it failed."""
        ...

    def close(self) -> None: ...


class _LocalHandle:
    """An env in this process with the same send/receive shape as a worker."""

    def __init__(self, env_fn: Callable[[], Env]) -> None:
        self.env = env_fn()
        self._result: Any = None

    def specs(self, index: int) -> tuple[dict[str, ArraySpec], ActionSpec]:
        return self.env.obs_spec, self.env.act_spec

    def send(self, command: str, data: np.ndarray | None = None) -> None:
        self._result = _run(self.env, command, data)

    def receive(self, index: int) -> Any:
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        self.env.close()


class _WorkerHandle:
    """An env in a subprocess, spoken to over a pipe."""

    def __init__(self, env_fn: Callable[[], Env], context: ForkServerContext | SpawnContext) -> None:
        self._conn, child = context.Pipe()
        self._process: BaseProcess = context.Process(
            target=_worker, args=(child, _pickler.dumps(env_fn)), daemon=True
        )
        self._process.start()
        child.close()
        self._closed = False

    def specs(self, index: int) -> tuple[dict[str, ArraySpec], ActionSpec]:
        return self.receive(index)   # the worker's first reply

    def send(self, command: str, data: np.ndarray | None = None) -> None:
        try:
            self._conn.send((command, data))
        except (BrokenPipeError, OSError):
            pass  # the matching receive() reports the dead worker

    def receive(self, index: int) -> Any:
        try:
            reply = self._conn.recv()
        except (EOFError, OSError, ConnectionError):
            code = self._process.exitcode
            raise EnvError(f"environment {index}'s worker process died (exit code {code})") from None
        if reply[0] == "error":
            raise EnvWorkerError(f"environment {index} failed in its worker process: {reply[1]}", reply[2])
        return reply[1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=2.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=2.0)
        self._conn.close()


def _start_context() -> ForkServerContext | SpawnContext:
    if "forkserver" in mp.get_all_start_methods():
        return mp.get_context("forkserver")
    return mp.get_context("spawn")


class BatchEnv:
    """``N`` environments with identical specs, stepped as one.

    Args:
        env_fns: one constructor per env, each returning an ``Env`` (seed them
            differently, e.g. ``functools.partial(make_env, name, seed=i)``).
        parallel: run each env in its own subprocess.

    Attributes:
        num_envs: ``N``.
        obs_spec, act_spec: the specs shared by every env (no batch axis).
    """

    def __init__(self, env_fns: Sequence[Callable[[], Env]], parallel: bool = False) -> None:
        if not env_fns:
            raise EnvError("BatchEnv needs at least one environment constructor")
        self.num_envs = len(env_fns)
        self.parallel = bool(parallel)
        self._handles: list[_Handle] = []
        self._needs_reset = np.ones(self.num_envs, dtype=bool)
        self._unchecked_batches = 2   # the first reset and the first step are checked against the specs
        self._pending = False         # a step_async awaits its step_wait
        try:
            if self.parallel:
                context = _start_context()
                self._handles = [_WorkerHandle(fn, context) for fn in env_fns]
                specs = self._gather(lambda i, h: h.specs(i))
            else:
                for fn in env_fns:
                    self._handles.append(_LocalHandle(fn))
                specs = [h.specs(i) for i, h in enumerate(self._handles)]
        except BaseException:
            self.close()
            raise
        self.obs_spec: dict[str, ArraySpec] = specs[0][0]
        self.act_spec: ActionSpec = specs[0][1]
        for i, (obs_spec, act_spec) in enumerate(specs):
            if obs_spec != self.obs_spec or act_spec != self.act_spec:
                self.close()
                raise EnvError(
                    f"environment {i} has specs ({obs_spec}, {act_spec}) but environment 0 has "
                    f"({self.obs_spec}, {self.act_spec}): a BatchEnv needs identical envs"
                )

    def _gather(self, receive: Callable[[int, _Handle], T]) -> list[T]:
        """Receive from every handle even after a failure, so pipes stay in step; then raise the first."""
        results: list[T] = []
        first_error: EnvError | None = None
        for i, handle in enumerate(self._handles):
            try:
                results.append(receive(i, handle))
            except EnvError as err:
                first_error = first_error or err
        if first_error is not None:
            raise first_error
        return results

    def _receive_steps(self) -> dict[str, np.ndarray]:
        """Every env's answer to the command just sent, stacked; the first two batches are checked first."""
        steps = self._gather(lambda i, h: h.receive(i))
        if self._unchecked_batches:
            self._unchecked_batches -= 1
            for i, step in enumerate(steps):
                try:
                    check_step(step, self.obs_spec)
                except EnvError as err:
                    raise EnvError(f"environment {i} broke the step-dict convention: {err}") from None
        return {key: np.stack([s[key] for s in steps]) for key in steps[0]}

    def reset(self) -> dict[str, np.ndarray]:
        """Reset every env; each value is ``[N, ...]`` and ``is_first`` is all True."""
        for handle in self._handles:
            handle.send("reset")
        steps = self._receive_steps()
        self._needs_reset = steps["is_last"].copy()
        return steps

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        """Step every env (reset those that just ended); ``actions`` is ``[N]`` int or ``[N, A]`` float."""
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Start :meth:`step`: send the actions and return at once. With ``parallel=True`` the envs step in
        their processes while the caller works (the training loop updates); :meth:`step_wait` collects."""
        if self._pending:
            raise EnvError("BatchEnv.step_async was called twice; call step_wait() between")
        actions = self._check_actions(actions)
        for i, handle in enumerate(self._handles):
            if self._needs_reset[i]:
                handle.send("reset")
            else:
                handle.send("step", actions[i])
        self._pending = True

    def step_wait(self) -> dict[str, np.ndarray]:
        """The steps started by :meth:`step_async`, ``[N, ...]`` each."""
        if not self._pending:
            raise EnvError("BatchEnv.step_wait was called without a step_async before it")
        self._pending = False
        steps = self._receive_steps()
        self._needs_reset = steps["is_last"].copy()
        return steps

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        actions = np.asarray(actions)
        if self.act_spec.discrete:
            if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
                got = f"{actions.dtype}{list(actions.shape)}"
                raise EnvError(f"BatchEnv.step needs int actions [{self.num_envs}], got {got}")
            return actions.astype(np.int64)
        expected = (self.num_envs, self.act_spec.size)
        if actions.shape != expected:
            raise EnvError(
                f"BatchEnv.step needs float actions {list(expected)} in [-1, 1], got {list(actions.shape)}"
            )
        return actions.astype(np.float32)

    def render(self) -> np.ndarray:
        """Frames of every env, uint8 ``[N, H, W, 3]``."""
        for handle in self._handles:
            handle.send("render")
        return np.stack(self._gather(lambda i, h: h.receive(i)))

    def close(self) -> None:
        """Close every env and end every worker process (safe to call twice)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            try:
                handle.close()
            except Exception:  # noqa: BLE001 - close the others regardless
                pass

    def __enter__(self) -> BatchEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
