"""Benchmark minilib.flash on this CPU against torch SDPA, every ratio timed side by side in one run.

    python benchmarks/flash.py               # every experiment, claims checked, writes benchmarks/results/flash.json
    python benchmarks/flash.py --only tiles  # one experiment; the file keeps the others
    python benchmarks/flash.py --quick       # tiny sizes, a few seconds each; nothing checked or saved

Experiments (chapter 03 reads them all):

* ``tiles``: a sweep of ``(block_q, block_k)`` for ``flash_attention`` over N, D, causal and not, 1 and 2
  threads, beside the call with its default tiles, every time divided by torch SDPA's in the same round;
* ``forward``, ``forward_backward``: the default call against SDPA and the naive materialising attention;
* ``ladder``: the optimisation ladder, one change per rung;
* ``memory``: peak extra resident memory of one forward, each measured in a fresh process;
* ``block_sparse``, ``varlen``: speed-ups from skipping masked blocks and padding;
* ``io``: counted against predicted slow-memory traffic of the NumPy walkthrough.

Times are the minimum over interleaved rounds (noise on a shared machine only ever adds time). Each
experiment sets its own thread count and records it as ``threads``; ``--threads`` is not used.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import run_experiments  # noqa: E402
from minilib.attention import sdpa as naive_sdpa  # noqa: E402  (materialises the (B,H,T,S) scores)
from minilib.flash import (block_sparse_attention, default_tiles, flash_attention, flash_attention_numpy,  # noqa: E402
                           predicted_hbm_accesses, sram_block_sizes, varlen_attention)
from minilib.flash.kernel import _forward, _to_rows  # noqa: E402

THREADS = 2  # the headline measurements use both cores of the 2-core machine
OLD_DEFAULT = (64, 64)  # the library's tiles before they were tuned
TILE_GRID = [(64, 64), (64, 256), (128, 128), (128, 256), (128, 512), (128, 1024), (256, 256), (256, 512),
             (256, 1024), (512, 512)]
DEFAULT_WITHIN = 1.35  # claim: the default call is within this factor of the best swept tiles (see check_tiles)


@contextlib.contextmanager
def num_threads(n: int):
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench(fns: dict, reps: int) -> tuple[dict, dict]:
    """Minimum wall time and minimum process CPU time (s) of each callable over ``reps`` interleaved rounds.

    CPU time only counts while this process runs, so it is the contention-robust number on a shared
    machine; it overstates many-small-op code a little, since idle OpenMP threads spin.
    """
    for f in fns.values():
        f()
    wall = {name: math.inf for name in fns}
    cpu = dict(wall)
    for _ in range(reps):
        for name, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            f()
            wall[name] = min(wall[name], time.perf_counter() - t)
            cpu[name] = min(cpu[name], time.process_time() - c)
    return wall, cpu


def inputs(B, H, N, D, *, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, N, D, generator=g).requires_grad_(grad) for _ in range(3))


def sdpa(q, k, v, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


# --------------------------------------------------------------------------------------------- tiles

def run_tiles(quick: bool) -> dict:
    Ns, Ds = ([128, 256], [16]) if quick else ([256, 1024, 4096], [32, 64, 128])
    grid = TILE_GRID[:3] if quick else TILE_GRID
    rows = []
    for threads in (1, THREADS):
        for N in Ns:
            for D in Ds:
                for causal in (True, False):
                    q, k, v = inputs(1, 8, N, D)
                    fns = {"torch_sdpa": lambda: sdpa(q, k, v, causal),
                           "default tiles": lambda: flash_attention(q, k, v, causal=causal)}
                    for bq, bk in grid:
                        fns[f"{bq}x{bk}"] = (lambda bq=bq, bk=bk:
                                             flash_attention(q, k, v, causal=causal, block_q=bq, block_k=bk))
                    with torch.no_grad(), num_threads(threads):
                        t, _ = bench(fns, 2 if quick else (3 if N >= 4096 else 7))
                    ratios = {name: t[name] / t["torch_sdpa"] for name in fns if name != "torch_sdpa"}
                    bq, bk = default_tiles(N, causal=causal)
                    # the grid entry that runs the same tiles (tiles are clipped to the sequence), if any
                    twin = next((f"{q_}x{k_}" for q_, k_ in grid if q_ == bq and min(k_, N) == min(bk, N)), None)
                    best = min((name for name in ratios if name != "default tiles"), key=ratios.get)
                    # the default tiles were timed twice when they have a twin: the faster timing counts
                    default_time = min(ratios["default tiles"], ratios[twin]) if twin else ratios["default tiles"]
                    rows.append({"threads": threads, "N": N, "D": D, "causal": causal, "default": f"{bq}x{bk}",
                                 "torch_sdpa_s": t["torch_sdpa"], "over_torch_sdpa": ratios, "best": best,
                                 "twin": twin, "default_over_best": default_time / ratios[best],
                                 # the same tiles timed twice: how far apart two timings of one call can be
                                 "repeat_spread": (max(ratios["default tiles"], ratios[twin]) /
                                                   min(ratios["default tiles"], ratios[twin])) if twin else None,
                                 "old_default_over_default": ratios.get("64x64", math.nan) / ratios["default tiles"]})
    return {"B": 1, "H": 8, "grid": ["x".join(map(str, t)) for t in grid], "rows": rows,
            "default_within": DEFAULT_WITHIN,
            "max_default_over_best": {threads: max(r["default_over_best"] for r in rows if r["threads"] == threads)
                                      for threads in (1, THREADS)}}


def check_tiles(r: dict) -> None:
    """The default is within DEFAULT_WITHIN of the best swept tiles at 1 thread, and at 2 threads for N >= 4096.

    Two-thread calls of a few milliseconds are at the mercy of the machine's other load (the same
    tiles timed twice, ``repeat_spread``, differed by up to 3.8x on the shared machine), so there the
    ratios are reported, not asserted.
    """
    slow = [(x["threads"], x["N"], x["D"], x["causal"], round(x["default_over_best"], 2)) for x in r["rows"]
            if (x["threads"] == 1 or x["N"] >= 4096) and x["default_over_best"] > DEFAULT_WITHIN]
    assert not slow, f"default tiles more than {DEFAULT_WITHIN}x slower than the best swept tiles at {slow}"


# --------------------------------------------------------------------------------------------- forward

def run_forward(quick: bool) -> dict:
    N, reps = (512, 2) if quick else (4096, 5)
    q, k, v = inputs(1, 8, N, 64)
    with torch.no_grad(), num_threads(THREADS):
        torch.testing.assert_close(flash_attention(q, k, v, causal=True), sdpa(q, k, v, True), rtol=0, atol=1e-5)
        t, c = bench({
            "torch_sdpa": lambda: sdpa(q, k, v, True),
            "flash": lambda: flash_attention(q, k, v, causal=True),
            "flash_64x64": lambda: flash_attention(q, k, v, causal=True, block_q=64, block_k=64),
            "naive_sdpa": lambda: naive_sdpa(q, k, v, causal=True),
        }, reps)
    return {"N": N, "B": 1, "H": 8, "D": 64, "causal": True, "threads": THREADS,
            "tiles": list(default_tiles(N, causal=True)), "times_s": t, "cpu_times_s": c,
            "flash_over_torch_sdpa": t["flash"] / t["torch_sdpa"],
            "old_default_over_torch_sdpa": t["flash_64x64"] / t["torch_sdpa"],
            "naive_over_flash": t["naive_sdpa"] / t["flash"],
            "cpu_flash_over_torch_sdpa": c["flash"] / c["torch_sdpa"], "cpu_naive_over_flash": c["naive_sdpa"] / c["flash"]}


def check_forward(r: dict) -> None:
    assert r["flash_over_torch_sdpa"] <= 2.0, "the default call is within 2x of torch SDPA"
    assert r["naive_over_flash"] >= 4, "the naive materialising attention is at least 4x slower"
    assert r["old_default_over_torch_sdpa"] > r["flash_over_torch_sdpa"], "the old 64x64 default is slower"


def run_forward_backward(quick: bool) -> dict:
    N, reps = (512, 2) if quick else (4096, 3)
    q, k, v = inputs(1, 8, N, 64, grad=True)
    g = torch.randn(1, 8, N, 64)

    def step(attn):
        return lambda: torch.autograd.grad(attn(), (q, k, v), g)

    with num_threads(THREADS):
        t, c = bench({"torch_sdpa": step(lambda: sdpa(q, k, v, True)),
                      "flash": step(lambda: flash_attention(q, k, v, causal=True))}, reps)
    return {"N": N, "threads": THREADS, "times_s": t, "cpu_times_s": c,
            "flash_over_torch_sdpa": t["flash"] / t["torch_sdpa"],
            "cpu_flash_over_torch_sdpa": c["flash"] / c["torch_sdpa"]}


def check_forward_backward(r: dict) -> None:
    assert r["flash_over_torch_sdpa"] <= 2.5, "forward + backward within 2.5x of torch SDPA"


# --------------------------------------------------------------------------------------------- ladder

def run_ladder(quick: bool) -> dict:
    """Each rung changes one thing; all rungs compute the same output (checked)."""
    N, reps = (512, 2) if quick else (4096, 3)
    H, D = 8, 64
    q, k, v = inputs(1, H, N, D)
    scale = D ** -0.5
    q_pos = k_pos = list(range(N))
    qr, kr, vr = _to_rows(q, H), k.reshape(H, N, D), v.reshape(H, N, D)
    bq, bk = default_tiles(N, causal=True)

    def per_head(block_q, block_k, **flags):
        return lambda: torch.cat([_forward(qr[h:h + 1], kr[h:h + 1], vr[h:h + 1], scale, q_pos, k_pos, 1,
                                           block_q, block_k, **flags)[0] for h in range(H)])

    def batched(block_q, block_k, **flags):
        return lambda: _forward(qr, kr, vr, scale, q_pos, k_pos, 1, block_q, block_k, **flags)[0]

    rungs = {
        "1 straightforward tiled loop (per head, 64x64, normalise every step, visit all tiles)":
            per_head(64, 64, fused=False, skip_masked=False),
        f"2 larger tiles ({bq}x{bk})": per_head(bq, bk, fused=False, skip_masked=False),
        "3 batched heads (one bmm for all heads)": batched(bq, bk, fused=False, skip_masked=False),
        "4 fused rescaling (scale folded into q, in-place exp, normalise once)": batched(bq, bk, skip_masked=False),
        "5 skip fully masked tiles": batched(bq, bk),
        "6 heads split among single-threaded workers (= flash_attention, default tiles)":
            lambda: flash_attention(q, k, v, causal=True).reshape(H, N, D),
    }
    names = list(rungs)
    with torch.no_grad():
        ref = sdpa(q, k, v, True).reshape(H, N, D)
        with num_threads(1):
            # rungs 1-5 run with single-threaded ops, the way each worker of rung 6 runs them
            for name, f in rungs.items():
                torch.testing.assert_close(f(), ref, rtol=0, atol=1e-5, msg=name)
            t, c = bench({names[0]: rungs[names[0]]}, 1)  # slow: one timed run after the warm-up
            t2, c2 = bench({name: rungs[name] for name in names[1:-1]}, reps)
        with num_threads(THREADS):
            t3, c3 = bench({names[-1]: rungs[names[-1]], "torch_sdpa": lambda: sdpa(q, k, v, True)}, reps)
    for d, extra in ((t, (t2, t3)), (c, (c2, c3))):
        for e in extra:
            d.update(e)
    return {"N": N, "threads": {"rungs 1-5": 1, "rung 6 and torch_sdpa": THREADS},
            "rungs": [{"rung": n, "time_s": t[n], "over_torch_sdpa": t[n] / t["torch_sdpa"],
                       "speedup_vs_previous": (t[names[i - 1]] / t[n]) if i else 1.0,
                       "cpu_time_s": c[n], "cpu_over_torch_sdpa": c[n] / c["torch_sdpa"]}
                      for i, n in enumerate(names)]}


def check_ladder(r: dict) -> None:
    steps = [x["speedup_vs_previous"] for x in r["rungs"]]
    assert steps[1] > 2 and steps[4] > 1.5, "larger tiles and skipping masked tiles are the big rungs"


# --------------------------------------------------------------------------------------------- memory

def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child_memory(method: str, N: int) -> dict:
    """One forward in this (fresh) process: its peak RSS growth over the inputs, in bytes.

    Writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the current
    RSS, so VmHWM afterwards minus VmRSS before is the forward's peak extra resident memory.
    """
    torch.set_num_threads(THREADS)
    q, k, v = inputs(1, 8, N, 64)
    with torch.no_grad():
        sdpa(q[:, :, :64], k[:, :, :64], v[:, :, :64], False)  # load the kernels first
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
        out = {"flash": lambda: flash_attention(q, k, v, causal=True), "naive_sdpa": lambda: naive_sdpa(q, k, v, causal=True),
               "torch_sdpa": lambda: sdpa(q, k, v, True)}[method]()
        after = _rss_kib("VmHWM")
    return {"peak_extra_bytes": (after - before) * 1024, "out_bytes": out.numel() * 4}


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a newly spawned Python process (nothing allocated before it), its result returned."""
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_memory(quick: bool) -> dict:
    sizes = ({"flash": [1024], "torch_sdpa": [1024], "naive_sdpa": [512]} if quick else
             {"flash": [4096, 16384], "torch_sdpa": [16384], "naive_sdpa": [2048, 4096]})
    rows = []
    for method, Ns in sizes.items():
        for N in Ns:
            r = in_fresh_process(child_memory, method, N)
            rows.append({"method": method, "N": N, "peak_extra_MiB": r["peak_extra_bytes"] / 2**20,
                         "output_MiB": r["out_bytes"] / 2**20, "one_score_matrix_MiB": 8 * N * N * 4 / 2**20})
    return {"B": 1, "H": 8, "D": 64, "threads": THREADS, "rows": rows}


def check_memory(r: dict) -> None:
    flash = max((x for x in r["rows"] if x["method"] == "flash"), key=lambda x: x["N"])
    naive = max((x for x in r["rows"] if x["method"] == "naive_sdpa"), key=lambda x: x["N"])
    assert flash["peak_extra_MiB"] < 0.02 * flash["one_score_matrix_MiB"], "flash needs O(N d), not O(N^2)"
    assert naive["peak_extra_MiB"] > 1.5 * naive["one_score_matrix_MiB"], "naive stores several N x N tensors"


# --------------------------------------------------------------------------------------------- block-sparse, varlen

def run_block_sparse(quick: bool, bs: int = 128, density: float = 0.25) -> dict:
    N, reps, H = (512, 2, 8) if quick else (4096, 5, 8)
    q, k, v = inputs(1, H, N, 64)
    nb = N // bs
    g = torch.Generator().manual_seed(1)
    per_row = max(1, round(density * nb))
    mask = torch.zeros(H, nb, nb, dtype=torch.bool)
    for h in range(H):
        for i in range(nb):
            mask[h, i, torch.randperm(nb, generator=g)[:per_row]] = True
    full = torch.ones(H, nb, nb, dtype=torch.bool)
    fns = {"dense_flash": lambda: flash_attention(q, k, v),
           "block_sparse_all_blocks": lambda: block_sparse_attention(q, k, v, full, block_size=bs),
           "block_sparse_25pct": lambda: block_sparse_attention(q, k, v, mask, block_size=bs)}
    with torch.no_grad():
        with num_threads(THREADS):
            t, c = bench(fns, reps)
        with num_threads(1):
            t1, _ = bench(fns, reps)
    return {"N": N, "block_size": bs, "density": mask.float().mean().item(), "threads": [THREADS, 1],
            "times_s": t, "cpu_times_s": c, "one_thread_times_s": t1,
            "speedup_vs_dense_flash": t["dense_flash"] / t["block_sparse_25pct"],
            "speedup_vs_all_blocks": t["block_sparse_all_blocks"] / t["block_sparse_25pct"],
            "cpu_speedup_vs_dense_flash": c["dense_flash"] / c["block_sparse_25pct"],
            "one_thread_speedup_vs_dense_flash": t1["dense_flash"] / t1["block_sparse_25pct"]}


def check_block_sparse(r: dict) -> None:
    assert r["one_thread_speedup_vs_dense_flash"] >= 2.5, "25% density: at least 2.5x faster than dense (1 thread)"


def run_varlen(quick: bool) -> dict:
    n_seqs, L_max, reps = (4, 256, 2) if quick else (16, 1024, 5)
    lengths = np.linspace(L_max // 16, L_max - L_max // 16, n_seqs).round().astype(int)  # mean L_max/2
    q, k, v = inputs(n_seqs, 8, L_max, 64)
    packed = [torch.cat([x[i, :, :L].transpose(0, 1) for i, L in enumerate(lengths)]) for x in (q, k, v)]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int64)
    real = torch.zeros(n_seqs, L_max, dtype=torch.bool)
    for i, L in enumerate(lengths):
        real[i, :L] = True
    # causal: real tokens never see the padding behind them, so padded outputs are exact on real tokens
    fns = {"padded_flash": lambda: flash_attention(q, k, v, causal=True),
           "padded_torch_sdpa": lambda: sdpa(q, k, v, True),
           "varlen": lambda: varlen_attention(*packed, cu, causal=True)}
    with torch.no_grad():
        torch.testing.assert_close(fns["varlen"](), fns["padded_torch_sdpa"]().transpose(1, 2)[real], rtol=0, atol=1e-5)
        with num_threads(THREADS):
            t, c = bench(fns, reps)
        with num_threads(1):
            t1, _ = bench(fns, reps)
    return {"n_seqs": n_seqs, "L_max": L_max, "padding_fraction": float(1 - lengths.sum() / (n_seqs * L_max)),
            "threads": [THREADS, 1], "times_s": t, "cpu_times_s": c, "one_thread_times_s": t1,
            "speedup_vs_padded_flash": t["padded_flash"] / t["varlen"],
            "speedup_vs_padded_torch_sdpa": t["padded_torch_sdpa"] / t["varlen"],
            "cpu_speedup_vs_padded_flash": c["padded_flash"] / c["varlen"],
            "one_thread_speedup_vs_padded_flash": t1["padded_flash"] / t1["varlen"]}


def check_varlen(r: dict) -> None:
    assert r["one_thread_speedup_vs_padded_flash"] >= 1.6, "half padding: at least 1.6x faster packed (1 thread)"


# --------------------------------------------------------------------------------------------- io

def run_io(quick: bool) -> dict:
    N, d, Ms = (256, 16, [1024, 2048, 4096]) if quick else (1024, 64, [16384, 32768, 65536, 131072])
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((N, d)).astype(np.float32) for _ in range(3))
    rows = []
    for M in Ms:
        bq, bk = sram_block_sizes(M, d)
        _, _, io = flash_attention_numpy(q, k, v, block_q=bq, block_k=bk)
        counted = io["hbm_reads"] + io["hbm_writes"]
        pred = predicted_hbm_accesses(N, d, M)
        rows.append({"M": M, "block_q": bq, "block_k": bk, "sram_peak": io["sram_peak"], "counted": counted,
                     "predicted_flash": pred["flash"], "counted_over_predicted": counted / pred["flash"]})
    return {"N": N, "d": d, "flash": rows, "standard_counted": 4 * N * d + 4 * N * N,  # tests check this closed form
            "standard_predicted": predicted_hbm_accesses(N, d, 1)["standard"]}


def check_io(r: dict) -> None:
    assert all(x["sram_peak"] <= x["M"] for x in r["flash"]), "the tiles fit the SRAM"
    assert all(6 <= x["counted_over_predicted"] <= 13 for x in r["flash"]), "within a constant of N^2 d^2 / M"


EXPERIMENTS = {
    "tiles": (run_tiles, check_tiles),
    "forward": (run_forward, check_forward),
    "forward_backward": (run_forward_backward, check_forward_backward),
    "ladder": (run_ladder, check_ladder),
    "memory": (run_memory, check_memory),
    "block_sparse": (run_block_sparse, check_block_sparse),
    "varlen": (run_varlen, check_varlen),
    "io": (run_io, check_io),
}


def report(name: str, r: dict) -> str:
    if name == "tiles":
        lines = [f"tiles: time / torch SDPA, B=1 H=8 (default within {r['default_within']}x of the best claimed)"]
        for x in r["rows"]:
            lines.append(f"  threads {x['threads']} N={x['N']:5d} D={x['D']:3d} {'causal' if x['causal'] else 'full  '} "
                         f"default {x['default']:8s} {x['over_torch_sdpa']['default tiles']:5.2f}x  best "
                         f"{x['best']:8s} {x['over_torch_sdpa'][x['best']]:5.2f}x  default/best "
                         f"{x['default_over_best']:.2f}  same tiles twice {x['repeat_spread'] or math.nan:.2f}  "
                         f"64x64/default {x['old_default_over_default']:.2f}")
        return "\n".join(lines)
    if name == "forward":
        return (f"forward, causal, B=1 H=8 D=64 N={r['N']}, {r['threads']} threads: flash (default {r['tiles']}) / SDPA "
                f"{r['flash_over_torch_sdpa']:.2f}x, old 64x64 default / SDPA {r['old_default_over_torch_sdpa']:.2f}x, "
                f"naive / flash {r['naive_over_flash']:.2f}x; CPU time flash / SDPA {r['cpu_flash_over_torch_sdpa']:.2f}x")
    if name == "forward_backward":
        return (f"forward+backward N={r['N']}: flash / SDPA {r['flash_over_torch_sdpa']:.2f}x "
                f"(CPU time {r['cpu_flash_over_torch_sdpa']:.2f}x)")
    if name == "ladder":
        return "ladder (time / SDPA, step):\n" + "\n".join(
            f"  {x['rung'][:70]:70s} {x['over_torch_sdpa']:6.2f} {x['speedup_vs_previous']:5.2f}x" for x in r["rungs"])
    if name == "memory":
        return "peak extra memory (MiB):\n" + "\n".join(
            f"  {x['method']:11s} N={x['N']:6d} {x['peak_extra_MiB']:9.1f} (one score tensor {x['one_score_matrix_MiB']:.0f})"
            for x in r["rows"])
    if name == "block_sparse":
        return (f"block-sparse density {r['density']:.2f}: {r['speedup_vs_dense_flash']:.2f}x vs dense flash "
                f"({THREADS} threads), {r['one_thread_speedup_vs_dense_flash']:.2f}x (1 thread)")
    if name == "varlen":
        return (f"varlen {r['n_seqs']} seqs, padding {r['padding_fraction']:.2f}: {r['speedup_vs_padded_flash']:.2f}x vs "
                f"padded flash ({THREADS} threads), {r['one_thread_speedup_vs_padded_flash']:.2f}x (1 thread)")
    return "io: counted / (N^2 d^2 / M) = " + ", ".join(f"{x['counted_over_predicted']:.2f}" for x in r["flash"])


def main(argv=None) -> dict:
    return run_experiments(EXPERIMENTS, name="flash", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
