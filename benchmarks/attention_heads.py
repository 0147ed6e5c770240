"""Head layouts and the KV cache (chapter 02): the measurements and training runs behind the chapter's claims.

    python benchmarks/attention_heads.py                # everything, writes benchmarks/results/attention_heads.json
    python benchmarks/attention_heads.py --only charlm  # one of: decode, sqa_speed, copy, charlm, kvroute

- ``decode``: one decoding step with ``S`` cached positions for MHA / GQA / MQA / SQA layouts of a 16-head,
  ``d_model = 1024`` layer (median of repeats): the cache read alone (``grouped_attention``) and the whole
  ``MultiHeadAttention`` step with its ``KVCache``.
- ``sqa_speed``: forward time at ``L = 2048`` for ``n_q_heads = H, H/2, H/4`` (Sparse Query Attention,
  :cite:`filipek2025sqa`), with the attention matmul FLOPs counted by ``torch.utils.flop_counter``.
- ``copy``: MHA vs GQA (``H_kv = 2``) vs MQA (``H_kv = 1``), 8 query heads, on ``minilib.data.copy_task``: test
  accuracy every 10 steps and at the end. (Associative recall was tried first: at this size even MHA stayed at
  25-53% accuracy after 800 steps, so it could not rank the layouts within the time budget.)
- ``charlm``: 2-layer, 8-head character LMs on ``tiny_corpus``: MHA, GQA (``H_kv = 2``), MQA, SQA
  (``n_q_heads = n_kv_heads = 2``) and Mixture-of-Head attention (top-6 of 8 routed heads, :cite:`jin2024moh`;
  the paper's weights and, as ``MoH-renorm``, the released code's), equal data and 300 steps, validation loss;
  MHA, SQA and MoH again for 600 steps (``long_runs``).
- ``kvroute``: 4-layer character LM trained with stochastic KV routing ``p = 0.5`` and without (``p = 0``)
  :cite:`stochastickv2025`; validation loss with no sharing and with layers {1, 3} reusing the layer below's KV.

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON). Timings depend on the machine and
its load; the JSON records wall and CPU seconds for each experiment. The saved run took about 6 minutes of CPU on a
2-core machine shared with other jobs (decode 4 s, sqa_speed 7 s, copy 36 s, charlm 225 s, kvroute 75 s); the
decode entry was then rerun alone with ``--only decode``. With --only, the other experiments' entries already in
the JSON are kept.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import downsample, run_experiments  # noqa: E402
from minilib.attention import (  # noqa: E402
    KVCache, MixtureOfHeadAttention, MultiHeadAttention, attend, grouped_attention, kv_cache_bytes)
from minilib.data import (  # noqa: E402
    CharTokenizer, copy_task, lm_batches, lm_eval_windows, masked_targets, tiny_corpus, train_val_split)
from minilib.models import TransformerLM, lm_loss, train  # noqa: E402



def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)



# ---------------------------------------------------------------------------------------------
# 1. Decode step vs cache layout
# ---------------------------------------------------------------------------------------------

DECODE = dict(d_model=1024, n_heads=16, seq_lens=[512, 1024, 2048, 4096, 8192], repeats=21,
              layouts={"MHA": dict(n_kv_heads=16), "GQA": dict(n_kv_heads=4), "MQA": dict(n_kv_heads=1),
                       "SQA": dict(n_q_heads=4, n_kv_heads=4)})


def run_decode(quick: bool = False) -> dict:
    """Median times of one decoding step with ``S`` cached positions, per layout.

    ``attention_ms``: the attention read alone, :func:`grouped_attention` of one query token over the cache (each
    key/value head read once for its group of query heads, as a decoding kernel does). ``module_ms``: the whole
    :class:`MultiHeadAttention` step (project the token, append it to the :class:`KVCache`, which copies the cache,
    expand the key/value heads to the query heads, attend, project). The layouts are timed in turn inside each
    repeat, so a change in the machine's load hits all of them alike.
    """
    c = DECODE
    modules = {}
    for name, kw in c["layouts"].items():
        torch.manual_seed(0)
        modules[name] = MultiHeadAttention(c["d_model"], c["n_heads"], **kw).eval()
    x = torch.randn(1, 1, c["d_model"])
    out = {"config": dict(c), **{key: {name: {} for name in modules}
                                 for key in ("attention_ms", "module_ms", "cache_bytes_fp32")}}
    for S in c["seq_lens"]:
        past = {name: torch.randn(2, 1, m.n_kv_heads, S, m.head_dim) for name, m in modules.items()}  # keys, values
        query = {name: torch.randn(1, m.n_heads, 1, m.head_dim) for name, m in modules.items()}
        times = {(key, name): [] for key in ("attention_ms", "module_ms") for name in modules}
        with torch.no_grad():
            for rep in range(c["repeats"] + 1):  # the first round warms up
                for name, module in modules.items():
                    k, v = past[name]
                    start = time.perf_counter()
                    grouped_attention(query[name], k, v)
                    middle = time.perf_counter()
                    cache = KVCache()
                    cache.append(k[:, :, 1:], v[:, :, 1:])
                    cache_ready = time.perf_counter()
                    module(x, cache=cache)
                    if rep:
                        times["attention_ms", name].append(middle - start)
                        times["module_ms", name].append(time.perf_counter() - cache_ready)
        for name, m in modules.items():
            for key in ("attention_ms", "module_ms"):
                out[key][name][str(S)] = round(1e3 * statistics.median(times[key, name]), 3)
            out["cache_bytes_fp32"][name][str(S)] = kv_cache_bytes(n_layers=1, n_kv_heads=m.n_kv_heads,
                                                                   head_dim=m.head_dim, seq_len=S, dtype=torch.float32)
    return out


def check_decode(out: dict) -> None:
    ms = out["attention_ms"]
    for S in map(str, DECODE["seq_lens"][-2:]):
        assert ms["MHA"][S] > ms["GQA"][S] > ms["MQA"][S], f"the cache read should shrink with H_kv at S={S}"


# ---------------------------------------------------------------------------------------------
# 2. Sparse Query Attention: forward time and counted FLOPs at L = 2048
# ---------------------------------------------------------------------------------------------

SQA = dict(d_model=128, n_heads=8, seq_len=2048, q_heads=[8, 4, 2], repeats=5)


def run_sqa_speed(quick: bool = False) -> dict:
    c = SQA
    x = torch.randn(1, c["seq_len"], c["d_model"], generator=torch.Generator().manual_seed(0))
    out = {"config": dict(c), "ms": {}, "attention_flops": {}}
    for hq in c["q_heads"]:
        torch.manual_seed(0)
        module = MultiHeadAttention(c["d_model"], c["n_heads"], n_q_heads=hq, n_kv_heads=hq).eval()
        with torch.no_grad():
            out["ms"][str(hq)] = round(1e3 * median_seconds(lambda: module(x), c["repeats"]), 1)
            q, k, v = module.project_qkv(x, torch.arange(c["seq_len"]))
            with FlopCounterMode(display=False) as counter:
                attend(q, k, v, causal=True)
        out["attention_flops"][str(hq)] = counter.get_total_flops()
    H = c["n_heads"]
    out["speedup_quarter"] = round(out["ms"][str(H)] / out["ms"][str(H // 4)], 2)
    return out


def check_sqa_speed(out: dict) -> None:
    H, L, D = SQA["n_heads"], SQA["seq_len"], SQA["d_model"] // SQA["n_heads"]
    for hq, flops in out["attention_flops"].items():
        assert flops == 4 * int(hq) * L * L * D
    assert out["speedup_quarter"] >= 2.0, "H_q = H/4 should run the forward at least 2x faster at L = 2048"


# ---------------------------------------------------------------------------------------------
# 3. MHA vs GQA vs MQA on the copy task
# ---------------------------------------------------------------------------------------------

COPY = dict(seq_len=32, vocab_size=32, d_model=64, n_layers=2, n_heads=8, kv_heads=[8, 2, 1], steps=100, batch=32,
            lr=3e-3, warmup=10, n_test=500, eval_every=10, seed=0)


def copy_batches(c: dict, generator: torch.Generator):
    while True:
        b = copy_task(c["batch"], seq_len=c["seq_len"], vocab_size=c["vocab_size"], generator=generator)
        yield b.inputs, masked_targets(b.targets, b.mask)


@torch.no_grad()
def copy_accuracy(model, batch) -> float:
    """Fraction of copied tokens predicted exactly (argmax), over the answer half of each sequence."""
    return (model(batch.inputs).argmax(-1) == batch.targets)[batch.mask].float().mean().item()


def run_copy(quick: bool = False) -> dict:
    c = COPY
    test = copy_task(c["n_test"], seq_len=c["seq_len"], vocab_size=c["vocab_size"],
                     generator=torch.Generator().manual_seed(12345))
    runs = {}
    for hkv in c["kv_heads"]:
        torch.manual_seed(c["seed"])
        model = TransformerLM(c["vocab_size"] + 1, c["d_model"], c["n_layers"], c["n_heads"], n_kv_heads=hkv,
                              max_len=2 * c["seq_len"])
        accuracy = []  # test accuracy every eval_every steps, measured before the step's update

        def loss_with_probe(m, batch):
            if len(accuracy) * c["eval_every"] <= loss_with_probe.step:
                accuracy.append(round(copy_accuracy(m, test), 4))
            loss_with_probe.step += 1
            return lm_loss(m, batch)

        loss_with_probe.step = 0
        start = time.perf_counter()
        losses = train(model, copy_batches(c, torch.Generator().manual_seed(c["seed"])), steps=c["steps"], lr=c["lr"],
                       warmup_steps=c["warmup"], loss_fn=loss_with_probe, progress=False)
        seconds = time.perf_counter() - start
        final = copy_accuracy(model.eval(), test)
        reached = next((i * c["eval_every"] for i, a in enumerate(accuracy) if a >= 0.99), None)
        name = "MHA" if hkv == c["n_heads"] else "MQA" if hkv == 1 else f"GQA{hkv}"
        runs[name] = dict(n_kv_heads=hkv, cache_fraction=hkv / c["n_heads"], accuracy=round(final, 4),
                          steps_to_99=reached, accuracy_curve=accuracy, train_seconds=round(seconds, 1),
                          params=sum(p.numel() for p in model.parameters()), curve=downsample(losses, 40))
    return {"config": dict(c), "runs": runs}


def check_copy(out: dict) -> None:
    acc = {k: r["accuracy"] for k, r in out["runs"].items()}
    assert acc["MHA"] > 0.99, "MHA should learn to copy"


# ---------------------------------------------------------------------------------------------
# 4. Character LMs: MHA vs SQA vs MoH
# ---------------------------------------------------------------------------------------------

LM = dict(n_chars=200_000, val_frac=0.1, seq_len=64, batch=32, d_model=96, n_layers=2, n_heads=8, steps=300, lr=3e-3,
          warmup=20, seed=0, sqa_q_heads=2, gqa_kv_heads=2, moh_top_k=6, long_steps=600,
          long_variants=["MHA", "SQA", "MoH"])


def corpus():
    text, source = tiny_corpus(LM["n_chars"], seed=0)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), LM["val_frac"])
    return tok, train_ids, val_ids, source


def train_lm(model, train_ids, val_ids, c: dict, *, share=None) -> dict:
    start = time.perf_counter()
    losses = train(model, lm_batches(train_ids, batch_size=c["batch"], seq_len=c["seq_len"],
                                     generator=torch.Generator().manual_seed(c["seed"])),
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
    return dict(val, params=sum(p.numel() for p in model.parameters()), train_seconds=round(seconds, 1),
                curve=downsample(losses, 40))


def run_charlm(quick: bool = False) -> dict:
    c = LM
    tok, train_ids, val_ids, source = corpus()

    def lm_with(**kw):
        return lambda: TransformerLM(tok.vocab_size, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"], **kw)

    moh = dict(attention=MixtureOfHeadAttention, attn_kwargs=dict(top_k=c["moh_top_k"]))
    builders = {
        "MHA": lm_with(),
        "GQA": lm_with(n_kv_heads=c["gqa_kv_heads"]),
        "MQA": lm_with(n_kv_heads=1),
        "SQA": lm_with(n_kv_heads=c["sqa_q_heads"], attn_kwargs=dict(n_q_heads=c["sqa_q_heads"])),
        "MoH": lm_with(**moh),
        "MoH-renorm": lm_with(attention=MixtureOfHeadAttention, attn_kwargs=dict(top_k=c["moh_top_k"], renormalize=True)),
    }
    out = {"config": dict(c), "entropy_rate": round(source.entropy_rate_per_char(), 4)}
    for key, steps, names in (("runs", c["steps"], list(builders)), ("long_runs", c["long_steps"], c["long_variants"])):
        runs = {}
        for name in names:
            torch.manual_seed(c["seed"])
            runs[name] = train_lm(builders[name](), train_ids, val_ids, dict(c, steps=steps))
        mha = runs["MHA"]["val_loss"]
        out[key] = runs
        out[key.replace("runs", "relative_to_mha")] = {k: round(r["val_loss"] / mha - 1, 4) for k, r in runs.items()
                                                       if k != "MHA"}
    return out


def check_charlm(out: dict) -> None:
    rel = out["relative_to_mha"]
    assert abs(rel["GQA"]) < 0.02, "GQA should end within 2% of MHA"


# ---------------------------------------------------------------------------------------------
# 5. Stochastic KV routing
# ---------------------------------------------------------------------------------------------

KVROUTE = dict(LM, n_layers=4, d_model=64, n_heads=4, steps=500, p=0.5, shared=[1, 3])


def run_kvroute(quick: bool = False) -> dict:
    c = KVROUTE
    tok, train_ids, val_ids, source = corpus()
    runs = {}
    for p in (0.0, c["p"]):
        torch.manual_seed(c["seed"])
        model = TransformerLM(tok.vocab_size, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"],
                              kv_route_p=p)
        runs[f"p={p}"] = train_lm(model, train_ids, val_ids, c,
                                  share={"no_sharing": set(), "shared_1_3": set(c["shared"]), "shared_1_2_3": {1, 2, 3}})
        r = runs[f"p={p}"]
        r["increase_1_3"] = round(r["shared_1_3"] / r["no_sharing"] - 1, 4)
        r["increase_1_2_3"] = round(r["shared_1_2_3"] / r["no_sharing"] - 1, 4)
    D = c["d_model"] // c["n_heads"]
    full = kv_cache_bytes(n_layers=c["n_layers"], n_kv_heads=c["n_heads"], head_dim=D, seq_len=c["seq_len"])
    shared = kv_cache_bytes(n_layers=c["n_layers"] - len(c["shared"]), n_kv_heads=c["n_heads"], head_dim=D,
                            seq_len=c["seq_len"])
    return {"config": dict(c), "runs": runs, "cache_bytes_fp16": {"no_sharing": full, "shared_1_3": shared}}


def check_kvroute(out: dict) -> None:
    routed, plain = out["runs"][f"p={KVROUTE['p']}"], out["runs"]["p=0.0"]
    assert routed["increase_1_3"] < 0.03, "sharing 2 of 4 layers' KV should cost the routed model < 3%"


EXPERIMENTS = {"decode": (run_decode, check_decode), "sqa_speed": (run_sqa_speed, check_sqa_speed),
               "copy": (run_copy, check_copy), "charlm": (run_charlm, check_charlm),
               "kvroute": (run_kvroute, check_kvroute)}


def report(name: str, r: dict) -> str:
    drop = ("config", "curve")
    brief = {k: v for k, v in r.items() if k not in drop}
    if "runs" in brief:
        brief["runs"] = {k: {kk: vv for kk, vv in v.items() if kk not in drop} for k, v in brief["runs"].items()}
    return f"{name}: {json.dumps(brief)}"


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="attention_heads", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
