"""Sequence parallelism on a real gloo process group: wall time and bytes moved for W = 1, 2, 4 processes.

    python benchmarks/parallel.py              # every experiment, claims checked, writes results
    python benchmarks/parallel.py --quick      # tiny sizes, a few seconds; nothing checked or saved

Experiments (one thread per rank, float32, B=1, H=4, D=Dv=64):

* ``ring``: causal ring attention (``minilib.parallel.ring_attention_distributed``), forward and backward, at
  L = 4096 over W = 1, 2, 4 ranks, contiguous and zig-zag layouts: wall time of the slowest rank, the scores each
  rank computed and the bytes it sent. The claim checked is the communication, which is exact: each rank sends
  ``2 (W-1) (L/W) D`` key/value elements per head in the forward;
* ``lasp``: LASP-2 linear attention (``minilib.parallel.lasp2_distributed``, decay-free) at L = 4096 and 16384:
  wall time and the bytes gathered, ``W D Dv`` elements per head whatever the length.

Wall times are what they are on the machine that ran them: W processes on a 2-core machine share two cores,
so W = 4 cannot be faster than W = 2 here; on W devices the per-rank work is what shrinks (see ``scores``).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import run_experiments  # noqa: E402
from minilib.parallel import RankLog, lasp2_distributed, launch, ring_attention_distributed, shard  # noqa: E402

H, D = 4, 64
WORLD_SIZES = (1, 2, 4)


def _inputs(L: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, H, L, D, generator=g) / D ** 0.5 for _ in range(4)]


def _ring_rank(rank, world_size, L, layout, repeat):
    q, k, v, dout = _inputs(L)
    local = [shard(t, rank, world_size, layout=layout).requires_grad_() for t in (q, k, v)]
    local_dout = shard(dout, rank, world_size, layout=layout)
    times = []
    for _ in range(repeat):
        log = RankLog()
        dist.barrier()
        start = time.perf_counter()
        ring_attention_distributed(*local, L, layout=layout, causal=True, log=log).backward(local_dout)
        times.append(time.perf_counter() - start)
    events = log.events
    return dict(seconds=min(times), scores=sum(e.get("scores", 0) for e in events if e["kind"] == "compute"),
                forward_bytes_sent=sum(e["bytes"] for e in events if e["kind"] == "send" and e["step"] < world_size),
                backward_bytes_sent=sum(e["bytes"] for e in events if e["kind"] == "send" and e["step"] >= world_size))


def _lasp_rank(rank, world_size, L, repeat):
    q, k, v, _ = _inputs(L)
    local = [shard(t, rank, world_size) for t in (q, k, v)]
    times = []
    for _ in range(repeat):
        log = RankLog()
        dist.barrier()
        start = time.perf_counter()
        lasp2_distributed(*local, L, log=log)
        times.append(time.perf_counter() - start)
    return dict(seconds=min(times), bytes_gathered=log.bytes("all_gather"))


def run_ring(quick: bool) -> dict:
    L, repeat = (256, 1) if quick else (4096, 3)
    rows = []
    for layout in ("contiguous", "zigzag"):
        for W in WORLD_SIZES:
            ranks = launch(_ring_rank, W, L, layout, repeat, timeout=600)
            rows.append(dict(layout=layout, W=W, slowest_rank_seconds=max(r["seconds"] for r in ranks),
                             scores=[r["scores"] for r in ranks],
                             forward_bytes_sent=[r["forward_bytes_sent"] for r in ranks],
                             backward_bytes_sent=[r["backward_bytes_sent"] for r in ranks]))
    return dict(L=L, H=H, D=D, rows=rows)


def check_ring(r: dict) -> None:
    for row in r["rows"]:
        W = row["W"]
        formula = 2 * (W - 1) * (r["L"] // W) * r["D"] * r["H"] * 4  # float32 keys and values
        assert row["forward_bytes_sent"] == [formula] * W, (row, formula)
    zigzag = {row["W"]: row for row in r["rows"] if row["layout"] == "zigzag"}
    contiguous = {row["W"]: row for row in r["rows"] if row["layout"] == "contiguous"}
    for W in WORLD_SIZES:
        ratio = max(contiguous[W]["scores"]) / max(zigzag[W]["scores"])
        assert abs(ratio - 4 * W / (2 * W + 1)) < 1e-9, (W, ratio)


def run_lasp(quick: bool) -> dict:
    lengths, repeat = ((256, 1024), 1) if quick else ((4096, 16384), 3)
    rows = []
    for L in lengths:
        for W in WORLD_SIZES:
            ranks = launch(_lasp_rank, W, L, repeat, timeout=600)
            rows.append(dict(L=L, W=W, slowest_rank_seconds=max(r["seconds"] for r in ranks),
                             bytes_gathered=[r["bytes_gathered"] for r in ranks]))
    return dict(H=H, D=D, rows=rows)


def check_lasp(r: dict) -> None:
    for row in r["rows"]:
        assert row["bytes_gathered"] == [row["W"] * r["H"] * r["D"] * r["D"] * 4] * row["W"], row


def report(name: str, r: dict) -> str:
    if name == "ring":
        return f"ring attention, causal, L={r['L']}, forward+backward:\n" + "\n".join(
            f"  {x['layout']:10s} W={x['W']} slowest rank {1e3 * x['slowest_rank_seconds']:8.1f} ms, "
            f"max scores/rank {max(x['scores']):9d}, forward KiB sent/rank {x['forward_bytes_sent'][0] / 1024:7.0f}"
            for x in r["rows"])
    if name == "lasp":
        return "LASP-2 forward:\n" + "\n".join(
            f"  L={x['L']:6d} W={x['W']} slowest rank {1e3 * x['slowest_rank_seconds']:8.1f} ms, "
            f"KiB gathered/rank {x['bytes_gathered'][0] / 1024:5.0f}" for x in r["rows"])
    return str(r)


EXPERIMENTS = {"ring": (run_ring, check_ring), "lasp": (run_lasp, check_lasp)}


def main(argv=None) -> dict:
    return run_experiments(EXPERIMENTS, name="parallel", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
