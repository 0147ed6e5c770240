"""Chapter 05, sparse attention: KV-cache policies on a small trained character LM, top-k attention mass, and the
cost of sparse patterns.

    python benchmarks/sparse.py                 # every experiment: writes benchmarks/results/sparse.json
                                                # (+ sparse_charlm.pt, the trained weights in float16)
    python benchmarks/sparse.py --only cost     # one of: charlm, cost, lra, suite, masformer, search, moa, sentinel, dmc
                                                # (keeps the others' saved results)
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

``lra``: a mini Long-Range-Arena comparison on :func:`minilib.data.needle_retrieval` (124 tokens: filler, one
needle at least 16 positions before the end, a final query token; 8 values, chance 12.5%) after 4 prepended
global-token slots (128 positions), read off the query position by a 2-layer bidirectional encoder (d_model 32,
2 heads, learned positions) whose attention is ``dense``, a ``window`` of radius 8 (17 keys), ``global+window``
(the 4 slots global, ETC's global-local mask :cite:`ainslie2020etc`), or ``routed`` (BiFormer's region routing,
16 regions of 8, top 2: 16 keys per query :cite:`zhu2023biformer`).
Every model has the same 4 prepended tokens and the same parameters (the patterns change no weight). Three seeds,
400 steps each, accuracy on 512 held-out rows. Linear attention (chapter 04) is left to the zoo chapter.

``suite``: the long-range suite through every chapter-05 token mixer: mini-ListOps (:func:`minilib.data.lra_listops`,
64 tokens, 10 classes) and a causal needle (:func:`minilib.data.needle_retrieval`, 64 tokens, the value at least 32
positions before the query: beyond two layers of a 16-key window; 8 values) and the parity of 4 marked bits among
63 (:func:`minilib.data.marked_parity`). One causal ``TransformerLM`` skeleton
(2 layers, d_model 32, 4 heads, RoPE) whose mixer is softmax ``attention``, a ``window`` of 16 keys,
``sinks+window`` (4 sinks + 12), ``mixed spans`` (window below, full attention in the top layer, MASFormer),
BiFormer's ``routed`` regions (causal, 2 of the regions of 8), ``landmark`` retrieval (own block of 8 + 1 retrieved),
SEA's kernel-estimated top 16 (``sea``), ``dmc`` (fixed 4x merging), ``combiner`` (Combiner-Fixed, blocks of 8: own
block plus the earlier blocks' summaries, at most 15 scores per query :cite:`ren2021combiner`) and chapter 04's
``linear`` attention; parameters
matched within 1% (DMC's importance projection). Three seeds, 300 steps of 16 rows, accuracy on 512 held-out rows,
per-seed spread and the paired difference to attention :cite:`tay2021long`.

``masformer``: mixed attention spans :cite:`zhang2023efficient` on the charlm data (plain and repeat windows of 128),
3-layer models (d_model 64, 4 heads, 400 steps, three seeds) with full attention in every layer, a window of 16
keys in every layer, or full attention in the top layer only (:func:`minilib.sparse.mixed_span_factory`); same
parameters in all three. Loss from the full forward on the held-out plain (positions 16-127) and repeat (64-127)
windows; attention score entries counted.

``search``: IceFormer's recipe :cite:`mao2024iceformer` at L = 8192, D = 64 with an IVF index standing in for its
search (:func:`minilib.sparse.knn_attention`: 256 clusters, 16 probes, top 32) on synthetic peaked queries (each a
noisy copy of a key), output error vs ``sdpa`` and time (5 alternating rounds, the fastest of each, so that load
slows both alike); and RetrievalAttention's query/key gap :cite:`liu2024retrievalattention`: recall of the true top 32 vs keys scanned for an index learnt from the keys or
from 2048 sample queries (16384 keys, 256 queries from a shifted distribution, 256 clusters).

``moa``: MoA :cite:`fu2024moa` on the committed seed-0 charlm weights: per-head loss increase when one head alone
is cut to spans 4-128 (profiled on 32 training windows), :func:`minilib.sparse.moa_allocate` at mean spans 8, 16,
32, and held-out loss/accuracy of the allocation vs the uniform span.

``sentinel``: sentinel-token context compression :cite:`ren2023context` fine-tuned 200 steps from the committed
weights (a sentinel after every 16 characters, windows of 112 characters) vs a sliding window of the same mean
cache size, untouched and tuned 200 steps; three fine-tuning seeds.

``dmc``: DMC with a fixed 4x merge schedule :cite:`nawrot2024dynamic` (:class:`minilib.sparse.DMCAttention`)
retrofitted for 300 steps vs GQA up-training :cite:`ainslie2023gqa` (4 key/value heads mean-pooled into 1) for the
same steps, both from the committed weights; three seeds of the continued training.

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import artifact_path, downsample, paired_difference, run_experiments, seed_spread  # noqa: E402
from benchmarks.attention_scoring import char_corpus, line_starts, windows  # noqa: E402
from torch import nn  # noqa: E402

from minilib.attention import MultiHeadAttention, sdpa  # noqa: E402
from minilib.data import LISTOPS_TOKENS, lra_listops, marked_parity, masked_targets, needle_retrieval  # noqa: E402
from minilib.feedforward import FeedForward  # noqa: E402
from minilib.norms import RMSNorm  # noqa: E402
from minilib.experiments import best_time, results_path  # noqa: E402
from minilib.flash import block_sparse_attention  # noqa: E402
from minilib.models import TransformerConfig, TransformerLM, attention_maps, count_parameters, train  # noqa: E402
from minilib.models.zoo import mqar_accuracy  # noqa: E402
from minilib.sparse import (block_local_mask, global_local_mask, head_window_mask, ivf_candidates, knn_attention,  # noqa: E402
                            landmark_mask, mask_flops, mixed_span_factory, moa_allocate, routing_mask, rule_factory, sea_mask,
                            sentinel_mask, sink_window_mask, sliding_window_mask, to_block_mask, topk_attention)

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
    tok, source, train_ids, val_ids, newline, val_starts = char_corpus(c)
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


def seed_losses(out: dict, label: str, eval_set: str) -> np.ndarray:
    return np.array([m["losses"][label][eval_set] for m in out["models"]])


def check_charlm(out: dict) -> None:
    full = {e: seed_losses(out, "full", e) for e in ("plain", "repeat")}
    for e in full:  # int8 keys and values cost under 0.001 nats/char in every seed, int4 under 0.02
        assert np.abs(seed_losses(out, "int8", e) - full[e]).max() < 1e-3
        assert np.abs(seed_losses(out, "int4", e) - full[e]).max() < 0.02
    # the copy lies 64 positions back: windows of 8-32 cannot read it, top-8 retrieval reads it
    for b in (8, 16, 32):
        assert (seed_losses(out, f"window@{b}", "repeat") > full["repeat"] + 0.7).all()
    assert (seed_losses(out, "retrieval@8", "repeat") - full["repeat"]).mean() < 0.01
    # heavy hitters and sinks beat the window at budgets 16 and 32 on the repeats, in every seed
    for b in (16, 32):
        window = seed_losses(out, f"window@{b}", "repeat")
        assert (seed_losses(out, f"heavy_hitter@{b}", "repeat") < window).all()
        assert (seed_losses(out, f"sinks@{b}", "repeat") < window).all()
    # honest negatives on plain text: the 8-slot window beats sinks + window in every seed (StreamingLLM's claim
    # does not reproduce), and windows of 16-32 beat the full cache in every seed
    assert (seed_losses(out, "sinks@8", "plain") > seed_losses(out, "window@8", "plain")).all()
    for b in (16, 32):
        assert (seed_losses(out, f"window@{b}", "plain") < full["plain"]).all()
    # training-free merging of RoPE keys fails: even at 64 slots, 0.3 nats worse than full in every seed
    for e in full:
        assert (seed_losses(out, "merge@64", e) > full[e] + 0.3).all()


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
    if name == "masformer":
        return "; ".join(f"{n} repeat {np.mean([r['repeat'] for r in rs]):.3f}" for n, rs in r["losses"].items())
    if name == "suite":
        return "; ".join(f"{task}: " + ", ".join(f"{m} {a['mean']:.3f}" for m, a in r["accuracy"].items())
                         for task, r in r["tasks"].items())
    if name == "lra":
        return ", ".join(f"{p} {np.mean(a):.3f}" for p, a in r["accuracy"].items())
    if name == "search":
        ice = r["iceformer"]
        return (f"knn L={r['config']['L']}: error {ice['relative_error']:.4f}, speed-up {ice['speedup']:.2f}; scanned at 90% "
                f"recall: " + ", ".join(f"{n} {scanned_at_recall(c):.3f}" for n, c in r["retrieval"].items()))
    if name == "dmc":
        return "; ".join(f"{n} repeat {np.mean([x['repeat'] for x in r[n]]):.3f}" for n in ("dmc", "gqa"))
    if name == "sentinel":
        return (f"plain: sentinel {np.mean([r['plain'] for r in r['sentinel']]):.3f}, window {r['window']} tuned "
                f"{np.mean([r['plain'] for r in r['window_tuned']]):.3f}")
    if name == "moa":
        return "; ".join(f"mean {m}: moa {b['moa']['repeat']['loss']:.3f} uniform {b['uniform']['repeat']['loss']:.3f}"
                         for m, b in r["budgets"].items())
    if name == "cost":
        t = r["timing"]["seconds"]
        return f"window / dense time at L={r['timing']['L']}: {t['window'] / t['dense']:.2f}"
    tight = r["config"]["budgets"][0]
    return (f"plain loss: full {mean_loss(r, 'full', 'plain'):.4f}, window@{tight} {mean_loss(r, f'window@{tight}', 'plain'):.4f}, "
            f"sinks@{tight} {mean_loss(r, f'sinks@{tight}', 'plain'):.4f}")


LRA = dict(seq_len=124, n_global=4, n_values=8, n_filler=8, d_model=32, n_layers=2, n_heads=2, radius=8, region=8,
           k_top=2, batch=32, steps=400, lr=3e-3, warmup=20, eval_rows=512, seeds=SEEDS,
           patterns=["dense", "window", "global+window", "routed"])
LRA_QUICK = dict(LRA, seq_len=28, steps=3, warmup=1, eval_rows=16, seeds=[0])


class PatternEncoder(nn.Module):
    """A small bidirectional encoder whose attention is restricted by a named pattern; logits at the last position."""

    def __init__(self, vocab_size: int, c: dict, pattern: str):
        super().__init__()
        d, L = c["d_model"], c["seq_len"] + c["n_global"]
        self.c, self.pattern = c, pattern
        self.embed, self.pos = nn.Embedding(vocab_size, d), nn.Embedding(L, d)
        self.attn = nn.ModuleList(MultiHeadAttention(d, c["n_heads"]) for _ in range(c["n_layers"]))
        self.ffn = nn.ModuleList(FeedForward(d) for _ in range(c["n_layers"]))
        self.norms = nn.ModuleList(RMSNorm(d) for _ in range(2 * c["n_layers"] + 1))
        self.head = nn.Linear(d, vocab_size)
        g, r = c["n_global"], c["radius"]
        fixed = {"window": global_local_mask(L, radius=r, n_global=0),
                 "global+window": global_local_mask(L, radius=r, n_global=g)}
        self.register_buffer("fixed_mask", fixed.get(pattern, torch.ones(L, L, dtype=torch.bool)), persistent=False)

    def mix(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        attn = self.attn[layer]
        q, k, v = attn.project_qkv(h, torch.arange(h.shape[1]))
        mask = self.fixed_mask
        if self.pattern == "routed":
            mask = routing_mask(q, k, region_size=self.c["region"], k_top=self.c["k_top"])
        return attn.combine(h, sdpa(q, k, v, mask=mask))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx) + self.pos(torch.arange(idx.shape[1]))
        for layer in range(self.c["n_layers"]):
            h = h + self.mix(layer, self.norms[2 * layer](h))
            h = h + self.ffn[layer](self.norms[2 * layer + 1](h))
        return self.head(self.norms[-1](h[:, -1]))


def needle_rows(c: dict, n: int, generator: torch.Generator):
    """Needle rows with ``n_global`` global-token ids prepended; returns inputs and the answers."""
    batch = needle_retrieval(n, seq_len=c["seq_len"], n_values=c["n_values"], n_filler=c["n_filler"],
                             min_distance=2 * c["radius"], generator=generator)
    glob = torch.full((n, c["n_global"]), c["n_filler"] + c["n_values"] + 2)
    return torch.cat([glob, batch.inputs], dim=1), batch.targets[:, -1]


def run_lra(quick: bool) -> dict:
    c = LRA_QUICK if quick else LRA
    vocab = c["n_filler"] + c["n_values"] + 3
    x_test, y_test = needle_rows(c, c["eval_rows"], torch.Generator().manual_seed(10_000))
    out = dict(config=c, accuracy={p: [] for p in c["patterns"]}, params={})
    for pattern in c["patterns"]:
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = PatternEncoder(vocab, c, pattern)
            gen = torch.Generator().manual_seed(seed)
            batches = iter(lambda: needle_rows(c, c["batch"], gen), None)
            train(model, batches, steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], progress=False,
                  loss_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]))
            with torch.no_grad():
                acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
            out["accuracy"][pattern].append(round(acc, 4))
            out["params"][pattern] = sum(p.numel() for p in model.parameters())
            print(f"  {pattern:14s} seed {seed}: accuracy {acc:.3f}", flush=True)
    return out


def check_lra(out: dict) -> None:
    acc = {p: float(np.mean(a)) for p, a in out["accuracy"].items()}
    chance = 1 / out["config"]["n_values"]
    assert len(set(out["params"].values())) == 1, "the patterns change no parameter"
    assert acc["window"] < chance + 0.1, "the needle lies beyond the window: chance"
    assert acc["dense"] > 0.9


#: The long-range suite: every chapter-05 token mixer in one causal TransformerLM skeleton (2 layers, d_model 32,
#: 4 heads, RoPE), each reading about 16 keys per query, against softmax attention and chapter 04's linear attention.
SUITE = dict(tasks=dict(listops=64, needle=64, parity=64), needle_distance=32, n_marked=4, n_values=8, n_filler=8, d_model=32, n_layers=2, n_heads=4, batch=16, steps=300, lr=3e-3,
             warmup=20, eval_rows=512, seeds=SEEDS, window=16, n_sinks=4, region=8, k_top=2, landmark_blocks=1,
             sea_keys=16, dmc_rate=4,
             mixers=["attention", "window", "sinks+window", "mixed spans", "routed", "landmark", "sea", "dmc",
                     "combiner", "linear"])
SUITE_QUICK = dict(SUITE, tasks=dict(listops=16, needle=16, parity=16), needle_distance=4, steps=3, warmup=1, eval_rows=16, seeds=[0])


def suite_mixer(name: str, c: dict) -> dict:
    """TransformerConfig keywords for a mixer of the suite; the sparse ones keep about ``c["window"]`` keys per query."""
    rule = {"routed": lambda q, k: routing_mask(q, k, region_size=c["region"], k_top=c["k_top"], causal=True),
            "landmark": lambda q, k: landmark_mask(q, k, block_size=c["region"], k_blocks=c["landmark_blocks"]),
            "sea": lambda q, k: sea_mask(q, k, k_top=c["sea_keys"])}
    if name in rule:
        return dict(mixer=rule_factory(lambda layer: rule[name]))
    return {"attention": dict(mixer="attention"),
            "window": dict(mixer="sliding_window", mixer_kwargs=dict(window=c["window"])),
            "sinks+window": dict(mixer="sliding_window", mixer_kwargs=dict(window=c["window"] - c["n_sinks"],
                                                                           n_sinks=c["n_sinks"])),
            "mixed spans": dict(mixer=mixed_span_factory([c["n_layers"] - 1], window=c["window"])),
            "dmc": dict(mixer="dmc", mixer_kwargs=dict(rate=c["dmc_rate"])),
            "combiner": dict(mixer="combiner", mixer_kwargs=dict(block_size=c["region"])),
            "linear": dict(mixer="linear_attention")}[name]


def suite_task(task: str, seq_len: int, c: dict):
    """``(batch(n, generator), vocab_size)`` of a task of the suite at ``seq_len`` tokens."""
    if task == "listops":
        return (lambda n, g: lra_listops(n, seq_len=seq_len, generator=g)), len(LISTOPS_TOKENS)
    if task == "parity":
        return (lambda n, g: marked_parity(n, seq_len=seq_len, n_marked=c["n_marked"], generator=g)), 7
    return ((lambda n, g: needle_retrieval(n, seq_len=seq_len, n_values=c["n_values"], n_filler=c["n_filler"],
                                           min_distance=c["needle_distance"], generator=g)),
            c["n_filler"] + c["n_values"] + 2)


def run_suite(quick: bool) -> dict:
    c = SUITE_QUICK if quick else SUITE
    out = dict(config={k: v for k, v in c.items()}, tasks={})
    for task, seq_len in c["tasks"].items():
        make, vocab = suite_task(task, seq_len, c)
        test = make(c["eval_rows"], torch.Generator().manual_seed(10_000))
        answers = test.targets[:, -1]
        r = dict(seq_len=seq_len, majority=float((answers == answers.mode().values).float().mean()), accuracy={},
                 params={})
        for name in c["mixers"]:
            accs = []
            for seed in c["seeds"]:
                torch.manual_seed(seed)
                model = TransformerLM(TransformerConfig(vocab, c["d_model"], c["n_layers"], c["n_heads"], max_len=seq_len,
                                                        **suite_mixer(name, c)))
                gen = torch.Generator().manual_seed(seed)
                train(model, ((b.inputs, masked_targets(b.targets, b.mask)) for b in iter(lambda: make(c["batch"], gen), None)),
                      steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], progress=False)
                with torch.no_grad():
                    accs.append(round(mqar_accuracy(model.eval()(test.inputs), test.targets, test.mask), 4))
                r["params"][name] = count_parameters(model)
                print(f"  {task} {name:13s} seed {seed}: accuracy {accs[-1]:.3f}", flush=True)
            r["accuracy"][name] = seed_spread(accs)
            r["accuracy"][name]["vs_attention"] = paired_difference(accs, r["accuracy"]["attention"]["per_seed"])
        out["tasks"][task] = r
    return out


def check_suite(out: dict) -> None:
    for r in out["tasks"].values():
        base = r["params"]["attention"]
        assert all(abs(p - base) <= 0.05 * base for p in r["params"].values()), "parameters matched within 5%"
        assert all(0 <= a["mean"] <= 1 for a in r["accuracy"].values())
    needle, listops = out["tasks"]["needle"]["accuracy"], out["tasks"]["listops"]["accuracy"]
    chance = 1 / out["config"]["n_values"]
    # the needle lies beyond two layers of a 16-key window: the windows stay at chance, attention finds it
    assert needle["attention"]["min"] > 0.99 and all(abs(needle[n]["mean"] - chance) < 0.05 for n in ("window", "sinks+window"))
    # ListOps after a short run: the local mixers lead full attention in every seed
    assert all(listops[n]["vs_attention"]["established"] and listops[n]["vs_attention"]["mean"] > 0 for n in ("window", "landmark"))
    # parity of 4 marked bits after 300 steps: every mixer still answers one class for every row
    assert all(abs(a["mean"] - 0.5) < 0.02 for a in out["tasks"]["parity"]["accuracy"].values())


MASFORMER = dict(steps=400, window=16, variants={"all full": None, "top layer full": [2], "all window": []})


def run_masformer(quick: bool) -> dict:
    c = dict(QUICK if quick else CONFIG, steps=5 if quick else MASFORMER["steps"])
    tok, _, train_ids, starts, evals = data(c)
    window = 4 if quick else MASFORMER["window"]
    out = dict(config=c, window=window, variants={k: v for k, v in MASFORMER["variants"].items()}, losses={}, params={},
               score_entries={})
    L = c["seq_len"]
    for name, full_layers in MASFORMER["variants"].items():
        full_layers = [i for i in (full_layers if full_layers is not None else range(c["n_layers"])) if i < c["n_layers"]]
        mixer = mixed_span_factory(full_layers, window=window)
        out["losses"][name] = []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = TransformerLM(TransformerConfig(tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"],
                                                    max_len=L, mixer=mixer))
            gen = torch.Generator().manual_seed(seed)
            train(model, batches(train_ids, starts, c, tok.vocab_size, gen), steps=c["steps"], lr=c["lr"],
                  warmup_steps=c["warmup"], weight_decay=c["weight_decay"], progress=False)
            model.eval()
            with torch.no_grad():
                r = {}
                for e, (x, y, start) in evals.items():
                    logits = model(x)[:, start:]
                    r[e] = round(nn.functional.cross_entropy(logits.flatten(0, 1), y[:, start:].flatten()).item(), 5)
            out["losses"][name].append(r)
            out["params"][name] = sum(p.numel() for p in model.parameters())
            print(f"  {name:15s} seed {seed}: {r}", flush=True)
        per_layer = [L * (L + 1) // 2 if i in full_layers else int(sliding_window_mask(L, window).sum())
                     for i in range(c["n_layers"])]
        out["score_entries"][name] = sum(per_layer)
    return out


def check_masformer(out: dict) -> None:
    assert len(set(out["params"].values())) == 1
    mean = {name: {e: float(np.mean([r[e] for r in rs])) for e in ("plain", "repeat")} for name, rs in out["losses"].items()}
    # all-window cannot copy from 64 back; one full layer on top can
    assert mean["all window"]["repeat"] > mean["all full"]["repeat"] + 0.3
    assert mean["top layer full"]["repeat"] < mean["all window"]["repeat"] - 0.3


SEARCH = dict(L=8192, head_dim=64, n_centres=64, spread=1.5, query_noise=0.5, k_top=32, n_clusters=256, n_probe=16, rounds=5,
              retrieval=dict(S=16384, T=256, n_sample=2048, k_true=32, n_clusters=256, probes=[1, 2, 4, 8, 16, 32, 64, 128, 256]))
SEARCH_QUICK = dict(SEARCH, L=512, head_dim=16, n_clusters=16, n_probe=4,
                    retrieval=dict(S=1024, T=32, n_sample=256, k_true=8, n_clusters=16, probes=[1, 4, 16]))


def peaked_qk(c: dict, generator: torch.Generator):
    """Keys around ``n_centres`` random centres (spread ``spread``); each query a noisy copy of a random key, so that
    its attention is peaked on a few keys, as in trained models."""
    L, D = c["L"], c["head_dim"]
    centres = torch.randn(c["n_centres"], D, generator=generator)
    k = centres[torch.randint(c["n_centres"], (L,), generator=generator)] + c["spread"] * torch.randn(L, D, generator=generator)
    q = k[torch.randint(L, (L,), generator=generator)] + c["query_noise"] * torch.randn(L, D, generator=generator)
    return q, k, torch.randn(L, D, generator=generator)


def shifted_queries(c: dict, generator: torch.Generator):
    """Keys and queries from different distributions (the query/key gap RetrievalAttention points out): keys around
    4 e_1 with per-channel scales 0.5-1.5, queries around -2 e_1 + 4 e_2; test queries and index-building sample
    queries drawn alike."""
    D = SEARCH["head_dim"] if c["S"] > 1024 else SEARCH_QUICK["head_dim"]
    mk, mq = torch.zeros(D), torch.zeros(D)
    mk[0], mq[0], mq[1] = 4.0, -2.0, 4.0
    k = (torch.randn(c["S"], D, generator=generator) + mk) * torch.linspace(0.5, 1.5, D)
    q = torch.randn(c["T"], D, generator=generator) + mq
    sample = torch.randn(c["n_sample"], D, generator=generator) + mq
    return q, k, sample


def run_search(quick: bool) -> dict:
    c = SEARCH_QUICK if quick else SEARCH
    q, k, v = peaked_qk(c, torch.Generator().manual_seed(0))
    exact = sdpa(q[None, None], k[None, None], v[None, None])[0, 0]
    knn = dict(k_top=c["k_top"], n_clusters=c["n_clusters"], n_probe=c["n_probe"])
    contenders = {"sdpa": lambda: sdpa(q[None, None], k[None, None], v[None, None]),
                  "knn": lambda: knn_attention(q, k, v, generator=torch.Generator().manual_seed(0), **knn)}
    seconds = {name: [] for name in contenders}
    for round_ in range(c["rounds"]):  # alternate the two, so that a busy spell of the shared machine slows both
        for name, fn in contenders.items():
            seconds[name].append(best_time(fn, repeat=1, warmup=int(round_ == 0)))
    t_full, t_knn = min(seconds["sdpa"]), min(seconds["knn"])
    out, scanned = knn_attention(q, k, v, generator=torch.Generator().manual_seed(0), **knn)
    exact_topk = topk_attention(q[None, None], k[None, None], v[None, None], k_top=c["k_top"])[0, 0]
    rel = lambda o: round(float((o - exact).norm() / exact.norm()), 5)  # noqa: E731
    iceformer = dict(relative_error=rel(out), exact_topk_error=rel(exact_topk), scanned=round(scanned, 5),
                     seconds=dict(sdpa=round(t_full, 4), knn=round(t_knn, 4)), speedup=round(t_full / t_knn, 3),
                     round_speedups=[round(a / b, 3) for a, b in zip(seconds["sdpa"], seconds["knn"])])
    r = c["retrieval"]
    q, k, sample = shifted_queries(r, torch.Generator().manual_seed(1))
    hit = torch.zeros(r["T"], r["S"], dtype=torch.bool).scatter_(1, (q @ k.T).topk(r["k_true"], dim=1).indices, True)
    curves = {}
    for name, index_from in (("key-built", None), ("query-aware", sample)):
        curves[name] = []
        for n_probe in r["probes"]:
            cand = ivf_candidates(q, k, n_clusters=r["n_clusters"], n_probe=n_probe, index_from=index_from,
                                  generator=torch.Generator().manual_seed(0))
            curves[name].append(dict(n_probe=n_probe, scanned=round(cand.float().mean().item(), 5),
                                     recall=round(((cand & hit).sum(1).float() / r["k_true"]).mean().item(), 5)))
    return dict(config=c, iceformer=iceformer, retrieval=curves)


def scanned_at_recall(curve: list, recall: float = 0.9) -> float:
    """Fraction of keys scanned where the curve first reaches ``recall``, interpolated linearly between probe counts
    (the probe grid is coarse: the first probe count past ``recall`` may scan every key)."""
    for a, b in zip([dict(scanned=0.0, recall=0.0), *curve], curve):
        if b["recall"] >= recall > a["recall"]:
            return a["scanned"] + (recall - a["recall"]) / (b["recall"] - a["recall"]) * (b["scanned"] - a["scanned"])
    raise ValueError(f"the curve never reaches recall {recall}")


def check_search(out: dict) -> None:
    ice = out["iceformer"]
    assert ice["relative_error"] < 0.03 and ice["speedup"] > 1.5 and ice["scanned"] < 0.1
    for curve in out["retrieval"].values():  # more probes scan more keys and find more of the true top-k
        assert all(a["recall"] <= b["recall"] and a["scanned"] <= b["scanned"] for a, b in zip(curve, curve[1:]))
        assert curve[-1]["recall"] == 1.0


MOA = dict(spans=[4, 8, 16, 32, 64, 128], mean_spans=[8, 16, 32], profile_windows=32, profile_seed=5, skip=16)


def span_model(weights: dict, config: TransformerConfig, spans_per_layer) -> TransformerLM:
    """The trained weights with head h of layer l restricted to a causal window of ``spans_per_layer[l][h]`` keys."""
    rule = rule_factory(lambda layer: lambda q, k: head_window_mask(q.shape[2], spans_per_layer[layer])[None])
    model = TransformerLM(TransformerConfig(config.vocab_size, config.d_model, config.n_layers, config.n_heads,
                                            max_len=config.max_len, mixer=rule))
    model.load_state_dict(weights)
    return model.eval()


def run_moa(quick: bool) -> dict:
    """MoA on the committed charlm weights (seed 0): profile each head's loss increase at each span on training
    windows, allocate per-head spans at a mean budget, compare with the uniform span on the held-out windows."""
    c = QUICK if quick else CONFIG
    tok, _, train_ids, starts, evals = data(c)
    config = TransformerConfig(tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"])
    if quick:
        torch.manual_seed(0)
        weights = TransformerLM(config).state_dict()
    else:
        weights = {k: v.float() for k, v in torch.load(results_path("sparse_charlm.pt")).items()}
    L, H, n_layers = c["seq_len"], c["n_heads"], c["n_layers"]
    spans = [s for s in MOA["spans"] if s <= L] if not quick else [2, 8, L]
    g = torch.Generator().manual_seed(MOA["profile_seed"])
    pick = starts[torch.randint(len(starts), (MOA["profile_windows"],), generator=g)]
    half = len(pick) // 2
    px, py = windows(train_ids, pick[:half], L, tok.vocab_size)
    rx, ry = repeat_windows(train_ids, pick[half:], L, tok.vocab_size)
    x, y = torch.cat([px, rx]), torch.cat([py, ry])
    skip = min(MOA["skip"], L // 2)

    @torch.no_grad()
    def profile_loss(spans_per_layer):
        logits = span_model(weights, config, spans_per_layer)(x)[:, skip:]
        return nn.functional.cross_entropy(logits.flatten(0, 1), y[:, skip:].flatten()).item()

    base = profile_loss([[L] * H] * n_layers)
    increase = torch.zeros(n_layers * H, len(spans), dtype=torch.float64)
    for head in range(n_layers * H):
        for j, span in enumerate(spans):
            layout = [[L] * H for _ in range(n_layers)]
            layout[head // H][head % H] = span
            increase[head, j] = profile_loss(layout) - base
    out = dict(config=dict(MOA, spans=spans), profile=increase.round(decimals=5).tolist(), budgets={})
    for mean in (MOA["mean_spans"] if not quick else [4]):
        chosen = moa_allocate(increase, spans, mean_span=mean)
        layout = [chosen[i * H:(i + 1) * H] for i in range(n_layers)]
        result = dict(spans=layout)
        for name, spans_per_layer in (("moa", layout), ("uniform", [[mean] * H] * n_layers)):
            model = span_model(weights, config, spans_per_layer)
            with torch.no_grad():
                result[name] = {}
                for e, (ex, ey, start) in evals.items():
                    logits = model(ex)[:, start:]
                    result[name][e] = dict(
                        loss=round(nn.functional.cross_entropy(logits.flatten(0, 1), ey[:, start:].flatten()).item(), 5),
                        accuracy=round((logits.argmax(-1) == ey[:, start:]).float().mean().item(), 5))
        out["budgets"][str(mean)] = result
    return out


def check_moa(out: dict) -> None:
    for mean, r in out["budgets"].items():
        assert sum(map(sum, r["spans"])) <= int(mean) * sum(map(len, r["spans"]))  # the budget holds
    # at the ratio (mean span 1/16 of the length) the allocation beats the uniform span on both sets
    r = out["budgets"]["8"]
    for e in ("plain", "repeat"):
        assert r["moa"][e]["loss"] < r["uniform"][e]["loss"] and r["moa"][e]["accuracy"] > r["uniform"][e]["accuracy"]


SENTINEL = dict(span=16, n_chars=112, steps=200, lr=1e-3, warmup=20, seeds=SEEDS)


def with_sentinels(x: torch.Tensor, y: torch.Tensor, span: int, sentinel_id: int):
    """Insert a sentinel after every ``span`` characters of the stream ``x_0, y_0 .. y_{n-1}``; returns inputs,
    targets and the input positions that predict ``y_0 .. y_{n-1}`` (a sentinel after ``y_j`` is predicted from ``y_j``)."""
    z = torch.cat([x[:, :1], y], dim=1)  # the n + 1 characters
    n = z.shape[1]
    at = torch.arange(n) + torch.arange(n) // span  # position of character i in the stream with sentinels
    zs = torch.full((z.shape[0], n + (n - 1) // span), sentinel_id, dtype=z.dtype)
    zs[:, at] = z
    return zs[:, :-1], zs[:, 1:], at[1:] - 1


def sentinel_losses(model: TransformerLM, evals: dict, span: int, sentinel_id: int, *, sentinels: bool) -> dict:
    """Loss on the characters of each eval set (from its start), read through the sentinel stream or directly."""
    out = {}
    with torch.no_grad():
        for e, (x, y, start) in evals.items():
            if sentinels:
                xs, _, where = with_sentinels(x, y, span, sentinel_id)
                logits = model(xs)[:, where]
            else:
                logits = model(x)
            out[e] = round(nn.functional.cross_entropy(logits[:, start:].flatten(0, 1), y[:, start:].flatten()).item(), 5)
    return out


def run_sentinel(quick: bool) -> dict:
    """Context compression with sentinel tokens :cite:`ren2023context`, fine-tuned from the committed charlm
    weights (seed 0): a sentinel after every 16 characters, later tokens read the sentinels instead of finished
    spans (:func:`minilib.sparse.sentinel_mask`), 200 steps; against a sliding window holding the same mean number
    of cache entries, untouched and fine-tuned for the same steps. Three fine-tuning seeds."""
    c = dict(QUICK if quick else CONFIG, seq_len=24 if quick else SENTINEL["n_chars"])
    span = 4 if quick else SENTINEL["span"]
    steps = 3 if quick else SENTINEL["steps"]
    tok, _, train_ids, starts, evals = data(c)
    bos, sentinel_id = tok.vocab_size, tok.vocab_size + 1
    max_len = (QUICK if quick else CONFIG)["seq_len"]
    base = dict(vocab=tok.vocab_size + 1, d=c["d_model"], layers=c["n_layers"], heads=c["n_heads"])
    if quick:
        torch.manual_seed(0)
        weights = TransformerLM(TransformerConfig(base["vocab"], base["d"], base["layers"], base["heads"], max_len=max_len)).state_dict()
    else:
        weights = {k: v.float() for k, v in torch.load(results_path("sparse_charlm.pt")).items()}
    # mean cache entries of a query on the evaluated characters: earlier sentinels + its own span so far
    where = with_sentinels(*evals["plain"][:2], span, sentinel_id)[2]
    sizes = {e: (where[start:] // (span + 1) + where[start:] % (span + 1) + 1).double().mean().item()
             for e, (_, _, start) in evals.items()}
    window = round(max(sizes.values()))

    def model_with(mixer, vocab):
        m = TransformerLM(TransformerConfig(vocab, base["d"], base["layers"], base["heads"], max_len=max_len, mixer=mixer))
        state = dict(weights)
        if vocab > base["vocab"]:  # a new embedding row for the sentinel, small like the trained rows
            state["embed.weight"] = torch.cat([weights["embed.weight"], 0.02 * torch.randn(1, base["d"])])
        m.load_state_dict(state)
        return m

    sentinel_rule = rule_factory(lambda layer: lambda q, k: sentinel_mask(q.shape[2], span))
    out = dict(config=dict(SENTINEL, span=span, steps=steps, n_chars=c["seq_len"]), cache_entries=sizes, window=window,
               untouched_window=sentinel_losses(model_with(mixed_span_factory([], window=window), base["vocab"]).eval(),
                                                evals, span, sentinel_id, sentinels=False),
               untouched_full=sentinel_losses(model_with(mixed_span_factory(range(base["layers"]), window=1), base["vocab"]).eval(),
                                              evals, span, sentinel_id, sentinels=False),
               sentinel=[], window_tuned=[])
    for seed in c["seeds"]:
        for name, mixer, vocab in (("sentinel", sentinel_rule, base["vocab"] + 1),
                                   ("window_tuned", mixed_span_factory([], window=window), base["vocab"])):
            torch.manual_seed(seed)
            model = model_with(mixer, vocab)
            gen = torch.Generator().manual_seed(100 + seed)
            stream = batches(train_ids, starts, c, bos, gen)
            feed = ((with_sentinels(x, y, span, sentinel_id)[:2]) for x, y in stream) if name == "sentinel" else stream
            train(model, feed, steps=steps, lr=SENTINEL["lr"], warmup_steps=1 if quick else SENTINEL["warmup"],
                  weight_decay=c["weight_decay"], progress=False)
            out[name].append(sentinel_losses(model.eval(), evals, span, sentinel_id, sentinels=name == "sentinel"))
            print(f"  {name} seed {seed}: {out[name][-1]}", flush=True)
    return out


def check_sentinel(out: dict) -> None:
    span = out["config"]["span"]
    assert out["window"] < 2 * (span + 1)  # far fewer entries than the characters before the evaluated positions
    # honest negative: after 200 steps every sentinel seed is behind every tuned-window seed, on both sets
    for e in ("plain", "repeat"):
        assert max(r[e] for r in out["window_tuned"]) < min(r[e] for r in out["sentinel"])


DMC = dict(rate=4, steps=300, lr=1e-3, warmup=20, seeds=SEEDS)


def eval_losses(model: TransformerLM, evals: dict) -> dict:
    """Full-forward loss per eval set (from its start)."""
    with torch.no_grad():
        return {e: round(nn.functional.cross_entropy(model(x)[:, start:].flatten(0, 1), y[:, start:].flatten()).item(), 5)
                for e, (x, y, start) in evals.items()}


def run_dmc(quick: bool) -> dict:
    """DMC retrofit :cite:`nawrot2024dynamic` vs GQA up-training :cite:`ainslie2023gqa` from the committed charlm
    weights (seed 0), both to a 4x smaller cache: DMC merges every 4 positions into one slot (learnt importance,
    :class:`minilib.sparse.DMCAttention`), GQA mean-pools the 4 key/value heads into 1. Each continues training for
    300 steps on the charlm data; three seeds of the continued training."""
    c = QUICK if quick else CONFIG
    steps, rate = (3, 2) if quick else (DMC["steps"], DMC["rate"])
    tok, _, train_ids, starts, evals = data(c)
    V, d, n_layers, H, L = tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"], c["seq_len"]
    if quick:
        torch.manual_seed(0)
        weights = TransformerLM(TransformerConfig(V, d, n_layers, H, max_len=L)).state_dict()
    else:
        weights = {k: v.float() for k, v in torch.load(results_path("sparse_charlm.pt")).items()}

    def dmc_model():
        m = TransformerLM(TransformerConfig(V, d, n_layers, H, max_len=L, mixer="dmc", mixer_kwargs=dict(rate=rate)))
        m.load_state_dict(weights, strict=False)
        return m

    def gqa_model():
        m = TransformerLM(TransformerConfig(V, d, n_layers, H, n_kv_heads=1, max_len=L))
        pooled = {k: (w.view(H, -1, d).mean(0) if k.endswith(("wk.weight", "wv.weight")) else w) for k, w in weights.items()}
        m.load_state_dict(pooled)
        return m

    full = TransformerLM(TransformerConfig(V, d, n_layers, H, max_len=L))
    full.load_state_dict(weights)
    out = dict(config=dict(DMC, rate=rate, steps=steps), full=eval_losses(full.eval(), evals),
               untrained=dict(dmc=eval_losses(dmc_model().eval(), evals), gqa=eval_losses(gqa_model().eval(), evals)),
               dmc=[], gqa=[], cache={})
    for seed in c["seeds"]:
        for name, build in (("dmc", dmc_model), ("gqa", gqa_model)):
            torch.manual_seed(seed)
            model = build()
            train(model, batches(train_ids, starts, c, tok.vocab_size, torch.Generator().manual_seed(200 + seed)),
                  steps=steps, lr=DMC["lr"], warmup_steps=1 if quick else DMC["warmup"], weight_decay=c["weight_decay"],
                  progress=False)
            out[name].append(eval_losses(model.eval(), evals))
            out["params"] = out.get("params", {}) | {name: sum(p.numel() for p in model.parameters())}
            print(f"  {name} seed {seed}: {out[name][-1]}", flush=True)
    # cache entries per layer after L positions, per batch row: key/value heads x positions held
    caches = [block.mixer.new_cache() for block in dmc_model().blocks]
    with torch.no_grad():
        dmc_model()(evals["plain"][0][:1], caches=caches)
    out["cache"] = dict(full=H * L, gqa=1 * L, dmc=H * caches[0].size)
    return out


def check_dmc(out: dict) -> None:
    assert out["cache"]["full"] == 4 * out["cache"]["gqa"] == 4 * out["cache"]["dmc"]
    for e in ("plain", "repeat"):
        dmc, gqa = [r[e] for r in out["dmc"]], [r[e] for r in out["gqa"]]
        assert max(dmc) < out["untrained"]["dmc"][e] - 2  # the retrofit learns to read merged slots
        assert max(gqa) < min(dmc)  # honest negative: GQA up-training beats the fixed-schedule DMC in every seed


EXPERIMENTS = {"charlm": (run_charlm, check_charlm), "cost": (run_cost, check_cost), "lra": (run_lra, check_lra),
               "suite": (run_suite, check_suite),
               "masformer": (run_masformer, check_masformer), "search": (run_search, check_search),
               "moa": (run_moa, check_moa), "sentinel": (run_sentinel, check_sentinel),
               "dmc": (run_dmc, check_dmc)}


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="sparse", description=__doc__, report=report, argv=argv)
    if trained:
        torch.save(trained, artifact_path("sparse_charlm.pt"))


if __name__ == "__main__":
    main()
