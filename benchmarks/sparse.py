"""Chapter 05, sparse attention: KV-cache policies on a small trained character LM, top-k attention mass, and the
cost of sparse patterns.

    python benchmarks/sparse.py                 # every experiment: writes benchmarks/results/sparse.json
                                                # (+ sparse_charlm.pt, the trained weights in float16)
    python benchmarks/sparse.py --only cost     # one of: charlm, cost (keeps the other's saved results)
    python benchmarks/sparse.py --quick         # tiny sizes, a smoke run; nothing saved

``charlm``: a 3-layer character LM (d_model 64, 4 heads, RoPE, 154k parameters) trained on windows of 128 characters
of ``tiny_corpus``, each opening a line whose newline is replaced by a beginning-of-sequence id (as in
``attention_scoring``, so that attention sinks can form :cite:`xiao2024efficient`). Half the training windows are
*repeats*: 64 characters then the same 64 again, so the model also learns to copy from far back (induction);
the generated text itself only has short-range structure. Three seeds (initialisation and batches). Each model is
then decoded one token at a time through every KV-cache policy of :mod:`minilib.sparse` at budgets 8-64 slots
(per layer and key/value head), and the loss is measured on held-out windows: ``plain`` text (positions 16-127)
and ``repeat`` windows (the copied second half, positions 64-127, where the answer lies 64 positions back).
The same model's attention maps (full attention, plain windows) give the share of each query's attention mass in
its top-k keys, per layer and head :cite:`nawrot2025sparse`.

``cost``: counted score entries and FLOPs of each pattern at L = 4096 (window 256, sinks 4 + window 252,
global-local with 64 globals and radius 128, block-local 256, BiFormer routing 16 of 256-token regions ... top 4),
and the measured forward time of :func:`minilib.flash.block_sparse_attention` for the causal window pattern vs the
dense causal mask at L = 2048 (best of 3, 1 thread).

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import artifact_path, downsample, run_experiments  # noqa: E402
from benchmarks.attention_scoring import line_starts, windows  # noqa: E402
from minilib.data import CharTokenizer, tiny_corpus, train_val_split  # noqa: E402
from minilib.experiments import best_time  # noqa: E402
from minilib.flash import block_sparse_attention  # noqa: E402
from minilib.models import TransformerConfig, TransformerLM, attention_maps, train  # noqa: E402
from minilib.sparse import (block_local_mask, global_local_mask, mask_flops, sink_window_mask, sliding_window_mask,  # noqa: E402
                            to_block_mask)

SEEDS = [0, 1, 2]
CONFIG = dict(n_chars=300_000, d_model=64, n_layers=3, n_heads=4, seq_len=128, batch=16, steps=600, lr=3e-3,
              warmup=50, weight_decay=0.1, eval_windows=32, plain_from=16, budgets=[8, 16, 32, 64], n_sinks=4,
              topk=[1, 2, 4, 8, 16, 32, 64], seeds=SEEDS)
QUICK = dict(CONFIG, n_chars=20_000, d_model=16, n_layers=2, n_heads=2, seq_len=32, batch=4, steps=5, warmup=1,
             eval_windows=4, plain_from=4, budgets=[4, 8], topk=[1, 4], seeds=[0])
POLICIES = ["window", "sinks", "heavy_hitter", "tova", "merge", "retrieval"]
trained: dict[str, torch.Tensor] = {}  # the seed-0 weights of the last charlm run, saved by main


def repeat_windows(ids: torch.Tensor, starts: torch.Tensor, seq_len: int, bos_id: int):
    """Windows whose second half repeats the first, ``c_0..c_{h-1} c_0..c_{h-1}`` with ``c_0`` (the newline) replaced
    by BOS at position 0 only; inputs and targets (the last target is ``c_0`` again)."""
    half = seq_len // 2
    line = ids[starts[:, None] + torch.arange(half)]
    w = torch.cat([line, line, line[:, :1]], dim=1)
    w[:, 0] = bos_id
    return w[:, :-1], w[:, 1:]


def batches(ids, starts, c, bos_id, generator):
    """Endless training batches: half plain windows, half repeats."""
    n = c["batch"] // 2
    while True:
        pick = starts[torch.randint(len(starts), (c["batch"],), generator=generator)]
        px, py = windows(ids, pick[:n], c["seq_len"], bos_id)
        rx, ry = repeat_windows(ids, pick[n:], c["seq_len"], bos_id)
        yield torch.cat([px, rx]), torch.cat([py, ry])


def data(c: dict):
    text, source = tiny_corpus(c["n_chars"], seed=0)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), 0.1)
    newline = int(tok.encode("\n")[0])
    val_starts = line_starts(val_ids, newline, c["seq_len"])
    val_starts = val_starts[:: max(1, len(val_starts) // c["eval_windows"])][: c["eval_windows"]]
    evals = {"plain": (*windows(val_ids, val_starts, c["seq_len"], tok.vocab_size), c["plain_from"]),
             "repeat": (*repeat_windows(val_ids, val_starts, c["seq_len"], tok.vocab_size), c["seq_len"] // 2)}
    return tok, source, train_ids, line_starts(train_ids, newline, c["seq_len"]), evals


def policy_model(model: TransformerLM, policy: str, budget: int | None, **kwargs) -> TransformerLM:
    """The same weights with every layer's decoding cache the given policy (the ``sliding_window`` mixer, no window)."""
    cfg = model.config
    twin = TransformerLM(TransformerConfig(cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, max_len=cfg.max_len,
                                           mixer="sliding_window",
                                           mixer_kwargs=dict(cache_policy=policy, cache_budget=budget, cache_kwargs=kwargs)))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@torch.no_grad()
def decoded_loss(model: TransformerLM, x: torch.Tensor, y: torch.Tensor, start: int) -> float:
    """Mean next-token loss on positions ``start..`` when the model decodes ``x`` one token at a time."""
    caches = model.new_caches()
    logits = torch.cat([model(x[:, t:t + 1], caches=caches) for t in range(x.shape[1])], dim=1)
    return torch.nn.functional.cross_entropy(logits[:, start:].flatten(0, 1), y[:, start:].flatten()).item()


def policy_losses(model: TransformerLM, evals: dict, c: dict) -> dict:
    """Loss per eval set for full attention, int8/int4 caches and every budgeted policy and budget."""
    runs = {"full": (("full", None), {}), "int8": (("quantized", None), dict(bits=8)),
            "int4": (("quantized", None), dict(bits=4))}
    for name in POLICIES:
        for budget in c["budgets"]:
            kwargs = dict(n_sinks=c["n_sinks"]) if name == "sinks" else {}
            runs[f"{name}@{budget}"] = ((name, budget), kwargs)
    out = {}
    for label, ((policy, budget), kwargs) in runs.items():
        twin = policy_model(model, policy, budget, **kwargs)
        out[label] = {name: round(decoded_loss(twin, x, y, start), 5) for name, (x, y, start) in evals.items()}
    return out


@torch.no_grad()
def topk_mass(model: TransformerLM, x: torch.Tensor, ks: list[int], skip: int) -> list:
    """Mean share of attention mass in each query's top-k keys, ``[layer][head][k]``, for queries ``skip..``."""
    maps = attention_maps(model, x)[:, :, :, skip:]  # (L, B, H, T', T)
    top = maps.sort(dim=-1, descending=True).values.cumsum(dim=-1)
    return [[[round(float(top[layer, :, h, :, k - 1].mean()), 4) for k in ks] for h in range(maps.shape[2])]
            for layer in range(maps.shape[0])]


def run_charlm(quick: bool) -> dict:
    c = QUICK if quick else CONFIG
    tok, source, train_ids, starts, evals = data(c)
    results = dict(config=c, entropy_floor=source.entropy_rate_per_char(), bos_id=tok.vocab_size, models=[])
    for seed in c["seeds"]:
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = TransformerLM(tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"])
        gen = torch.Generator().manual_seed(seed)
        losses = train(model, batches(train_ids, starts, c, tok.vocab_size, gen), steps=c["steps"], lr=c["lr"],
                       warmup_steps=c["warmup"], weight_decay=c["weight_decay"], progress=False)
        model.eval()
        trained_seconds = time.perf_counter() - start
        r = dict(seed=seed, curve=downsample(losses), params=sum(p.numel() for p in model.parameters()),
                 losses=policy_losses(model, evals, c),
                 topk_mass=topk_mass(model, evals["plain"][0], c["topk"], c["plain_from"]),
                 train_seconds=round(trained_seconds, 1), seconds=round(time.perf_counter() - start, 1))
        results["models"].append(r)
        print(f"  seed {seed}: full {r['losses']['full']}  [{r['seconds']} s]", flush=True)
        if seed == c["seeds"][0]:
            trained.update({k: v.half() for k, v in model.state_dict().items()})
    return results


def mean_loss(out: dict, label: str, eval_set: str) -> float:
    return float(np.mean([m["losses"][label][eval_set] for m in out["models"]]))


def check_charlm(out: dict) -> None:
    tight = out["config"]["budgets"][0]
    for m in out["models"]:  # int8 keys and values cost under 0.01 nats/char
        assert abs(m["losses"]["int8"]["plain"] - m["losses"]["full"]["plain"]) < 0.01
    # the copy lies half a window back: a window of the tightest budget cannot read it
    assert mean_loss(out, "full", "repeat") + 0.5 < mean_loss(out, f"window@{tight}", "repeat")


def pattern_costs(L: int, head_dim: int) -> dict:
    r = 16 if L <= 256 else 256
    patterns = {
        "dense (causal)": torch.ones(L, L, dtype=torch.bool).tril(),
        "window 256": sliding_window_mask(L, min(256, L)),
        "sinks 4 + window 252": sink_window_mask(L, min(252, L), n_sinks=4),
        "global 64 + radius 128": global_local_mask(L, radius=min(128, L), n_global=min(64, L), causal=True),
        "block-local 256": block_local_mask(L, min(256, L), causal=True),
    }
    out = {name: dict(entries=int(m.sum()), flops=mask_flops(m, head_dim)) for name, m in patterns.items()}
    n_regions = L // r
    out["routing top-4 of regions"] = dict(entries=min(4, n_regions) * r * L,
                                           flops=2 * min(4, n_regions) * r * L * 2 * head_dim + 2 * n_regions ** 2 * head_dim)
    return out


def run_cost(quick: bool) -> dict:
    L, Lt, D = (256, 256, 16) if quick else (4096, 2048, 64)
    costs = pattern_costs(L, D)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, Lt, D, generator=g) for _ in range(3))
    bs = 64
    window = to_block_mask(sliding_window_mask(Lt, 256 if not quick else 64), bs)
    dense = to_block_mask(torch.ones(Lt, Lt, dtype=torch.bool).tril(), bs)
    times = {name: best_time(lambda m=m: block_sparse_attention(q, k, v, m, block_size=bs, causal=True), repeat=3)
             for name, m in (("dense", dense), ("window", window))}
    return dict(L=L, head_dim=D, patterns=costs, timing=dict(L=Lt, block_size=bs, window=256 if not quick else 64,
                                                            seconds={k: round(v, 5) for k, v in times.items()},
                                                            tiles={"dense": int(dense.sum()), "window": int(window.sum())}))


def check_cost(out: dict) -> None:
    p = out["patterns"]
    dense = p["dense (causal)"]["entries"]
    assert p["window 256"]["entries"] < dense / 7  # 256 of ~2048 keys on average at L = 4096
    t = out["timing"]
    # tiles visited: 1 + (window / block) per query block against ~n/2 for the dense causal mask
    assert t["seconds"]["window"] < 0.5 * t["seconds"]["dense"]


def report(name: str, r: dict) -> str:
    if name == "cost":
        t = r["timing"]["seconds"]
        return f"window / dense time at L={r['timing']['L']}: {t['window'] / t['dense']:.2f}"
    tight = r["config"]["budgets"][0]
    return (f"plain loss: full {mean_loss(r, 'full', 'plain'):.4f}, window@{tight} {mean_loss(r, f'window@{tight}', 'plain'):.4f}, "
            f"sinks@{tight} {mean_loss(r, f'sinks@{tight}', 'plain'):.4f}")


EXPERIMENTS = {"charlm": (run_charlm, check_charlm), "cost": (run_cost, check_cost)}


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="sparse", description=__doc__, report=report, argv=argv)
    if trained:
        torch.save(trained, artifact_path("sparse_charlm.pt"))


if __name__ == "__main__":
    main()
