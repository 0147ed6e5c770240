"""Benchmark the three forms of minilib.linear_attention against each other and torch's causal SDPA.

    python benchmarks/linear_attention.py                  # every experiment, claims checked, writes results
    python benchmarks/linear_attention.py --only crossover # one experiment; the file keeps the others
    python benchmarks/linear_attention.py --quick          # tiny sizes, a few seconds; nothing checked or saved

Experiments (chapter 04 reads them all; one thread, B=1, H=8, D=Dv=64, fp32, forward only):

* ``forms``: at L=4096 the chunked form (default chunk 64) against the recurrent, the parallel (L x L) form and
  torch's causal scaled_dot_product_attention (softmax attention's cost, for comparison), timed side by side;
  the multiply-adds each form performs, counted from the shapes;
* ``crossover``: the same forms over L = 256 ... 16384 (the parallel form up to 4096, where its L x L tensors
  already take 1.5 GiB) and the length from which the chunked form is the fastest;
* ``memory``: peak extra resident memory of one forward of the parallel and the chunked form, each in a fresh
  process: the parallel form grows as L^2, the chunked as L;
* ``chunks``: chunk size 16 ... 512 at L = 1024, 4096, 16384, with the counted intra-chunk (quadratic) and
  inter-chunk (state) multiply-adds, which explain the optimum;
* ``lightning2``: forward + backward of the chunked form with the Lightning Attention-2 backward
  (``custom_backward=True``) against autograd through the same forward, time per token over L = 1024 ... 8192 and
  peak memory (fresh processes);
* ``digits``: a small ViT on the 8x8 digits with 2x2 patches (16 tokens), its attention replaced by
  each non-causal kernel of the chapter (Linformer k=8, elu+1, EcoFormer-style 16-bit hashing, Flowformer, SLAB),
  three seeds each, test accuracy against softmax attention. (The relative-position FFT kernel is left out: its
  backward through FFTs of a (B, H, L, D, Dv) tensor cost ten times the others' training time on this CPU.)

Times are the minimum over interleaved rounds of each call's process CPU time (``bench`` of benchmarks/flash.py), the
contention-robust number on a shared machine where other jobs time-slice the core (wall times are saved beside them).
Noise only ever adds time, so the minimum is the estimate.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import run_experiments  # noqa: E402
from benchmarks.flash import _rss_kib, bench, in_fresh_process  # noqa: E402  (chapter 03's timer and memory probe)
from minilib.data import digits_split, labelled_batches  # noqa: E402
from minilib.linear_attention import (feature_map, flow_attention,  # noqa: E402
                                      linear_attention_chunked, linear_attention_noncausal, linear_attention_parallel,
                                      linear_attention_recurrent, linformer_attention, simplified_linear_attention)
from minilib.vision import VisionTransformer  # noqa: E402

B, H, D = 1, 8, 64
HEADLINE_L = 4096
PARALLEL_MAX_L = 4096


def inputs(L: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=g) / D ** 0.5 for _ in range(3))
    return q, k, v


def forms(q, k, v, *, chunk_size: int = 64):
    """The callables timed: the three forms and torch's causal SDPA on the same tensors."""
    return {
        "chunked": lambda: linear_attention_chunked(q, k, v, chunk_size=chunk_size),
        "recurrent": lambda: linear_attention_recurrent(q, k, v),
        "parallel": lambda: linear_attention_parallel(q, k, v),
        "torch_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }


def multiply_adds(form: str, L: int, C: int = 64) -> int:
    """Multiply-adds of one forward per (batch, head), from the shapes (D = Dv)."""
    if form == "parallel":
        return 2 * L * L * D  # Q K^T and (.) V over the full L x L matrix
    if form == "recurrent":
        return 2 * L * D * D  # k v^T added to the state, q S read out, every step
    if form == "torch_sdpa":
        return L * L * D  # causal: about half of the two L x L products
    if form == "chunked":
        return chunk_intra(L, C) + chunk_inter(L, C)
    raise ValueError(f"form must be chunked, recurrent, parallel or torch_sdpa, got {form!r}")


def chunk_intra(L: int, C: int) -> int:
    """The quadratic part: Q K^T and (.) V inside each of the L/C chunks of C positions."""
    return 2 * (-(-L // C)) * C * C * D


def chunk_inter(L: int, C: int) -> int:
    """The state part: K^T V per chunk and Q S from the incoming state, plus one state update per chunk."""
    return 2 * (-(-L // C)) * C * D * D + (-(-L // C)) * D * D


def time_forms(L: int, names, reps: int, chunk_size: int = 64) -> tuple[dict, dict]:
    """(CPU seconds, wall seconds) per call of each named form at length ``L``, interleaved rounds."""
    q, k, v = inputs(L)
    fns = forms(q, k, v, chunk_size=chunk_size)
    with torch.no_grad():
        wall, cpu = bench({name: fns[name] for name in names}, reps)
    return cpu, wall


# ------------------------------------------------------------------------------------------------ forms

def run_forms(quick: bool) -> dict:
    L = 256 if quick else HEADLINE_L
    t, wall = time_forms(L, ["chunked", "recurrent", "parallel", "torch_sdpa"], reps=2 if quick else 7)
    return {"B": B, "H": H, "D": D, "L": L, "chunk_size": 64, "seconds_per_call": t, "wall_seconds_per_call": wall,
            "chunked_speedup": {name: t[name] / t["chunked"] for name in t if name != "chunked"},
            "multiply_adds_per_head": {name: multiply_adds(name, L) for name in t}}


def check_forms(r: dict) -> None:
    s = r["chunked_speedup"]
    assert s["parallel"] >= 3, f"chunked should be >= 3x the parallel form, got {s['parallel']:.1f}x"
    assert s["torch_sdpa"] >= 4, f"chunked should be >= 4x torch causal SDPA, got {s['torch_sdpa']:.1f}x"
    assert s["recurrent"] >= 3, f"chunked should be >= 3x the recurrent form, got {s['recurrent']:.1f}x"


# ------------------------------------------------------------------------------------------------ crossover

def run_crossover(quick: bool) -> dict:
    Ls = [64, 128, 256] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    rows = []
    for L in Ls:
        names = ["chunked", "recurrent", "torch_sdpa"] + (["parallel"] if L <= PARALLEL_MAX_L else [])
        t, wall = time_forms(L, names, reps=2 if quick else (5 if L <= 4096 else 3))
        rows.append({"L": L, "seconds": t, "wall_seconds": wall, "us_per_token": {n: 1e6 * s / L for n, s in t.items()}})
    fastest = [r["L"] for r in rows if min(r["seconds"], key=r["seconds"].get) == "chunked"]
    # the crossover: the shortest length from which the chunked form is fastest at every longer length measured
    crossover = next((L for L in fastest if all(x in fastest for x in [r["L"] for r in rows if r["L"] >= L])), None)
    return {"B": B, "H": H, "D": D, "chunk_size": 64, "rows": rows, "crossover_L": crossover}


def check_crossover(r: dict) -> None:
    assert r["crossover_L"] is not None and r["crossover_L"] <= 1024, f"chunked fastest from L={r['crossover_L']}"
    per_token = [row["us_per_token"]["chunked"] for row in r["rows"] if 512 <= row["L"] <= 8192]
    assert max(per_token) <= 1.5 * min(per_token), f"chunked time per token varies {max(per_token) / min(per_token):.2f}x"
    sdpa = {row["L"]: row["us_per_token"]["torch_sdpa"] for row in r["rows"]}
    assert sdpa[16384] > 8 * sdpa[1024], "softmax attention's time per token grows with L"


# ------------------------------------------------------------------------------------------------ memory

def child_memory(form: str, L: int) -> dict:
    """One forward of ``form`` in this (fresh) process: its peak resident-memory growth (see benchmarks/flash.py)."""
    torch.set_num_threads(1)
    q, k, v = inputs(L)
    fns = forms(q, k, v)
    with torch.no_grad():
        forms(q[:, :, :64], k[:, :, :64], v[:, :, :64])[form]()  # load the kernels first
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kib("VmRSS")
        fns[form]()
        after = _rss_kib("VmHWM")
    return {"peak_extra_bytes": (after - before) * 1024}


def run_memory(quick: bool) -> dict:
    sizes = ({"parallel": [256], "chunked": [256]} if quick else
             {"parallel": [1024, 2048, 4096], "chunked": [1024, 4096, 16384]})
    rows = []
    for form, Ls in sizes.items():
        for L in Ls:
            r = in_fresh_process(child_memory, form, L)
            rows.append({"form": form, "L": L, "peak_extra_MiB": r["peak_extra_bytes"] / 2**20,
                         "one_LxL_MiB": B * H * L * L * 4 / 2**20, "inputs_MiB": 3 * B * H * L * D * 4 / 2**20})
    return {"B": B, "H": H, "D": D, "rows": rows}


def growth(rows, form):
    """Peak memory growth per doubling of L: (M(L_max)/M(L_min)) ** (1 / log2(L_max/L_min))."""
    xs = sorted((x for x in rows if x["form"] == form), key=lambda x: x["L"])
    doublings = (xs[-1]["L"] // xs[0]["L"]).bit_length() - 1
    return (xs[-1]["peak_extra_MiB"] / xs[0]["peak_extra_MiB"]) ** (1 / doublings)


def check_memory(r: dict) -> None:
    assert growth(r["rows"], "parallel") > 3.5, "the parallel form's memory grows as L^2 (x4 per doubling)"
    assert growth(r["rows"], "chunked") < 2.5, "the chunked form's memory grows as L (x2 per doubling)"


# ------------------------------------------------------------------------------------------------ chunk sizes

CHUNKS = [16, 32, 64, 128, 256, 512]


def run_chunks(quick: bool) -> dict:
    Ls, chunks = ([256], [16, 64]) if quick else ([1024, 4096, 16384], CHUNKS)
    rows = []
    for L in Ls:
        q, k, v = inputs(L)
        fns = {C: (lambda C=C: linear_attention_chunked(q, k, v, chunk_size=C)) for C in chunks}
        with torch.no_grad():
            _, cpu = bench(fns, 2 if quick else 5)
        for C in chunks:
            rows.append({"L": L, "chunk_size": C, "seconds": cpu[C], "intra_multiply_adds": chunk_intra(L, C),
                         "inter_multiply_adds": chunk_inter(L, C), "n_chunks": -(-L // C)})
    best = {L: min((x for x in rows if x["L"] == L), key=lambda x: x["seconds"])["chunk_size"] for L in Ls}
    return {"B": B, "H": H, "D": D, "rows": rows, "best_chunk": best}


def check_chunks(r: dict) -> None:
    for L, C in r["best_chunk"].items():
        assert 32 <= C <= 128, f"L={L}: best chunk {C}, expected near D=64 where intra and inter work balance"
        times = {x["chunk_size"]: x["seconds"] for x in r["rows"] if x["L"] == int(L)}
        assert times[512] > 1.5 * times[C] and times[16] > 1.1 * times[C], f"L={L}: no clear optimum {times}"


# ------------------------------------------------------------------------------------------------ Lightning-2

def forward_backward(L: int, custom: bool):
    q, k, v = (x.requires_grad_() for x in inputs(L))
    grad = torch.ones(B, H, L, D)

    def step():
        out = linear_attention_chunked(q, k, v, custom_backward=custom)
        torch.autograd.grad(out, (q, k, v), grad)
    return step


def child_fwd_bwd_memory(custom: bool, L: int) -> dict:
    """Peak resident-memory growth of one forward + backward in this (fresh) process."""
    torch.set_num_threads(1)
    forward_backward(64, custom)()  # load the kernels first
    step = forward_backward(L, custom)
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kib("VmRSS")
    step()
    return {"peak_extra_bytes": (_rss_kib("VmHWM") - before) * 1024}


def run_lightning2(quick: bool) -> dict:
    Ls = [128, 256] if quick else [1024, 2048, 4096, 8192]
    rows = []
    for L in Ls:
        cpu, _ = bench({"custom_backward": forward_backward(L, True), "autograd": forward_backward(L, False)},
                       2 if quick else 3)
        rows.append({"L": L, "seconds": cpu, "us_per_token": {n: 1e6 * t / L for n, t in cpu.items()}})
    memory = []
    for L in ([128] if quick else [2048, 8192]):
        for custom in (True, False):
            r = in_fresh_process(child_fwd_bwd_memory, custom, L)
            memory.append({"L": L, "custom_backward": custom, "peak_extra_MiB": r["peak_extra_bytes"] / 2**20})
    return {"B": B, "H": H, "D": D, "chunk_size": 64, "rows": rows, "memory": memory}


def check_lightning2(r: dict) -> None:
    per_token = [row["us_per_token"]["custom_backward"] for row in r["rows"]]
    assert max(per_token) <= 1.5 * min(per_token), f"forward+backward per token varies {max(per_token) / min(per_token):.2f}x"
    mem = {x["L"]: x["peak_extra_MiB"] for x in r["memory"] if x["custom_backward"]}
    small, large = sorted(mem)
    assert mem[large] / mem[small] < 1.5 * large / small, "peak memory of the custom backward grows linearly with L"


# ------------------------------------------------------------------------------------------------ digits

DIGITS = dict(patch=2, d_model=32, n_layers=2, n_heads=2, d_ff=64, steps=600, batch=64, lr=3e-3, n_test=297,
              seeds=[0, 1, 2], linformer_k=8, hash_bits=16)
KERNELS = ["softmax", "linformer", "elu+1", "binary_hash", "flow", "slab"]


class KernelAttention(torch.nn.Module):
    """An encoder block's attention with the score/softmax step replaced by one of the chapter's kernels.

    Keeps the block's projections (``project_qkv``, ``combine``); adds only what a kernel needs: Linformer's
    ``E = F`` (shared by the layers, passed in) and SLAB's convolution.
    """

    def __init__(self, mha, kind: str, linformer_E=None):
        super().__init__()
        self.mha, self.kind, self.E = mha, kind, linformer_E
        head_dim = mha.wq.out_features // mha.n_heads
        if kind == "slab":
            self.conv = torch.nn.Parameter(torch.randn(mha.n_heads, head_dim, 3) * 0.1)
        if kind == "binary_hash":
            self.hash = feature_map("binary_hash", dim=head_dim, n_bits=DIGITS["hash_bits"], seed=0)

    def forward(self, x, causal=False):
        T = x.shape[1]
        q, k, v = self.mha.project_qkv(x, torch.arange(T))
        elu = feature_map("elu+1")
        if self.kind == "softmax":
            out = F.scaled_dot_product_attention(q, k, v)
        elif self.kind == "linformer":
            out = linformer_attention(q, k, v, self.E, self.E)
        elif self.kind == "elu+1":
            out = linear_attention_noncausal(elu(q), elu(k), v)
        elif self.kind == "binary_hash":
            out = linear_attention_noncausal(self.hash(q), self.hash(k), v)
        elif self.kind == "flow":
            out = flow_attention(q, k, v)
        else:
            out = simplified_linear_attention(q, k, v, self.conv)
        return self.mha.combine(x, out)


def train_digits(kind: str, seed: int, data, c: dict) -> dict:
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    model = VisionTransformer(8, c["patch"], c["d_model"], c["n_layers"], c["n_heads"], n_classes=10, d_ff=c["d_ff"])
    n_tokens = (8 // c["patch"]) ** 2
    E = torch.nn.Parameter(torch.randn(c["linformer_k"], n_tokens) / n_tokens ** 0.5) if kind == "linformer" else None
    for block in model.blocks:
        block.attn = KernelAttention(block.attn, kind, linformer_E=E)
    params = sum(p.numel() for p in model.parameters())  # E is shared: counted once
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    batches = labelled_batches(x_train, y_train, batch_size=c["batch"], generator=torch.Generator().manual_seed(1000 + seed))
    for _ in range(c["steps"]):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    return {"kind": kind, "seed": seed, "params": params, "test_accuracy": accuracy, "final_loss": loss.item()}


def run_digits(quick: bool) -> dict:
    c = dict(DIGITS, steps=5, seeds=[0]) if quick else DIGITS
    data = digits_split(n_test=c["n_test"], seed=0)
    runs = [train_digits(kind, seed, data, c) for kind in KERNELS for seed in c["seeds"]]
    summary = {}
    for kind in KERNELS:
        acc = [r["test_accuracy"] for r in runs if r["kind"] == kind]
        summary[kind] = {"mean": sum(acc) / len(acc), "min": min(acc), "max": max(acc),
                         "params": next(r["params"] for r in runs if r["kind"] == kind)}
    return {"config": c, "runs": runs, "summary": summary}


def check_digits(r: dict) -> None:
    s = r["summary"]
    assert all(len([x for x in r["runs"] if x["kind"] == k]) == 3 for k in KERNELS), "three seeds per kernel"
    assert all(abs(s[k]["params"] / s["softmax"]["params"] - 1) < 0.06 for k in KERNELS), "parameter counts within 6%"
    assert s["softmax"]["mean"] > 0.9, "the softmax ViT learns the digits"


def report(name: str, r: dict) -> str:
    if name == "forms":
        s = r["chunked_speedup"]
        return (f"forms L={r['L']}: chunked {1e3 * r['seconds_per_call']['chunked']:.1f} ms; "
                + ", ".join(f"{n} {x:.1f}x slower" for n, x in s.items()))
    if name == "crossover":
        return "crossover (us/token):\n" + "\n".join(
            f"  L={row['L']:6d} " + " ".join(f"{n}={t:8.2f}" for n, t in row["us_per_token"].items())
            for row in r["rows"]) + f"\n  chunked fastest from L={r['crossover_L']}"
    if name == "memory":
        return "peak extra memory (MiB):\n" + "\n".join(
            f"  {x['form']:9s} L={x['L']:6d} {x['peak_extra_MiB']:9.1f} (one L x L: {x['one_LxL_MiB']:.0f})" for x in r["rows"])
    if name == "chunks":
        return "chunk sweep (ms):\n" + "\n".join(
            f"  L={x['L']:6d} C={x['chunk_size']:4d} {1e3 * x['seconds']:8.2f}" for x in r["rows"]) + f"\n  best {r['best_chunk']}"
    if name == "lightning2":
        return "forward+backward (us/token):\n" + "\n".join(
            f"  L={row['L']:6d} " + " ".join(f"{n}={t:8.2f}" for n, t in row["us_per_token"].items()) for row in r["rows"]
        ) + "\n  peak MiB: " + ", ".join(f"L={x['L']} {'custom' if x['custom_backward'] else 'autograd'} {x['peak_extra_MiB']:.0f}"
                                       for x in r["memory"])
    if name == "digits":
        return "digits test accuracy (mean, min..max over seeds; params):\n" + "\n".join(
            f"  {k:12s} {v['mean']:.3f} ({v['min']:.3f}..{v['max']:.3f}) {v['params']}" for k, v in r["summary"].items())
    return str(r)


EXPERIMENTS = {"forms": (run_forms, check_forms), "crossover": (run_crossover, check_crossover),
               "memory": (run_memory, check_memory), "chunks": (run_chunks, check_chunks),
               "lightning2": (run_lightning2, check_lightning2), "digits": (run_digits, check_digits)}


def main(argv=None) -> dict:
    return run_experiments(EXPERIMENTS, name="linear_attention", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
