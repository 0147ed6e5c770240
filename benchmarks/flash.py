"""Benchmark minilib.flash on this CPU (2 threads), everything measured side by side in one run.

    python benchmarks/flash.py            # full run (N=4096, memory at N=16384), writes benchmarks/results/flash.json
    python benchmarks/flash.py --quick    # smoke run at small sizes, writes nothing unless --out is given

Sections: forward and forward+backward against torch SDPA and the naive materialising
attention, the optimisation ladder, peak extra memory, block-sparse and varlen speed-ups,
and counted vs predicted HBM traffic of the NumPy walkthrough.  Times are the minimum over
interleaved repetitions (the machine is shared, the minimum is the least disturbed run).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minilib.attention import sdpa as naive_sdpa  # noqa: E402  (materialises the (B,H,T,S) scores)
from minilib.flash import (block_sparse_attention, flash_attention,  # noqa: E402
                           flash_attention_numpy, predicted_hbm_accesses, sram_block_sizes, varlen_attention)
from minilib.flash.kernel import _forward, _to_rows  # noqa: E402

THREADS = 2
TILE_Q, TILE_K = 128, 512  # the tuned tiles used for every "flash" row below


def bench(fns: dict, reps: int) -> tuple[dict, dict]:
    """Minimum wall time and minimum process CPU time (s) of each callable over `reps` interleaved rounds.

    CPU time is the contention-robust number on a shared machine (it only counts while this
    process runs); it overstates many-small-op code a little, since idle OpenMP threads spin.
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


def single_threaded(fns: dict, reps: int) -> dict:
    """Wall times with one thread: the algorithmic ratio, free of thread scheduling on a busy machine."""
    torch.set_num_threads(1)
    try:
        return bench(fns, reps)[0]
    finally:
        torch.set_num_threads(THREADS)


def inputs(B, H, N, D, *, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, N, D, generator=g).requires_grad_(grad) for _ in range(3))


def forward_section(N, reps):
    q, k, v = inputs(1, 8, N, 64)
    with torch.no_grad():
        torch.testing.assert_close(flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=0, atol=1e-5)
        t, c = bench({
            "torch_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            "flash": lambda: flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K),
            "naive_sdpa": lambda: naive_sdpa(q, k, v, causal=True),
        }, reps)
    return {"N": N, "times_s": t, "cpu_times_s": c,
            "flash_over_torch_sdpa": t["flash"] / t["torch_sdpa"], "naive_over_flash": t["naive_sdpa"] / t["flash"],
            "cpu_flash_over_torch_sdpa": c["flash"] / c["torch_sdpa"], "cpu_naive_over_flash": c["naive_sdpa"] / c["flash"]}


def backward_section(N, reps):
    q, k, v = inputs(1, 8, N, 64, grad=True)
    g = torch.randn(1, 8, N, 64)

    def run(attn):
        def f():
            out = attn()
            torch.autograd.grad(out, (q, k, v), g)
        return f

    t, c = bench({
        "torch_sdpa": run(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "flash": run(lambda: flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K)),
    }, reps)
    return {"N": N, "times_s": t, "cpu_times_s": c, "flash_over_torch_sdpa": t["flash"] / t["torch_sdpa"],
            "cpu_flash_over_torch_sdpa": c["flash"] / c["torch_sdpa"]}


def ladder_section(N, reps):
    """Each rung changes one thing; all rungs compute the same output (checked). SDPA runs on 2 threads."""
    q, k, v = inputs(1, 8, N, 64)
    scale, H = 64 ** -0.5, 8
    q_pos = k_pos = list(range(N))
    qr, kr, vr = _to_rows(q, H), k.reshape(H, N, 64), v.reshape(H, N, 64)

    def per_head(bq, bk, **flags):
        return lambda: [_forward(qr[h:h + 1], kr[h:h + 1], vr[h:h + 1], scale, q_pos, k_pos, 1, bq, bk, **flags)
                        for h in range(H)]

    def batched(bq, bk, **flags):
        return lambda: _forward(qr, kr, vr, scale, q_pos, k_pos, 1, bq, bk, **flags)

    rungs = {
        "1 straightforward tiled loop (per head, 64x64, normalise every step, visit all tiles)":
            per_head(64, 64, fused=False, skip_masked=False),
        f"2 larger tiles ({TILE_Q}x{TILE_K})": per_head(TILE_Q, TILE_K, fused=False, skip_masked=False),
        "3 batched heads (one bmm for all heads)": batched(TILE_Q, TILE_K, fused=False, skip_masked=False),
        "4 fused rescaling (scale folded into q, in-place exp, normalise once)":
            batched(TILE_Q, TILE_K, fused=True, skip_masked=False),
        "5 skip fully masked tiles": batched(TILE_Q, TILE_K, fused=True, skip_masked=True),
        "6 heads split among single-threaded workers (= flash_attention)":
            lambda: flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K).reshape(H, N, 64),
    }
    names = list(rungs)
    with torch.no_grad():
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=True).reshape(H, N, 64)
        sdpa_t, sdpa_c = bench({"torch_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)}, reps)
        # rungs 1-5 run with single-threaded ops, the way each worker of rung 6 runs them: with two
        # intra-op threads every small tile op pays a thread synchronisation (ms on a busy machine)
        torch.set_num_threads(1)
        for name, f in rungs.items():
            out = f()
            out = torch.cat([o for o, _ in out]) if isinstance(out, list) else out
            out = out[0] if isinstance(out, tuple) else out
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-5, msg=name)
        first, last = names[0], names[-1]
        t, c = bench({first: rungs[first]}, 1)  # slow; one timed run after the warm-up
        t2, c2 = bench({name: rungs[name] for name in names[1:-1]}, reps)
        torch.set_num_threads(THREADS)
        t3, c3 = bench({last: rungs[last]}, reps)
        for d in (t2, t3, sdpa_t):
            t.update(d)
        for d in (c2, c3, sdpa_c):
            c.update(d)
    return [{"rung": n, "time_s": t[n], "over_torch_sdpa": t[n] / t["torch_sdpa"],
             "speedup_vs_previous": (t[names[i - 1]] / t[n]) if i else 1.0,
             "cpu_time_s": c[n], "cpu_over_torch_sdpa": c[n] / c["torch_sdpa"]} for i, n in enumerate(names)]


def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child_memory(method, N):
    """Run one forward in a fresh process; print the peak RSS growth over the inputs (bytes).

    Writing 5 to /proc/self/clear_refs resets the kernel's high-water mark (VmHWM) to the current
    RSS, so VmHWM afterwards minus VmRSS before is the forward's peak extra resident memory.
    """
    torch.set_num_threads(THREADS)
    q, k, v = inputs(1, 8, N, 64)
    with torch.no_grad():
        F.scaled_dot_product_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])  # load kernels first
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
        if method == "flash":
            out = flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K)
        elif method == "naive_sdpa":
            out = naive_sdpa(q, k, v, causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        after = _rss_kib("VmHWM")
    print(json.dumps({"peak_extra_bytes": (after - before) * 1024, "out_bytes": out.numel() * 4}))


def memory_section(sizes):
    rows = []
    for method, Ns in sizes.items():
        for N in Ns:
            res = subprocess.run([sys.executable, __file__, "--child-memory", method, str(N)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"method": method, "N": N, "peak_extra_MiB": r["peak_extra_bytes"] / 2**20,
                         "output_MiB": r["out_bytes"] / 2**20,
                         "one_score_matrix_MiB": 8 * N * N * 4 / 2**20})
    return rows


def block_sparse_section(N, reps, bs=128, density=0.25):
    H = 8
    q, k, v = inputs(1, H, N, 64)
    nb = N // bs
    g = torch.Generator().manual_seed(1)
    per_row = max(1, round(density * nb))
    mask = torch.zeros(H, nb, nb, dtype=torch.bool)
    for h in range(H):
        for i in range(nb):
            mask[h, i, torch.randperm(nb, generator=g)[:per_row]] = True
    full = torch.ones(H, nb, nb, dtype=torch.bool)
    with torch.no_grad():
        fns = {
            "dense_flash": lambda: flash_attention(q, k, v, block_q=bs, block_k=TILE_K),
            "block_sparse_all_blocks": lambda: block_sparse_attention(q, k, v, full, block_size=bs),
            "block_sparse_25pct": lambda: block_sparse_attention(q, k, v, mask, block_size=bs),
        }
        t, c = bench(fns, reps)
        t1 = single_threaded(fns, reps)
    return {"N": N, "block_size": bs, "density": mask.float().mean().item(), "times_s": t, "cpu_times_s": c,
            "one_thread_times_s": t1,
            "speedup_vs_dense_flash": t["dense_flash"] / t["block_sparse_25pct"],
            "speedup_vs_all_blocks": t["block_sparse_all_blocks"] / t["block_sparse_25pct"],
            "cpu_speedup_vs_dense_flash": c["dense_flash"] / c["block_sparse_25pct"],
            "one_thread_speedup_vs_dense_flash": t1["dense_flash"] / t1["block_sparse_25pct"]}


def varlen_section(n_seqs, L_max, reps):
    H, D = 8, 64
    lengths = np.linspace(L_max // 16, L_max - L_max // 16, n_seqs).round().astype(int)  # mean L_max/2
    q, k, v = inputs(n_seqs, H, L_max, D)
    packed = [torch.cat([x[i, :, :L].transpose(0, 1) for i, L in enumerate(lengths)]) for x in (q, k, v)]
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int64)
    real = torch.zeros(n_seqs, L_max, dtype=torch.bool)
    for i, L in enumerate(lengths):
        real[i, :L] = True
    # causal: real tokens never see the padding behind them, so padded outputs are exact on real tokens
    with torch.no_grad():
        out_var = varlen_attention(*packed, cu, causal=True)
        out_pad = flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K)
        out_sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        on_real = out_pad.transpose(1, 2)[real]
        torch.testing.assert_close(out_var, on_real, rtol=0, atol=1e-5)
        torch.testing.assert_close(out_var, out_sdpa.transpose(1, 2)[real], rtol=0, atol=1e-5)
        fns = {
            "padded_flash": lambda: flash_attention(q, k, v, causal=True, block_q=TILE_Q, block_k=TILE_K),
            "padded_torch_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
            "varlen": lambda: varlen_attention(*packed, cu, causal=True),
        }
        t, c = bench(fns, reps)
        t1 = single_threaded(fns, reps)
    return {"n_seqs": n_seqs, "L_max": L_max, "padding_fraction": float(1 - lengths.sum() / (n_seqs * L_max)),
            "times_s": t, "cpu_times_s": c, "speedup_vs_padded_flash": t["padded_flash"] / t["varlen"],
            "speedup_vs_padded_torch_sdpa": t["padded_torch_sdpa"] / t["varlen"],
            "cpu_speedup_vs_padded_flash": c["padded_flash"] / c["varlen"], "one_thread_times_s": t1,
            "one_thread_speedup_vs_padded_flash": t1["padded_flash"] / t1["varlen"]}


def io_section(N, d, Ms):
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
    standard = 4 * N * d + 4 * N * N  # standard_attention_numpy's count (tests check the formula)
    return {"N": N, "d": d, "flash": rows, "standard_counted": standard,
            "standard_predicted": predicted_hbm_accesses(N, d, 1)["standard"]}


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    lad = results["ladder"]
    a.barh([r["rung"][:34] for r in lad][::-1], [r["over_torch_sdpa"] for r in lad][::-1], color="tab:blue")
    a.axvline(1.0, color="k", lw=0.8)
    a.axvline(1.5, color="tab:red", ls="--", lw=0.8, label="target 1.5x")
    a.set_xlabel("time / torch SDPA (causal fwd, N=%d)" % results["forward"]["N"])
    a.set_title("optimisation ladder (rungs 1-5: 1 thread; 6, SDPA: 2)", fontsize=10)
    a.legend(fontsize=8)
    io = results["io"]
    b.loglog([r["M"] for r in io["flash"]], [r["counted"] for r in io["flash"]], "o-", label="counted (flash)")
    b.loglog([r["M"] for r in io["flash"]], [r["predicted_flash"] for r in io["flash"]], "s--", label="N²d²/M")
    b.axhline(io["standard_counted"], color="tab:red", label="counted (standard)")
    b.set_xlabel("SRAM size M (elements)")
    b.set_ylabel("HBM accesses (elements)")
    b.set_title(f"NumPy walkthrough, N={io['N']}, d={io['d']}")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/flash.json unless --quick)")
    ap.add_argument("--child-memory", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        return _child_memory(args.child_memory[0], int(args.child_memory[1]))
    torch.set_num_threads(THREADS)
    quick = args.quick
    N, reps = (512, 2) if quick else (4096, 5)
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": THREADS,
                           "torch": torch.__version__, "quick": quick},
               "command": "python benchmarks/flash.py" + (" --quick" if quick else ""),
               "tiles": [TILE_Q, TILE_K]}
    say = lambda name: print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)  # noqa: E731
    say("forward")
    results["forward"] = forward_section(N, reps)
    say("forward+backward")
    results["forward_backward"] = backward_section(N, max(2, reps - 2))
    say("ladder")
    results["ladder"] = ladder_section(N, max(1, reps - 2))
    mem_sizes = ({"flash": [1024, 4096], "torch_sdpa": [4096], "naive_sdpa": [512, 1024]} if quick else
                 {"flash": [4096, 16384], "torch_sdpa": [16384], "naive_sdpa": [2048, 4096]})
    say("memory")
    results["memory"] = memory_section(mem_sizes)
    say("block-sparse, varlen, io")
    results["block_sparse"] = block_sparse_section(N, reps)
    results["varlen"] = varlen_section(4 if quick else 16, 256 if quick else 1024, reps)
    results["io"] = io_section(256 if quick else 1024, 16 if quick else 64,
                               [1024, 2048, 4096] if quick else [16384, 32768, 65536, 131072])
    report(results)
    out = args.out or (None if quick else ROOT / "benchmarks" / "results" / "flash.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        plot(results, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")


def report(r):
    f, fb = r["forward"], r["forward_backward"]
    print(f"\nforward, causal, B=1 H=8 D=64 N={f['N']} (s): " +
          ", ".join(f"{k} {v:.3f}" for k, v in f["times_s"].items()))
    print(f"  flash / torch SDPA = {f['flash_over_torch_sdpa']:.2f}x (target <= 1.5)   "
          f"naive / flash = {f['naive_over_flash']:.2f}x (target >= 4)")
    print(f"  CPU time: flash / torch SDPA = {f['cpu_flash_over_torch_sdpa']:.2f}x, "
          f"naive / flash = {f['cpu_naive_over_flash']:.2f}x")
    print(f"forward+backward (s): " + ", ".join(f"{k} {v:.3f}" for k, v in fb["times_s"].items()) +
          f"  -> flash / torch SDPA = {fb['flash_over_torch_sdpa']:.2f}x (target <= 2.5); "
          f"CPU time {fb['cpu_flash_over_torch_sdpa']:.2f}x")
    print("\noptimisation ladder                                                  time s  /SDPA   step  CPU/SDPA")
    for row in r["ladder"]:
        print(f"  {row['rung'][:66]:66s} {row['time_s']:7.3f} {row['over_torch_sdpa']:6.2f} "
              f"{row['speedup_vs_previous']:5.2f}x {row['cpu_over_torch_sdpa']:6.2f}")
    print("\npeak extra memory of one forward (MiB, RSS growth in a fresh process)")
    for row in r["memory"]:
        print(f"  {row['method']:11s} N={row['N']:6d}  {row['peak_extra_MiB']:9.1f}   "
              f"(output {row['output_MiB']:.0f}, one (H,N,N) score matrix {row['one_score_matrix_MiB']:.0f})")
    bs, vl = r["block_sparse"], r["varlen"]
    print(f"\nblock-sparse, density {bs['density']:.2f}, block {bs['block_size']}: "
          + ", ".join(f"{k} {v:.3f}s" for k, v in bs["times_s"].items())
          + f"  -> {bs['speedup_vs_dense_flash']:.2f}x vs dense flash (target >= 2.5), "
            f"{bs['speedup_vs_all_blocks']:.2f}x vs all blocks; CPU time {bs['cpu_speedup_vs_dense_flash']:.2f}x; "
            f"one thread {bs['one_thread_speedup_vs_dense_flash']:.2f}x")
    print(f"varlen, {vl['n_seqs']} seqs, L_max {vl['L_max']}, padding {vl['padding_fraction']:.2f}: "
          + ", ".join(f"{k} {v:.3f}s" for k, v in vl["times_s"].items())
          + f"  -> {vl['speedup_vs_padded_flash']:.2f}x vs padded flash (target >= 1.6), "
            f"{vl['speedup_vs_padded_torch_sdpa']:.2f}x vs padded torch SDPA; "
            f"CPU time {vl['cpu_speedup_vs_padded_flash']:.2f}x vs padded flash; "
            f"one thread {vl['one_thread_speedup_vs_padded_flash']:.2f}x")
    io = r["io"]
    print(f"\nHBM accesses, NumPy walkthrough N={io['N']} d={io['d']} (standard: {io['standard_counted']:.3g})")
    for row in io["flash"]:
        print(f"  M={row['M']:7d} blocks {row['block_q']}x{row['block_k']} sram_peak {row['sram_peak']:7d} "
              f"counted {row['counted']:.3g}  counted / (N²d²/M) = {row['counted_over_predicted']:.2f}")


if __name__ == "__main__":
    main()
