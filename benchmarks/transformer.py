"""Training experiments for chapter 01's Transformer variants (minilib.variants), with their claims asserted.

    python benchmarks/transformer.py                 # all four, writes benchmarks/results/transformer.json
    python benchmarks/transformer.py --only gated    # one of: reversal, minimal, gated, dualstream

Each experiment is seeded and draws its data from ``minilib.data`` (``reverse_task``, ``delayed_recall``,
``tiny_corpus`` with ``CharTokenizer`` and ``lm_batches``); the scikit-learn digits are the one outside data set.
Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON; it records the count as
``threads``). On one idle core each experiment took 10-54 s (``seconds`` and ``cpu_seconds`` in the JSON); two
threads on a machine that another job also uses were several times slower. The gated/Post-LN comparison is
chaotic: the thread count changes the rounding and with it the Post-LN trajectory (on 2 threads it leaves chance
near the end, still below the asserted 50% accuracy). With --only, the other experiments' entries already in the
JSON file are kept.
"""
from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import downsample, run_experiments  # noqa: E402
from minilib.data import (  # noqa: E402
    IGNORE_INDEX, CharTokenizer, delayed_recall, digits_split, labelled_batches, lm_batches, lm_eval_windows, masked_targets,
    reverse_task, tiny_corpus, train_val_split)
from minilib.models import TransformerLM, evaluate, train  # noqa: E402
from minilib.variants import (  # noqa: E402
    DualStreamLM, EncoderDecoderTransformer, GatedTransformerLM, MinimalTransformer, count_parameters)




# ---------------------------------------------------------------------------------------------
# 1. Sequence reversal with the encoder-decoder
# ---------------------------------------------------------------------------------------------

REV = dict(length=16, n_symbols=16, d_model=64, n_layers=2, n_heads=4, d_ff=128, steps=400, batch=64, lr=2e-3,
           warmup=30, n_test=1000)


def seq2seq_loss(model, batch):
    """Mean cross-entropy of the decoder on a :class:`minilib.data.Seq2SeqBatch` (every target counts)."""
    logits = model(batch.src, batch.tgt_in)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt_out.reshape(-1))


def run_reversal(quick: bool = False) -> dict:
    c = REV
    torch.manual_seed(0)
    model = EncoderDecoderTransformer(c["n_symbols"] + 1, c["d_model"], c["n_layers"], c["n_heads"], d_ff=c["d_ff"],
                                      max_len=c["length"] + 1)
    task = dict(seq_len=c["length"], vocab_size=c["n_symbols"])
    gen = torch.Generator().manual_seed(1)
    data = (reverse_task(c["batch"], generator=gen, **task) for _ in itertools.count())
    losses = train(model, data, steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], loss_fn=seq2seq_loss,
                   weight_decay=0.0, progress=False)
    test = reverse_task(c["n_test"], generator=torch.Generator().manual_seed(123), **task)
    pred = model.greedy_decode(test.src, c["length"], bos_id=c["n_symbols"])
    correct = pred == test.tgt_out
    out = dict(config=c, params=count_parameters(model), token_accuracy=correct.float().mean().item(),
               sequence_accuracy=correct.all(dim=1).float().mean().item(), final_loss=float(np.mean(losses[-20:])),
               curve=downsample(losses))
    return out


def check_reversal(out: dict) -> None:
    c = out["config"]
    assert out["token_accuracy"] >= 0.99, (
        f"reversal: greedy token accuracy {out['token_accuracy']:.4f} < 0.99 after {c['steps']} steps")


# ---------------------------------------------------------------------------------------------
# 2. Minimal transformer on the 8x8 digits
# ---------------------------------------------------------------------------------------------

MIN = dict(d_model=32, n_layers=2, n_heads=1, d_ff=128, steps=600, batch=64, lr=3e-3, n_test=359, seeds=[0, 1],
           tokens="8 pixel rows of 8 pixels")
MIN_VARIANTS = {
    "full": dict(mlp=True, similarity="qk", value_out=True),
    "no_mlp": dict(mlp=False, similarity="qk", value_out=True),
    "minimal": dict(mlp=False, similarity="symmetric", value_out=False),
}


def classify_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def run_minimal(quick: bool = False) -> dict:
    c = MIN
    (xtr, ytr), (xte, yte) = digits_split(n_test=c["n_test"], seed=0)
    out = dict(config=c, n_train=len(ytr), n_test=len(yte), variants={})
    for name, flags in MIN_VARIANTS.items():
        accs = []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = MinimalTransformer(8, 10, 8, c["d_model"], c["n_layers"], c["n_heads"], d_ff=c["d_ff"], **flags)
            train(model, labelled_batches(xtr, ytr, batch_size=c["batch"], generator=torch.Generator().manual_seed(100 + seed)), steps=c["steps"],
                  lr=c["lr"], warmup_steps=c["steps"] // 10, loss_fn=classify_loss, progress=False)
            model.eval()
            with torch.no_grad():
                accs.append((model(xte).argmax(-1) == yte).float().mean().item())
        out["variants"][name] = dict(flags=flags, params=count_parameters(model), test_accuracy=float(np.mean(accs)),
                                     test_accuracy_per_seed=accs)
    full, minimal = out["variants"]["full"], out["variants"]["minimal"]
    out["param_reduction"] = 1 - minimal["params"] / full["params"]
    out["accuracy_gap_points"] = 100 * (full["test_accuracy"] - minimal["test_accuracy"])
    return out


def check_minimal(out: dict) -> None:
    full, minimal = out["variants"]["full"], out["variants"]["minimal"]
    assert out["param_reduction"] >= 0.80, f"minimal: only {out['param_reduction']:.1%} fewer parameters than the full block"
    assert out["accuracy_gap_points"] <= 3.0, (
        f"minimal: test accuracy {minimal['test_accuracy']:.4f} is {out['accuracy_gap_points']:.2f} points below "
        f"the full block's {full['test_accuracy']:.4f} (allowed 3)")


# ---------------------------------------------------------------------------------------------
# 3. Gated (GTrXL) vs Post-LN stack on delayed recall, no warm-up
# ---------------------------------------------------------------------------------------------

GATED = dict(n_values=8, delay=12, d_model=32, n_layers=12, n_heads=2, d_ff=64, steps=300, batch=32,
             lr=1e-2, warmup=0, grad_clip=None, gate_bias=2.0, n_test=1000)


def recall_batch(batch: int, gen: torch.Generator, c: dict):
    """One :func:`minilib.data.delayed_recall` batch as ``(inputs, targets)`` for ``lm_loss``: only the recalled value counts."""
    b = delayed_recall(batch, delay=c["delay"], vocab_size=c["n_values"], generator=gen)
    return b.inputs, masked_targets(b.targets, b.mask)


def recall_accuracy(model, batch) -> float:
    """Greedy accuracy at the positions whose target counts (targets not ``IGNORE_INDEX``)."""
    x, y = batch
    counted = y != IGNORE_INDEX
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(-1)[counted] == y[counted]).float().mean().item()
    model.train()
    return acc


def run_gated(quick: bool = False) -> dict:
    c = GATED
    vocab = c["n_values"] + 2  # content, FILL, QUERY
    makers = {
        "gated": lambda: GatedTransformerLM(vocab, c["d_model"], c["n_layers"], c["n_heads"], d_ff=c["d_ff"],
                                            gate_bias=c["gate_bias"]),
        "post_ln": lambda: TransformerLM(vocab, c["d_model"], c["n_layers"], c["n_heads"], d_ff=c["d_ff"], norm="layer",
                                         pre_norm=False, ffn="gelu", pos="rope", max_len=c["delay"] + 2),
    }
    test = recall_batch(c["n_test"], torch.Generator().manual_seed(999), c)
    out = dict(config=c, chance_accuracy=1 / c["n_values"], chance_loss=math.log(c["n_values"]), models={})
    for name, make in makers.items():
        torch.manual_seed(0)
        model = make()
        gen = torch.Generator().manual_seed(1)
        data = (recall_batch(c["batch"], gen, c) for _ in itertools.count())
        losses = train(model, data, steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], grad_clip=c["grad_clip"], progress=False)
        out["models"][name] = dict(params=count_parameters(model), final_loss=float(np.mean(losses[-20:])),
                                   test_loss=evaluate(model, iter([test]), n_batches=1), test_accuracy=recall_accuracy(model, test),
                                   curve=downsample(losses))
    out["post_ln_stalled"] = out["models"]["post_ln"]["test_accuracy"] <= 0.5
    return out


def check_gated(out: dict) -> None:
    gated = out["models"]["gated"]
    assert gated["test_accuracy"] >= 0.95, f"gated: recall accuracy {gated['test_accuracy']:.3f} < 0.95"
    assert out["post_ln_stalled"], f"post_ln: recall accuracy {out['models']['post_ln']['test_accuracy']:.3f} > 0.5 (expected a stall)"


# ---------------------------------------------------------------------------------------------
# 4. Dual-stream head mixing on the tiny_corpus char-LM
# ---------------------------------------------------------------------------------------------

DUAL = dict(corpus="tiny_corpus", n_chars=200_000, corpus_seed=0, val_frac=0.1, seq_len=64, d_token=32, d_context=32,
            n_layers=2, n_heads=4, d_ff=128, steps=600, batch=32, lr=3e-3, warmup=40)


def run_dualstream(quick: bool = False) -> dict:
    c = DUAL
    text, source = tiny_corpus(c["n_chars"], seed=c["corpus_seed"])
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), c["val_frac"])
    val = lm_eval_windows(val_ids, seq_len=c["seq_len"])
    out = dict(config=c, vocab_size=tok.vocab_size, n_val_windows=len(val[0]),
               entropy_rate=source.entropy_rate_per_char(), unigram_entropy=source.char_unigram_entropy(), runs={})
    for mixing in ("dense", "kronecker", "independent"):
        torch.manual_seed(0)
        model = DualStreamLM(tok.vocab_size, c["d_token"], c["d_context"], c["n_layers"], c["n_heads"], mixing=mixing,
                             d_ff=c["d_ff"])
        data = lm_batches(train_ids, batch_size=c["batch"], seq_len=c["seq_len"], generator=torch.Generator().manual_seed(1))
        losses = train(model, data, steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"], progress=False)
        out["runs"][mixing] = dict(params=count_parameters(model), val_loss=evaluate(model, iter([val]), n_batches=1),
                                   curve=downsample(losses))
    v = {k: r["val_loss"] for k, r in out["runs"].items()}
    out["ordering_holds"] = v["dense"] <= v["kronecker"] <= v["independent"]
    out["relative_to_dense"] = {k: v[k] / v["dense"] - 1 for k in v}
    return out


def check_dualstream(out: dict) -> None:
    v = {k: r["val_loss"] for k, r in out["runs"].items()}
    for k, loss in v.items():
        assert loss < out["unigram_entropy"], f"dualstream: {k} validation loss {loss:.4f} >= unigram entropy {out['unigram_entropy']:.4f}"
    assert v["dense"] <= min(v["kronecker"], v["independent"]), f"dualstream: dense is not the lowest loss: {v}"
    # kronecker <= independent is recorded in out["ordering_holds"], not asserted: on this corpus it fails (kronecker is higher).


EXPERIMENTS = {"reversal": (run_reversal, check_reversal), "minimal": (run_minimal, check_minimal),
               "gated": (run_gated, check_gated), "dualstream": (run_dualstream, check_dualstream)}


def report(name: str, r: dict) -> str:
    if name == "reversal":
        return (f"reversal   L={r['config']['length']} vocab={r['config']['n_symbols']}: greedy token acc {r['token_accuracy']:.4f}, "
                f"sequence acc {r['sequence_accuracy']:.4f}, params {r['params']}")
    if name == "minimal":
        rows = [f"  {k:10s} params {v['params']:6d}  test acc {v['test_accuracy']:.4f}" for k, v in r["variants"].items()]
        return "minimal    digits (mean of seeds):\n" + "\n".join(rows) + (
            f"\n  reduction {r['param_reduction']:.1%}, gap {r['accuracy_gap_points']:.2f} points")
    if name == "gated":
        rows = [f"  {k:8s} test loss {v['test_loss']:.3f}  recall acc {v['test_accuracy']:.3f}" for k, v in r["models"].items()]
        return f"gated      12 layers, no warm-up (chance acc {r['chance_accuracy']:.3f}, loss {r['chance_loss']:.3f}):\n" + "\n".join(rows)
    rows = [f"  {k:12s} params {v['params']:6d}  val loss {v['val_loss']:.4f}  ({r['relative_to_dense'][k]:+.1%} vs dense)"
            for k, v in r["runs"].items()]
    return (f"dualstream char-LM (entropy rate {r['entropy_rate']:.4f} nats, unigram {r['unigram_entropy']:.4f}):\n"
            + "\n".join(rows) + f"\n  ordering dense <= kronecker <= independent: {r['ordering_holds']}")


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="transformer", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
