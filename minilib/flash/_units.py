"""Work units shared among CPU worker threads, the way a GPU kernel's thread blocks share its SMs."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

_POOLS: dict[int, ThreadPoolExecutor] = {}


def run_units(fn, items):
    """``[fn(x) for x in items]``, the items shared among ``torch.get_num_threads()`` worker threads.

    Like the thread blocks of a GPU kernel, each worker takes whole work units (heads, sequences,
    query blocks) and runs them with single-threaded ops: torch's own intra-op threading would
    synchronise its threads on every small tile op.  Inside a worker this runs serially, so units
    may nest; the caller's grad mode is carried into the workers.
    """
    workers = min(torch.get_num_threads(), len(items))
    if workers <= 1:
        return [fn(x) for x in items]
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))
    grad = torch.is_grad_enabled()

    def run(x):
        with torch.set_grad_enabled(grad):
            return fn(x)

    return list(_POOLS[workers].map(run, items))


def map_units(fn, tensors, n_units):
    """Run ``fn`` on slices of dim 0 of ``tensors`` (the batch x kv-head axis) as parallel work units.

    ``fn`` returns a tuple of tensors, concatenated back along dim 0.
    """
    workers = min(torch.get_num_threads(), n_units)
    if workers <= 1:
        return fn(*tensors)
    step = -(-n_units // workers)
    parts = run_units(lambda a: fn(*(None if t is None else t[a:a + step] for t in tensors)),
                      list(range(0, n_units, step)))
    return tuple(torch.cat(p) for p in zip(*parts))


def even_split(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``range(n)`` whose lengths differ by at most one."""
    base, extra = divmod(n, parts)
    bounds = [0]
    for p in range(parts):
        bounds.append(bounds[-1] + base + (p < extra))
    return list(zip(bounds[:-1], bounds[1:]))

