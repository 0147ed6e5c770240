"""launch: W gloo processes on 127.0.0.1 return in rank order; a failing worker fails the call at once with its
traceback and leaves no process behind; a hung one is stopped by the timeout; a taken port is handled."""
import os
import socket
import time

import psutil
import pytest
import torch
import torch.distributed as dist

from minilib.parallel import WorkerError, free_port, launch


def _sum_of_ranks(rank, world_size, offset):
    t = torch.tensor([float(rank)])
    dist.all_reduce(t)
    return rank, world_size, dist.get_rank(), t.item() + offset, torch.get_num_threads()


def _no_children_left():
    deadline = time.monotonic() + 5
    while psutil.Process(os.getpid()).children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not psutil.Process(os.getpid()).children(recursive=True)


@pytest.mark.parametrize("world_size", [1, 3])
def test_workers_join_one_group_and_return_in_rank_order(world_size):
    out = launch(_sum_of_ranks, world_size, 0.5)
    total = world_size * (world_size - 1) / 2 + 0.5
    assert out == [(r, world_size, r, total, 1) for r in range(world_size)]
    assert _no_children_left()


def _fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise ArithmeticError("rank one gives up")
    dist.barrier()  # the others would wait here forever


def test_a_failing_worker_fails_fast_with_its_traceback_and_no_orphans():
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"(?s)worker 1 of 3 failed.*ArithmeticError: rank one gives up"):
        launch(_fail_on_rank_one, 3, timeout=60)
    assert time.monotonic() - start < 20  # not the 60 s timeout: the error stops the others
    assert _no_children_left()


def _hang(rank, world_size):
    time.sleep(60)


def test_a_hung_worker_is_stopped_by_the_timeout():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="timeout=2"):
        launch(_hang, 2, timeout=2)
    assert time.monotonic() - start < 15
    assert _no_children_left()


def test_a_taken_port_is_refused_by_name_and_a_free_one_is_used_by_default():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"port {port}"):
            launch(_sum_of_ranks, 2, 0.0, port=port)
        assert launch(_sum_of_ranks, 2, 0.0)[1][3] == 1.0
    assert 0 < free_port() < 65536
    with pytest.raises(TypeError, match="fn"):
        launch(3, 2)
    with pytest.raises(ValueError, match="world_size"):
        launch(_sum_of_ranks, 0)
