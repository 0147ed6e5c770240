"""Chapter 12's longer runs: quantisation-aware training of ternary and binary weights, and token merging on a ViT.

    python benchmarks/compress.py                # every experiment, claims checked, writes benchmarks/results/compress.json
    python benchmarks/compress.py --only qat     # one experiment; the file keeps the others
    python benchmarks/compress.py --quick        # tiny sizes, a few seconds; nothing checked or saved

Experiments (chapter 12 reads them):

* ``qat``: chapter 2's trained char-LM (benchmarks/attention_scoring.py, seed 0 softmax) fine-tuned for the same
  number of AdamW steps in float, with ternary weights (:func:`minilib.compress.ternarize`) and with binary weights
  (:func:`minilib.compress.binarize`) on every linear layer, straight-through gradients, three data-order seeds;
  held-out loss on the first 64 of chapter 2's evaluation windows, before (post-training) and after training;
* ``ast``: the same trained char-LM pruned to 2:4 on every linear layer, one-shot by magnitude
  (:func:`minilib.compress.nm_mask`) and by 200 steps of adaptive sparse training
  (:func:`minilib.compress.ast_train`: masks re-selected every step, distillation from the dense model), three
  data-order seeds; held-out loss as in ``qat``;
* ``ats``: the same ViTs with the adaptive token sampler (:func:`minilib.compress.adaptive_token_sampler`, 8
  samples) before the second block, no retraining: accuracy, and how many tokens each image keeps;
* ``tome``: a 2-block digits ViT (patch 2, 16 tokens, d_model 32) trained with three seeds, then evaluated with no
  retraining while ``r`` tokens are merged before each block by ToMe (:func:`minilib.compress.tome`) or PiToMe
  (:func:`minilib.compress.pitome`), size-weighted mean pooling at the end; accuracy and tokens processed.

One torch thread throughout.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import paired_difference, run_experiments, seed_spread  # noqa: E402
from benchmarks.attention_scoring import CONFIG as CHARLM, char_corpus, line_batches, windows  # noqa: E402
from minilib import compress  # noqa: E402
from minilib.data import digits_split, labelled_batches  # noqa: E402
from minilib.experiments import load_results, results_path  # noqa: E402
from minilib.models import TransformerLM, lm_loss  # noqa: E402
from minilib.vision import VisionTransformer  # noqa: E402

SEEDS = (0, 1, 2)
QUANTIZERS = {"float": None, "ternary": compress.ternarize, "binary": compress.binarize}
QAT = dict(steps=300, lr=1e-3, batch=32, eval_windows=64)
QAT_QUICK = dict(steps=3, lr=1e-3, batch=4, eval_windows=4)
AST = dict(steps=200, lr=1e-3, batch=16, distill=0.5, eval_windows=64)
AST_QUICK = dict(AST, steps=3, batch=4, eval_windows=4)
VIT = dict(patch=2, d_model=32, n_layers=2, n_heads=4, steps=400, lr=3e-3, batch=64, n_test=400, merges=(0, 2, 4, 5))
VIT_QUICK = dict(VIT, steps=3, merges=(0, 4))


def held_out_loss(model, quantizer, val) -> float:
    with torch.no_grad():
        if quantizer is None:
            return lm_loss(model, val).item()
        with compress.quantized_weights(model, quantizer):
            return lm_loss(model, val).item()


def trained_charlm(quick: bool, eval_windows: int):
    """Chapter 2's trained char-LM (a tiny untrained one with ``quick``), its tokenizer, the training ids, the
    newline id, the first ``eval_windows`` held-out windows and a function that builds a fresh copy of the model."""
    if quick:
        c = dict(CHARLM, n_chars=20_000, d_model=16, n_layers=1, n_heads=2, seq_len=32, eval_windows=8)
        state = None
    else:
        saved = load_results("attention_scoring")["charlm"]
        c = dict(saved["config"], eval_windows=128)
        state = {n: w.float() for n, w in torch.load(results_path("attention_scoring_softmax.pt"), weights_only=True).items()}
    tok, _, train_ids, val_ids, newline, val_starts = char_corpus(c)
    if not quick:
        val_starts = torch.tensor(saved["eval_starts"])
    val = windows(val_ids, val_starts[:eval_windows], c["seq_len"], tok.vocab_size)

    def fresh(seed: int) -> TransformerLM:
        torch.manual_seed(seed)
        model = TransformerLM(tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"], max_len=c["seq_len"])
        if state is not None:
            model.load_state_dict(state)
        return model.eval()
    return c, tok, train_ids, newline, val, fresh


def run_qat(quick: bool) -> dict:
    q = QAT_QUICK if quick else QAT
    c, tok, train_ids, newline, val, fresh = trained_charlm(quick, q["eval_windows"])
    rows = {}
    for name, quantizer in QUANTIZERS.items():
        before, after = [], []
        for seed in SEEDS:
            model = fresh(seed)
            before.append(held_out_loss(model, quantizer, val))
            opt = torch.optim.AdamW(model.parameters(), lr=q["lr"], weight_decay=0.0)
            batches = line_batches(train_ids, newline, tok.vocab_size, batch_size=q["batch"], seq_len=c["seq_len"],
                                   generator=torch.Generator().manual_seed(seed))
            model.train()
            for _ in range(q["steps"]):
                if quantizer is None:
                    loss = lm_loss(model, next(batches))
                    opt.zero_grad()
                    loss.backward()
                else:
                    with compress.quantized_weights(model, quantizer):
                        loss = lm_loss(model, next(batches))
                        opt.zero_grad()
                        loss.backward()
                opt.step()
            model.eval()
            after.append(held_out_loss(model, quantizer, val))
        rows[name] = dict(before=seed_spread(before), after=seed_spread(after))
    n_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return dict(config=dict(q, seeds=list(SEEDS), charlm=c), rows=rows, linear_weights=n_weights)


def run_ast(quick: bool) -> dict:
    a = AST_QUICK if quick else AST
    c, tok, train_ids, newline, val, fresh = trained_charlm(quick, a["eval_windows"])
    teacher = fresh(0)
    with torch.no_grad():
        dense = lm_loss(teacher, val).item()
        one_shot_model = fresh(0)
        for layer in one_shot_model.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(compress.nm_mask(layer.weight))
        one_shot = lm_loss(one_shot_model, val).item()
    trained, moved = [], []
    for seed in SEEDS:
        student = fresh(seed)
        first = {n: compress.nm_mask(mod.weight) for n, mod in student.named_modules() if isinstance(mod, torch.nn.Linear)}
        batches = line_batches(train_ids, newline, tok.vocab_size, batch_size=a["batch"], seq_len=c["seq_len"],
                               generator=torch.Generator().manual_seed(seed))
        compress.ast_train(student, teacher, batches, steps=a["steps"], lr=a["lr"], distill=a["distill"])
        with torch.no_grad():
            trained.append(lm_loss(student, val).item())
        linears = {n: mod for n, mod in student.named_modules() if isinstance(mod, torch.nn.Linear)}
        moved.append(sum(((linears[n].weight != 0) != first[n]).sum().item() for n in first) / 2
                     / sum(mask.numel() for mask in first.values()))
    return dict(config=dict(a, seeds=list(SEEDS), charlm=c), dense=dense, one_shot=one_shot, ast=seed_spread(trained),
                gap_reduction=seed_spread([(one_shot - dense) / (t - dense) for t in trained]),
                mask_moved=seed_spread(moved))


def check_ast(r: dict) -> None:
    # every seed's 2:4 model after adaptive sparse training is closer to the dense model than the one-shot mask
    assert max(r["ast"]["per_seed"]) - r["dense"] < (r["one_shot"] - r["dense"]) / 2, r


def check_qat(r: dict) -> None:
    after = {k: v["after"] for k, v in r["rows"].items()}
    # the paper's ordering after quantisation-aware training, with every seed of one beyond every seed of the next
    assert max(after["float"]["per_seed"]) < min(after["ternary"]["per_seed"]), after
    assert max(after["ternary"]["per_seed"]) < min(after["binary"]["per_seed"]), after
    assert r["rows"]["ternary"]["after"]["mean"] < r["rows"]["ternary"]["before"]["mean"] - 1.0


def trained_vit(v: dict, seed: int, xtr, ytr) -> VisionTransformer:
    """The digits ViT of config ``v`` trained with AdamW from seed ``seed``, in eval mode."""
    torch.manual_seed(seed)
    vit = VisionTransformer(8, v["patch"], v["d_model"], v["n_layers"], v["n_heads"], n_classes=10)
    opt = torch.optim.AdamW(vit.parameters(), lr=v["lr"])
    batches = labelled_batches(xtr, ytr, batch_size=v["batch"], generator=torch.Generator().manual_seed(seed))
    for _ in range(v["steps"]):
        xb, yb = next(batches)
        loss = F.cross_entropy(vit(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vit.eval()


def run_tome(quick: bool) -> dict:
    v = VIT_QUICK if quick else VIT
    (xtr, ytr), (xte, yte) = digits_split(n_test=v["n_test"], seed=0)
    rows = {f"{method} r={r}": [] for method in ("tome", "pitome") for r in v["merges"]}
    for seed in SEEDS:
        vit = trained_vit(v, seed, xtr, ytr)
        for method, merge in (("tome", compress.tome), ("pitome", compress.pitome)):
            for r in v["merges"]:
                with torch.no_grad():
                    z = vit.embed(xte)
                    size = torch.ones(z.shape[:2])
                    tokens = 0
                    for block in vit.blocks:
                        z, size = merge(z, r, size=size)
                        tokens += z.shape[1]
                        z = block(z)
                    pooled = (vit.final_norm(z) * size[..., None]).sum(1) / size.sum(1, keepdim=True)
                    acc = (vit.head(pooled).argmax(-1) == yte).float().mean().item()
                rows[f"{method} r={r}"].append(dict(accuracy=acc, tokens_per_block=tokens / len(vit.blocks)))
    n_tokens = (8 // v["patch"]) ** 2
    out = {}
    for key, runs in rows.items():
        out[key] = dict(seed_spread([run["accuracy"] for run in runs]),
                        token_fraction=runs[0]["tokens_per_block"] / n_tokens)
    top = max(v["merges"])
    return dict(config=dict(v, seeds=list(SEEDS), merges=list(v["merges"])), rows=out,
                pitome_minus_tome=paired_difference(out[f"pitome r={top}"]["per_seed"], out[f"tome r={top}"]["per_seed"]))


def check_tome(r: dict) -> None:
    rows, top = r["rows"], max(r["config"]["merges"])
    drop = {m: rows[f"{m} r=0"]["mean"] - rows[f"{m} r={top}"]["mean"] for m in ("tome", "pitome")}
    assert rows["tome r=0"]["mean"] > 0.85, rows["tome r=0"]
    assert rows[f"tome r={top}"]["token_fraction"] <= 0.65  # a third or more of the token-block work removed
    assert drop["pitome"] <= drop["tome"] + 0.005, drop


def ats_accuracy(vit, xte, yte, n_samples: int):
    """Accuracy and kept-token counts with the adaptive token sampler before the second block (no retraining):
    scores from that block's attention (mean over heads and queries, there is no class token) and value norms."""
    with torch.no_grad():
        z = vit.blocks[0](vit.embed(xte))
        block = vit.blocks[1]
        received = block.attention_weights(z).mean(dim=(1, 2))  # (B, N) attention each token receives
        _, _, v = block.attn.project_qkv(block.norm1(z), torch.arange(z.shape[1]))
        _, keep = compress.adaptive_token_sampler(z, received, v.transpose(1, 2).flatten(2), n_samples)
        correct, kept = 0, []
        for b in range(len(xte)):
            zb = block(z[b:b + 1, keep[b]])
            logits = vit.head(vit.final_norm(zb).mean(dim=1))
            correct += int(logits.argmax(-1).item() == yte[b].item())
            kept.append(int(keep[b].sum()))
    return correct / len(xte), kept


def run_ats(quick: bool) -> dict:
    v = VIT_QUICK if quick else VIT
    (xtr, ytr), (xte, yte) = digits_split(n_test=v["n_test"], seed=0)
    full, sampled, kept_all = [], [], []
    for seed in SEEDS:
        vit = trained_vit(v, seed, xtr, ytr)
        with torch.no_grad():
            full.append((vit(xte).argmax(-1) == yte).float().mean().item())
        acc, kept = ats_accuracy(vit, xte, yte, n_samples=8)
        sampled.append(acc)
        kept_all.extend(kept)
    n_tokens = (8 // v["patch"]) ** 2
    histogram = torch.bincount(torch.tensor(kept_all), minlength=n_tokens + 1).tolist()
    return dict(config=dict(v, seeds=list(SEEDS), n_samples=8), full=seed_spread(full), sampled=seed_spread(sampled),
                kept_histogram=histogram, mean_kept=sum(kept_all) / len(kept_all), n_tokens=n_tokens)


def check_ats(r: dict) -> None:
    assert sum(1 for c in r["kept_histogram"] if c) >= 3  # the kept count varies from image to image
    assert r["mean_kept"] <= r["n_tokens"] / 2  # at most half of the second block's tokens
    assert r["full"]["mean"] - r["sampled"]["mean"] <= 0.02, (r["full"], r["sampled"])


EXPERIMENTS = {"qat": (run_qat, check_qat), "ast": (run_ast, check_ast), "tome": (run_tome, check_tome), "ats": (run_ats, check_ats)}


def report(name: str, r: dict) -> str:
    if name == "qat":
        return "qat: " + ", ".join(f"{k} {v['before']['mean']:.3f} -> {v['after']['mean']:.3f}±{v['after']['std']:.3f}"
                                   for k, v in r["rows"].items())
    if name == "ast":
        return (f"ast: dense {r['dense']:.3f}, one-shot 2:4 {r['one_shot']:.3f}, after AST {r['ast']['mean']:.3f}"
                f"±{r['ast']['std']:.3f} (gap {r['gap_reduction']['mean']:.0f}x smaller)")
    if name == "ats":
        return (f"ats: full {r['full']['mean']:.3f}±{r['full']['std']:.3f}, sampled {r['sampled']['mean']:.3f}"
                f"±{r['sampled']['std']:.3f}, mean kept {r['mean_kept']:.2f} of {r['n_tokens']}")
    return "tome: " + ", ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f} ({v['token_fraction']:.2f} tokens)"
                                for k, v in r["rows"].items())


def main(argv=None):
    run_experiments(EXPERIMENTS, name="compress", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
