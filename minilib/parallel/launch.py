r"""Start a real process group on this machine: ``world_size`` processes that talk through ``torch.distributed``.

Each worker is a separate process with its own memory; the only way data moves between them is a
collective or a point-to-point message over the CPU ``gloo`` backend, here on the loopback interface
(the same code runs across machines with NCCL on GPUs). :func:`launch` forks the workers, sets up the group
through a TCP rendezvous on ``127.0.0.1``, runs ``fn(rank, world_size, *args)`` in each, and returns what
every rank returned. A worker that raises fails the whole call with its traceback at once, and no worker
outlives the call.
"""
from __future__ import annotations

import datetime
import errno
import multiprocessing
import os
import pickle
import queue as queue_module
import socket
import time
import traceback
from typing import Callable

import torch

from minilib._checks import check_number, check_positive_int

__all__ = ["launch", "free_port", "WorkerError"]

#: Seconds ``launch`` waits for all workers by default (the whole call, rendezvous included).
DEFAULT_TIMEOUT_S = 120.0


class WorkerError(RuntimeError):
    """A worker of :func:`launch` raised; the message carries its rank and traceback."""


def free_port() -> int:
    """A TCP port on ``127.0.0.1`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _worker(rank: int, world_size: int, port: int, timeout: float, fn: Callable, args: tuple, results) -> None:
    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only: the group never leaves this machine
    torch.set_num_threads(1)  # W workers share the cores; one intra-op thread each
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        value = fn(rank, world_size, *args)
        results.put((rank, "ok", pickle.dumps(value)))
    except BaseException:  # noqa: BLE001 - every failure must reach the parent, KeyboardInterrupt included
        results.put((rank, "error", traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _stop(processes) -> None:
    """Terminate, then kill, every worker still alive, and reap them all."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def launch(fn: Callable, world_size: int, *args, timeout: float = DEFAULT_TIMEOUT_S, port: int | None = None) -> list:
    r"""Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined in one gloo process group.

    Returns the ``world_size`` return values, in rank order (each must pickle). Inside ``fn`` the default
    group is initialised (``torch.distributed.get_rank()`` is ``rank``) and torch uses one thread. The
    workers are forked, so ``fn`` may be any function, a notebook's included. ``port`` is the rendezvous
    port on ``127.0.0.1``; by default a free one is picked (and another if it is taken before the
    workers bind it). Raises :class:`WorkerError` with the first failing worker's traceback as soon as
    one fails, ``TimeoutError`` after ``timeout`` seconds; in both cases every worker is stopped first.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(rank, world_size, *args), got {type(fn).__name__}")
    check_positive_int("world_size", world_size)
    check_number("timeout", timeout, positive=True)
    if port is not None:
        check_positive_int("port", port)
        if _port_in_use(port):
            raise ValueError(f"port {port} on 127.0.0.1 is already in use; pass another or port=None for a free one")
    ctx = multiprocessing.get_context("fork")
    for attempt in range(3):
        chosen = free_port() if port is None else port
        try:
            return _run(ctx, fn, world_size, args, timeout, chosen)
        except WorkerError as err:
            # another program may take the picked port between free_port() and the rendezvous
            if port is not None or "Address already in use" not in str(err) or attempt == 2:
                raise


def _run(ctx, fn, world_size, args, timeout, port) -> list:
    results = ctx.Queue()
    processes = [ctx.Process(target=_worker, args=(rank, world_size, port, timeout, fn, args, results), daemon=True)
                 for rank in range(world_size)]
    values: dict[int, object] = {}
    deadline = time.monotonic() + timeout
    try:
        for p in processes:
            p.start()
        while len(values) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"launch: {world_size - len(values)} of {world_size} workers had not finished "
                                   f"after timeout={timeout} s (ranks done: {sorted(values)})")
            try:
                rank, status, payload = results.get(timeout=min(remaining, 0.5))
            except queue_module.Empty:
                dead = [r for r, p in enumerate(processes) if not p.is_alive() and p.exitcode not in (0, None)
                        and r not in values]
                if dead:
                    raise WorkerError(f"worker {dead[0]} died with exit code {processes[dead[0]].exitcode} "
                                      "without reporting (killed, or crashed in native code)")
                continue
            if status == "error":
                raise WorkerError(f"worker {rank} of {world_size} failed:\n{payload}")
            values[rank] = pickle.loads(payload)
    finally:
        _stop(processes)
        results.close()
    return [values[r] for r in range(world_size)]
