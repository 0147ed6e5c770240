"""Head layouts and the KV cache (chapter 02): the measurements and training runs behind the chapter's claims.

    python benchmarks/attention_heads.py                # everything, writes benchmarks/results/attention_heads.json
    python benchmarks/attention_heads.py --only charlm  # one of: decode, sqa_speed, copy, charlm, kvroute
    python benchmarks/attention_heads.py --quick        # tiny sizes, a smoke run; nothing saved

- ``decode``: one decoding step with ``S`` cached positions for MHA / GQA / MQA / SQA layouts of a 16-head,
  ``d_model = 1024`` layer (fastest of repeats, :func:`minilib.experiments.best_time`): the cache read alone
  (``grouped_attention``) and the whole ``MultiHeadAttention`` step appending to its ``KVCache``.
- ``sqa_speed``: forward time at ``L = 2048`` for ``n_q_heads = H, H/2, H/4`` (Sparse Query Attention,
  :cite:`filipek2025sqa`), with the attention matmul FLOPs counted by ``torch.utils.flop_counter``.
- ``copy``: MHA vs GQA (``H_kv = 2``) vs MQA (``H_kv = 1``), 8 query heads, on ``minilib.data.copy_task``, three
  seeds (initialisation and batches): test accuracy every 10 steps and at the end. (Associative recall was tried
  first: at this size even MHA stayed at 25-53% accuracy after 800 steps, so it could not rank the layouts.)
- ``charlm``: 2-layer, 8-head character LMs on ``tiny_corpus``: MHA, GQA (``H_kv = 2``), MQA, SQA
  (``n_q_heads = n_kv_heads = 2``) and Mixture-of-Head attention (top-6 of 8 routed heads, :cite:`jin2024moh`;
  the paper's weights and, as ``MoH-renorm``, the released code's), equal data and 300 steps, validation loss,
  three seeds; MHA, SQA and MoH again for 600 steps with seed 0 only (``long_runs``). Parameter counts differ by
  layout (fewer key/value or query heads mean smaller projections) and are saved with each run.
- ``kvroute``: 4-layer character LM trained with stochastic KV routing ``p = 0.5`` and without (``p = 0``)
  :cite:`stochastickv2025`, three seeds; validation loss with no sharing and with layers {1, 3} (and {1, 2, 3})
  reusing the layer below's KV.

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON). Timings depend on the machine and
its load; the JSON records wall and CPU seconds for each experiment. With --only, the other experiments' entries
already in the JSON are kept.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import downsample, run_experiments, seed_spread  # noqa: E402
from minilib.attention import (  # noqa: E402
    KVCache, MultiHeadAttention, attend, grouped_attention, kv_cache_bytes)
from minilib.data import (  # noqa: E402
    CharTokenizer, copy_task, lm_batches, lm_eval_windows, masked_targets, tiny_corpus, train_val_split)
from minilib.experiments import best_time  # noqa: E402
from minilib.models import TransformerLM, lm_loss, train  # noqa: E402

SEEDS = [0, 1, 2]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# 1. Decode step vs cache layout
# ---------------------------------------------------------------------------------------------

DECODE = dict(d_model=1024, n_heads=16, seq_lens=[512, 1024, 2048, 4096, 8192], repeats=21,
              layouts={"MHA": dict(n_kv_heads=16), "GQA": dict(n_kv_heads=4), "MQA": dict(n_kv_heads=1),
                       "SQA": dict(n_q_heads=4, n_kv_heads=4)})
DECODE_QUICK = dict(DECODE, d_model=256, seq_lens=[256, 512], repeats=3)


def run_decode(quick: bool) -> dict:
    """Fastest time of one decoding step with ``S`` cached positions, per layout.

    ``attention_ms``: the attention read alone, :func:`grouped_attention` of one query token over the cache (each
    key/value head read once for its group of query heads, as a decoding kernel does). ``module_ms``: the whole
    :class:`MultiHeadAttention` step (project the token, append it to the :class:`KVCache`, which copies the cache,
    expand the key/value heads to the query heads, attend, project); each timed call appends one more token to a
    cache that starts with ``S - 1``, so the cache grows by ``repeats + 1`` positions over the measurement.
    """
    c = DECODE_QUICK if quick else DECODE
    modules = {}
    for name, kw in c["layouts"].items():
        torch.manual_seed(0)
        modules[name] = MultiHeadAttention(c["d_model"], c["n_heads"], **kw).eval()
    x = torch.randn(1, 1, c["d_model"])
    out = {"config": dict(c), **{key: {name: {} for name in modules}
                                 for key in ("attention_ms", "module_ms", "cache_bytes_fp32")}}
    for S in c["seq_lens"]:
        with torch.no_grad():
            for name, m in modules.items():
                k, v = torch.randn(2, 1, m.n_kv_heads, S, m.head_dim)
                q = torch.randn(1, m.n_heads, 1, m.head_dim)
                attention = best_time(lambda: grouped_attention(q, k, v), repeat=c["repeats"])
                cache = KVCache()
                cache.append(k[:, :, 1:], v[:, :, 1:])
                step = best_time(lambda: m(x, cache=cache), repeat=c["repeats"])
                out["attention_ms"][name][str(S)] = round(1e3 * attention, 3)
                out["module_ms"][name][str(S)] = round(1e3 * step, 3)
                out["cache_bytes_fp32"][name][str(S)] = kv_cache_bytes(n_layers=1, n_kv_heads=m.n_kv_heads,
                                                                       head_dim=m.head_dim, seq_len=S, dtype=torch.float32)
    return out


def check_decode(out: dict) -> None:
    ms, lens = out["attention_ms"], DECODE["seq_lens"]
    for S in map(str, lens[-2:]):
        assert ms["MHA"][S] > ms["GQA"][S] > ms["MQA"][S], f"the cache read should shrink with H_kv at S={S}"
    longest = str(lens[-1])
    assert 2 < ms["MHA"][longest] / ms["MQA"][longest] < 16, "MQA reads 16x less, but is not 16x faster"


# ---------------------------------------------------------------------------------------------
# 2. Sparse Query Attention: forward time and counted FLOPs at L = 2048
# ---------------------------------------------------------------------------------------------

SQA = dict(d_model=128, n_heads=8, seq_len=2048, q_heads=[8, 4, 2], repeats=5)
SQA_QUICK = dict(SQA, seq_len=256, repeats=2)


def run_sqa_speed(quick: bool) -> dict:
    c = SQA_QUICK if quick else SQA
    x = torch.randn(1, c["seq_len"], c["d_model"], generator=torch.Generator().manual_seed(0))
    out = {"config": dict(c), "ms": {}, "attention_flops": {}}
    for hq in c["q_heads"]:
        torch.manual_seed(0)
        module = MultiHeadAttention(c["d_model"], c["n_heads"], n_q_heads=hq, n_kv_heads=hq).eval()
        with torch.no_grad():
            out["ms"][str(hq)] = round(1e3 * best_time(lambda: module(x), repeat=c["repeats"]), 1)
            q, k, v = module.project_qkv(x, torch.arange(c["seq_len"]))
            with FlopCounterMode(display=False) as counter:
                attend(q, k, v, causal=True)
        out["attention_flops"][str(hq)] = counter.get_total_flops()
    H = c["n_heads"]
    out["speedup_quarter"] = round(out["ms"][str(H)] / out["ms"][str(H // 4)], 2)
    return out


def check_sqa_speed(out: dict) -> None:
    L, D = SQA["seq_len"], SQA["d_model"] // SQA["n_heads"]
    for hq, flops in out["attention_flops"].items():
        assert flops == 4 * int(hq) * L * L * D
    assert out["speedup_quarter"] >= 2.0, "H_q = H/4 should run the forward at least 2x faster at L = 2048"


# ---------------------------------------------------------------------------------------------
# 3. MHA vs GQA vs MQA on the copy task
# ---------------------------------------------------------------------------------------------

COPY = dict(seq_len=32, vocab_size=32, d_model=64, n_layers=2, n_heads=8, kv_heads=[8, 2, 1], steps=100, batch=32,
            lr=3e-3, warmup=10, n_test=500, eval_every=10, seeds=SEEDS)
COPY_QUICK = dict(COPY, seq_len=8, d_model=16, steps=10, n_test=50, eval_every=5, seeds=[0, 1])


def copy_batches(c: dict, generator: torch.Generator):
    while True:
        b = copy_task(c["batch"], seq_len=c["seq_len"], vocab_size=c["vocab_size"], generator=generator)
        yield b.inputs, masked_targets(b.targets, b.mask)


@torch.no_grad()
def copy_accuracy(model, batch) -> float:
    """Fraction of copied tokens predicted exactly (argmax), over the answer half of each sequence."""
    return (model(batch.inputs).argmax(-1) == batch.targets)[batch.mask].float().mean().item()


def train_copy(c: dict, hkv: int, seed: int, test) -> dict:
    torch.manual_seed(seed)
    model = TransformerLM(c["vocab_size"] + 1, c["d_model"], c["n_layers"], c["n_heads"], n_kv_heads=hkv,
                          max_len=2 * c["seq_len"])
    accuracy = []  # test accuracy every eval_every steps, measured before the step's update

    def loss_with_probe(m, batch):
        if len(accuracy) * c["eval_every"] <= loss_with_probe.step:
            accuracy.append(round(copy_accuracy(m, test), 4))
        loss_with_probe.step += 1
        return lm_loss(m, batch)

    loss_with_probe.step = 0
    losses = train(model, copy_batches(c, torch.Generator().manual_seed(seed)), steps=c["steps"], lr=c["lr"],
                   warmup_steps=c["warmup"], loss_fn=loss_with_probe, progress=False)
    reached = next((i * c["eval_every"] for i, a in enumerate(accuracy) if a >= 0.99), None)
    return dict(accuracy=round(copy_accuracy(model.eval(), test), 4), steps_to_99=reached, accuracy_curve=accuracy,
                params=n_params(model), curve=downsample(losses, 40))


def run_copy(quick: bool) -> dict:
    c = COPY_QUICK if quick else COPY
    test = copy_task(c["n_test"], seq_len=c["seq_len"], vocab_size=c["vocab_size"],
                     generator=torch.Generator().manual_seed(12345))
    runs = {}
    for hkv in c["kv_heads"]:
        seeds = [train_copy(c, hkv, seed, test) for seed in c["seeds"]]
        name = "MHA" if hkv == c["n_heads"] else "MQA" if hkv == 1 else f"GQA{hkv}"
        runs[name] = dict(n_kv_heads=hkv, cache_fraction=hkv / c["n_heads"], params=seeds[0]["params"],
                          accuracy=[r["accuracy"] for r in seeds], steps_to_99=[r["steps_to_99"] for r in seeds],
                          accuracy_curve=seeds[0]["accuracy_curve"], curve=seeds[0]["curve"])
    return {"config": dict(c), "runs": runs}


def check_copy(out: dict) -> None:
    runs = out["runs"]
    assert all(min(r["accuracy"]) > 0.99 for r in runs.values()), "every layout learns to copy in every seed"
    for seed_steps in zip(*(runs[k]["steps_to_99"] for k in ("MHA", "GQA2", "MQA"))):
        assert list(seed_steps) == sorted(seed_steps), "fewer key/value heads take at least as many steps to 99%"


# ---------------------------------------------------------------------------------------------
# 4. Character LMs: MHA vs GQA/MQA vs SQA vs MoH
# ---------------------------------------------------------------------------------------------

LM = dict(n_chars=200_000, val_frac=0.1, seq_len=64, batch=32, d_model=96, n_layers=2, n_heads=8, steps=300, lr=3e-3,
          warmup=20, seeds=SEEDS, sqa_q_heads=2, gqa_kv_heads=2, moh_top_k=6, long_steps=600,
          long_variants=["MHA", "SQA", "MoH"])
LM_QUICK = dict(LM, n_chars=20_000, seq_len=16, d_model=32, steps=5, warmup=1, seeds=[0, 1], long_steps=10)


def corpus(c: dict):
    text, source = tiny_corpus(c["n_chars"], seed=0)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), c["val_frac"])
    return tok, train_ids, val_ids, source


def train_lm(model, train_ids, val_ids, c: dict, seed: int, *, share=None) -> dict:
    start = time.perf_counter()
    losses = train(model, lm_batches(train_ids, batch_size=c["batch"], seq_len=c["seq_len"],
                                     generator=torch.Generator().manual_seed(seed)),
                   steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], progress=False)
    seconds = time.perf_counter() - start
    x, y = lm_eval_windows(val_ids, seq_len=c["seq_len"])
    model.eval()
    val = {}
    for name, layers in (share or {"val_loss": set()}).items():
        model.share_kv_layers = layers
        with torch.no_grad():
            val[name] = round(lm_loss(model, (x, y)).item(), 4)
    model.share_kv_layers = set()
    return dict(val, params=n_params(model), train_seconds=round(seconds, 1), curve=downsample(losses, 40))


def run_charlm(quick: bool) -> dict:
    c = LM_QUICK if quick else LM
    tok, train_ids, val_ids, source = corpus(c)

    def lm_with(**kw):
        return lambda: TransformerLM(tok.vocab_size, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"], **kw)

    builders = {
        "MHA": lm_with(),
        "GQA": lm_with(n_kv_heads=c["gqa_kv_heads"]),
        "MQA": lm_with(n_kv_heads=1),
        "SQA": lm_with(n_kv_heads=c["sqa_q_heads"], mixer_kwargs=dict(n_q_heads=c["sqa_q_heads"])),
        "MoH": lm_with(mixer="moh", mixer_kwargs=dict(top_k=c["moh_top_k"])),
        "MoH-renorm": lm_with(mixer="moh", mixer_kwargs=dict(top_k=c["moh_top_k"], renormalize=True)),
    }
    out = {"config": dict(c), "entropy_rate": round(source.entropy_rate_per_char(), 4)}
    runs = {}
    for name, build in builders.items():
        seeds = []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            seeds.append(train_lm(build(), train_ids, val_ids, c, seed))
        runs[name] = dict(params=seeds[0]["params"], val_loss=[r["val_loss"] for r in seeds],
                          train_seconds=[r["train_seconds"] for r in seeds], curve=seeds[0]["curve"])
    mha = np.array(runs["MHA"]["val_loss"])
    for name, r in runs.items():
        r["val_loss_mean"] = seed_spread(r["val_loss"])
        r["relative_to_mha"] = seed_spread(np.array(r["val_loss"]) / mha - 1)  # per seed: same seed's batches
    long_runs = {}
    for name in c["long_variants"]:
        torch.manual_seed(c["seeds"][0])
        long_runs[name] = train_lm(builders[name](), train_ids, val_ids, dict(c, steps=c["long_steps"]), c["seeds"][0])
    out["runs"], out["long_runs"] = runs, long_runs
    out["long_relative_to_mha"] = {k: round(r["val_loss"] / long_runs["MHA"]["val_loss"] - 1, 4)
                                   for k, r in long_runs.items() if k != "MHA"}
    return out


def check_charlm(out: dict) -> None:
    """Mean loss relative to MHA over seeds: fewer key/value or query heads cost more; renormalised MoH matches MHA."""
    rel = {name: r["relative_to_mha"]["mean"] for name, r in out["runs"].items()}
    assert 0 < rel["GQA"] < rel["MQA"] < rel["SQA"], rel
    assert rel["GQA"] < 0.03 and rel["MQA"] < 0.05, "GQA within 3% and MQA within 5% of MHA"
    assert rel["SQA"] > 0.05, "SQA misses the 5% target at this scale"
    assert abs(rel["MoH-renorm"]) < 0.005 and rel["MoH"] > 0.02, "renormalised MoH matches MHA, the paper's weights lag"


# ---------------------------------------------------------------------------------------------
# 5. Stochastic KV routing
# ---------------------------------------------------------------------------------------------

KVROUTE = dict(LM, n_layers=4, d_model=64, n_heads=4, steps=500, p=0.5, shared=[1, 3])
KVROUTE_QUICK = dict(LM_QUICK, n_layers=4, d_model=16, n_heads=4, steps=5, p=0.5, shared=[1, 3])
SHARING = {"no_sharing": set(), "shared_1_3": {1, 3}, "shared_1_2_3": {1, 2, 3}}


def run_kvroute(quick: bool) -> dict:
    c = KVROUTE_QUICK if quick else KVROUTE
    tok, train_ids, val_ids, source = corpus(c)
    runs = {}
    for p in (0.0, c["p"]):
        seeds = []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = TransformerLM(tok.vocab_size, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"],
                                  kv_route_p=p)
            seeds.append(train_lm(model, train_ids, val_ids, c, seed, share=SHARING))
        r = {key: [s[key] for s in seeds] for key in SHARING}
        for key in ("shared_1_3", "shared_1_2_3"):
            r[key.replace("shared", "increase")] = [round(s[key] / s["no_sharing"] - 1, 4) for s in seeds]
        r["params"] = seeds[0]["params"]
        runs[f"p={p}"] = r
    D = c["d_model"] // c["n_heads"]
    full = kv_cache_bytes(n_layers=c["n_layers"], n_kv_heads=c["n_heads"], head_dim=D, seq_len=c["seq_len"])
    shared = kv_cache_bytes(n_layers=c["n_layers"] - len(c["shared"]), n_kv_heads=c["n_heads"], head_dim=D,
                            seq_len=c["seq_len"])
    return {"config": dict(c), "runs": runs, "cache_bytes_fp16": {"no_sharing": full, "shared_1_3": shared}}


def check_kvroute(out: dict) -> None:
    """Sharing half of the layers' caches costs the routed model under 1%; the plain model's loss more than doubles."""
    routed, plain = out["runs"][f"p={KVROUTE['p']}"], out["runs"]["p=0.0"]
    assert np.mean(routed["increase_1_3"]) < 0.01, "sharing 2 of 4 layers' KV should cost the routed model < 1%"
    assert min(plain["increase_1_3"]) > 1.0, "a model trained without routing cannot share"


EXPERIMENTS = {"decode": (run_decode, check_decode), "sqa_speed": (run_sqa_speed, check_sqa_speed),
               "copy": (run_copy, check_copy), "charlm": (run_charlm, check_charlm),
               "kvroute": (run_kvroute, check_kvroute)}


def report(name: str, r: dict) -> str:
    drop = ("config", "curve", "accuracy_curve")
    brief = {k: v for k, v in r.items() if k not in drop}
    for key in ("runs", "long_runs"):
        if key in brief:
            brief[key] = {k: {kk: vv for kk, vv in v.items() if kk not in drop} for k, v in brief[key].items()}
    return f"{name}: {json.dumps(brief)}"


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="attention_heads", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
