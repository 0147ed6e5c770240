"""Chapter 08, looped and elastic depth: the trained toy comparisons behind the chapter's claims.

    python benchmarks/looped.py                  # every experiment: writes benchmarks/results/looped.json
    python benchmarks/looped.py --only matformer # one experiment (keeps the others' saved results)
    python benchmarks/looped.py --quick          # tiny sizes, a smoke run; nothing saved

Character-LM experiments use chapter 01's generated corpus (``tiny_corpus``, 100k characters) in windows of 32
characters that open a line (``attention_scoring.char_corpus``), d_model 64, 4 heads, RoPE, batches of 16, 120-150 steps; loss on 128 held-out
windows; three seeds (initialisation and batches) everywhere.

``matformer``: 4-layer MatFormer LM (SwiGLU, d_ff 128, nested widths 16/32/64/128) trained with the sum of the four
widths' losses at every step, against four separately trained models of those FFN widths (same steps). Each
extracted width's loss vs its own model's, and the losses of four Mix'n'Match models (one width per layer)
:cite:`devvrit2023matformer`.

``relaxed``: a trained 4-layer LM tied into 2 shared blocks x 2 loops (cycled), initialised from the layers' mean
(and the truncated SVD of each layer's residual for the LoRA), then trained 200 steps at LoRA rank 0 and 8
:cite:`bae2025relaxed`; the loss gap to the 4-layer teacher before and after.

``reachability``: k-hop pointer chasing on random permutations of 10 nodes (10 edge tokens ``src -> dst`` in random
order, then a query token ``(source, k)``; the answer is the node k hops on). A depth-recurrent block (d_model 64,
LayerScale 0.1, :class:`minilib.looped.DepthRecurrent`) thinks T = k steps, trained on k = 1..4; against a fixed
4-layer model of d_model 32 (the same parameters within a few percent). Accuracy on k = 1..6 at T = 1..8
:cite:`depthrecurrent2026`.

``algoformer``: in-context linear regression (d = 4, n = 20 examples, w ~ N(0, I), the prompts of
:func:`minilib.icl.regression_prompts`), three models with the same three blocks: a standard 3-layer stack, a vanilla looped model
(the 3-block group looped twice) and an AlgoFormer (pre-block, one block looped 4 times, post-block); 6 block
applications for both looped models. Test MSE on 2048 prompts :cite:`gao2024algoformer`.

``recurrent``: running parity over 64 bits: a 2-layer :class:`minilib.looped.RecurrentTransformer` (d_model 48)
vs a 4-layer causal Transformer (d_model 32, about the same parameters); per-position accuracy on held-out
sequences :cite:`recurrenttransformer2026`.

``cross_layer``: 6-layer LMs: vanilla, depth-attention, static and gated value residual, and a ladder residual
(offset 1) :cite:`depthattention2026`, :cite:`gunasekaran2026satformer`, :cite:`zhang2025ladder`; the vanilla
models then get least-squares shortcuts from every layer to the last, fitted on training windows and scored on
held-out ones by agreement of the top-1 prediction with the full model's :cite:`yomdin2024jump`.

``sliced``: digits ViT (4x4 patches, d_model 32), 2 blocks vs the same 2 blocks each applied twice
(:func:`minilib.looped.recursive_forward`), 400 steps; test accuracy and the counted attention scores of
group-sliced attention :cite:`shen2022sliced`.

``early_exit``: three vanilla 6-layer LMs (the ``cross_layer`` recipe, weights rounded to float16 as saved), per-token
confidence exit (:func:`minilib.models.looped.early_exit`) read through the identity (logit lens) or through least-squares
shortcuts fitted on 128 training windows :cite:`yomdin2024jump`; for each threshold the mean exit layer, the top-1
agreement with the full model and the loss on the held-out windows. Seed 0's weights and shortcuts are saved (float16)
as ``results/looped_early_exit.pt``.

``coconut``: graph reachability (8 nodes, 10 random directed edges as token pairs, then SEP, source, target; half the
targets reachable): a 2-layer LM (d_model 32) answers yes/no after 0 or 3 continuous thoughts
(:func:`minilib.models.looped.continuous_thought`), trained 400 steps end to end without Coconut's language-CoT
curriculum :cite:`hao2024coconut`, :cite:`zhu2025superposition`; test accuracy on 1024 graphs, by hop distance.

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import artifact_path, run_experiments  # noqa: E402
from benchmarks.attention_scoring import char_corpus, line_starts, windows  # noqa: E402
from minilib import looped as lp  # noqa: E402
from minilib.attention import DepthMemory  # noqa: E402
from minilib.data import digits_split, labelled_batches  # noqa: E402
from minilib.icl import prompt_tokens, regression_prompts  # noqa: E402
from minilib.models import Block, TransformerConfig, TransformerLM, lm_loss, train  # noqa: E402
from minilib.models import looped as ml  # noqa: E402
from minilib.vision import VisionTransformer  # noqa: E402

SEEDS = (0, 1, 2)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- character LM data --------------------------------------------------------------------------------

CHAR = dict(n_chars=100_000, seq_len=32, eval_windows=128, batch=16, lr=3e-3, warmup=10)
QUICK_CHAR = dict(n_chars=20_000, eval_windows=8, batch=4)


def char_data(c: dict):
    tok, _, train_ids, val_ids, newline, val_starts = char_corpus(c)
    starts = line_starts(train_ids, newline, c["seq_len"])
    return tok, train_ids, starts, windows(val_ids, val_starts, c["seq_len"], tok.vocab_size)


def char_batches(train_ids, starts, c, bos, seed):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield windows(train_ids, starts[torch.randint(len(starts), (c["batch"],), generator=gen)], c["seq_len"], bos)


def char_lm(vocab: int, n_layers: int, seed: int, model_cls=TransformerLM, **options) -> TransformerLM:
    torch.manual_seed(seed)
    return model_cls(TransformerConfig(vocab_size=vocab + 1, d_model=64, n_layers=n_layers, n_heads=4, max_len=64, **options))


@torch.no_grad()
def val_loss(model, val, loss_fn=lm_loss) -> float:
    model.eval()
    loss = loss_fn(model, val).item()
    model.train()
    return round(loss, 4)


# --- matformer ------------------------------------------------------------------------------------------

def run_matformer(quick: bool) -> dict:
    c = dict(CHAR, **(QUICK_CHAR if quick else {}), steps=3 if quick else 120, n_layers=4, d_ff=128,
             mixes=[[16, 32, 32, 16], [32, 64, 64, 32], [64, 128, 128, 64], [16, 128, 16, 128]])
    tok, train_ids, starts, val = char_data(c)
    widths = lp.nested_widths(c["d_ff"])

    def joint_loss(model, batch):
        total = 0.0
        for m in widths:
            ml.set_ffn_widths(model, m)
            total = total + lm_loss(model, batch)
        ml.set_ffn_widths(model, c["d_ff"])
        return total / len(widths)

    out = {"config": {k: v for k, v in c.items()}, "widths": list(widths), "nested": [], "separate": [], "mix": [],
           "params": {}, "mix_params": []}
    for seed in SEEDS:
        model = char_lm(tok.vocab_size, c["n_layers"], seed, ffn="matformer", d_ff=c["d_ff"])
        train(model, char_batches(train_ids, starts, c, tok.vocab_size, seed), steps=c["steps"], lr=c["lr"],
              warmup_steps=min(c["warmup"], c["steps"] - 1), loss_fn=joint_loss, progress=False)
        out["nested"].append([val_loss(ml.extract_submodel(model, m), val) for m in widths])
        out["mix"].append([val_loss(ml.extract_submodel(model, mix), val) for mix in c["mixes"]])
        out["params"] = {str(m): n_params(ml.extract_submodel(model, m)) for m in widths}
        out["mix_params"] = [n_params(ml.extract_submodel(model, mix)) for mix in c["mixes"]]
        separate = []
        for m in widths:
            alone = char_lm(tok.vocab_size, c["n_layers"], seed, ffn="swiglu", d_ff=m)
            train(alone, char_batches(train_ids, starts, c, tok.vocab_size, seed), steps=c["steps"], lr=c["lr"],
                  warmup_steps=min(c["warmup"], c["steps"] - 1), progress=False)
            separate.append(val_loss(alone, val))
            assert n_params(alone) == out["params"][str(m)]
        out["separate"].append(separate)
        print(f"  seed {seed}: nested {out['nested'][-1]} separate {separate} mix {out['mix'][-1]}", flush=True)
    return out


def check_matformer(r: dict) -> None:
    nested, separate = np.mean(r["nested"], 0), np.mean(r["separate"], 0)
    assert (nested[:-1] >= nested[1:]).all(), "larger extracted widths should not be worse"
    assert len(separate) == len(r["widths"])


# --- relaxed recursion ------------------------------------------------------------------------------------

class RelaxedLM(nn.Module):
    """A teacher LM's embedding and head around a :class:`~minilib.looped.RelaxedRecursive` stack tied from its blocks."""

    def __init__(self, teacher: TransformerLM, n_shared: int, rank: int):
        super().__init__()
        self.embed, self.final_norm = copy.deepcopy(teacher.embed), copy.deepcopy(teacher.final_norm)
        self.stack = lp.RelaxedRecursive.from_layers(list(teacher.blocks), n_shared, rank)

    def forward(self, idx):
        return self.final_norm(self.stack(self.embed(idx))) @ self.embed.weight.T


def run_relaxed(quick: bool) -> dict:
    c = dict(CHAR, **(QUICK_CHAR if quick else {}), steps=3 if quick else 150, student_steps=3 if quick else 100, n_layers=4,
             ranks=[0, 8])
    tok, train_ids, starts, val = char_data(c)
    out = {"config": c, "teacher": [], "init": {str(r): [] for r in c["ranks"]}, "trained": {str(r): [] for r in c["ranks"]},
           "params": {}}
    for seed in SEEDS:
        teacher = char_lm(tok.vocab_size, c["n_layers"], seed)
        train(teacher, char_batches(train_ids, starts, c, tok.vocab_size, seed), steps=c["steps"], lr=c["lr"],
              warmup_steps=min(c["warmup"], c["steps"] - 1), progress=False)
        out["teacher"].append(val_loss(teacher, val))
        out["params"]["teacher"] = n_params(teacher)
        for rank in c["ranks"]:
            student = RelaxedLM(teacher, 2, rank)
            out["params"][str(rank)] = n_params(student)
            out["init"][str(rank)].append(val_loss(student, val))
            train(student, char_batches(train_ids, starts, c, tok.vocab_size, seed + 100), steps=c["student_steps"],
                  lr=1e-3, warmup_steps=min(c["warmup"], c["student_steps"] - 1), progress=False)
            out["trained"][str(rank)].append(val_loss(student, val))
        print(f"  seed {seed}: teacher {out['teacher'][-1]}, "
              + ", ".join(f"rank {r}: {out['init'][str(r)][-1]} -> {out['trained'][str(r)][-1]}" for r in c["ranks"]), flush=True)
    return out


def check_relaxed(r: dict) -> None:
    assert r["params"]["teacher"] > r["params"]["8"] > r["params"]["0"]
    for rank in ("0", "8"):
        assert np.mean(r["trained"][rank]) < np.mean(r["init"][rank]), "training the student must close part of the gap"


# --- k-hop reachability ----------------------------------------------------------------------------------

N_NODES, K_MAX = 10, 8


def pointer_chasing(batch: int, ks, gen: torch.Generator):
    """Edge tokens (src, dst) of a random permutation in random order, the query (source, k) and the node k hops on."""
    perm = torch.stack([torch.randperm(N_NODES, generator=gen) for _ in range(batch)])       # dst of node i
    order = torch.stack([torch.randperm(N_NODES, generator=gen) for _ in range(batch)])
    src = order
    dst = perm.gather(1, order)
    source = torch.randint(N_NODES, (batch,), generator=gen)
    k = torch.as_tensor(ks)[torch.randint(len(ks), (batch,), generator=gen)] if not isinstance(ks, int) else torch.full((batch,), ks)
    node = source.clone()
    for step in range(int(k.max())):
        node = torch.where(step < k, perm.gather(1, node[:, None])[:, 0], node)
    return src, dst, source, k, node


class ChaseModel(nn.Module):
    """Token embeddings of the edges and the query, a ``core`` (depth-recurrent or a fixed stack), a head on the query."""

    def __init__(self, d_model: int, core: nn.Module, looped: bool):
        super().__init__()
        self.src, self.dst, self.query = (nn.Embedding(N_NODES, d_model) for _ in range(3))
        self.k = nn.Embedding(K_MAX + 1, d_model)
        nn.init.zeros_(self.k.weight)  # rows of k never trained stay 0
        self.core, self.looped = core, looped
        self.head = nn.Linear(d_model, N_NODES)

    def forward(self, src, dst, source, k, n_steps=None):
        x = torch.cat([self.src(src) + self.dst(dst), (self.query(source) + self.k(k))[:, None]], dim=1)
        h = self.core(x, n_steps=n_steps) if self.looped else self.core(x)
        return self.head(h[:, -1])


class Stack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def chase_models(seed: int):
    torch.manual_seed(seed)
    loop_cfg = TransformerConfig(vocab_size=2, d_model=64, n_layers=1, n_heads=4, pos="none")
    looped = ChaseModel(64, lp.DepthRecurrent(Block(loop_cfg, 0), 64, 4, layerscale_init=0.1), looped=True)
    fixed_cfg = TransformerConfig(vocab_size=2, d_model=32, n_layers=4, n_heads=4, pos="none")
    fixed = ChaseModel(32, Stack([Block(fixed_cfg, i) for i in range(4)]), looped=False)
    return looped, fixed


def run_reachability(quick: bool) -> dict:
    c = dict(steps=8 if quick else 600, batch=64, lr=2e-3, train_k=[1, 2, 3, 4], test_k=list(range(1, 7)),
             test_T=list(range(1, 9)), test_rows=16 if quick else 512)
    out = {"config": c, "looped": [], "fixed": [], "params": {}}
    for seed in SEEDS:
        looped, fixed = chase_models(seed)
        out["params"] = {"looped": n_params(looped), "fixed": n_params(fixed)}
        for name, model in (("looped", looped), ("fixed", fixed)):
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.01)
            for step in range(c["steps"]):
                k = int(c["train_k"][step % len(c["train_k"])])
                src, dst, source, kk, answer = pointer_chasing(c["batch"], k, gen)
                logits = model(src, dst, source, kk, n_steps=k) if name == "looped" else model(src, dst, source, kk)
                loss = F.cross_entropy(logits, answer)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            test = torch.Generator().manual_seed(10_000 + seed)
            with torch.no_grad():
                if name == "looped":
                    grid = []
                    for k in c["test_k"]:
                        batch = pointer_chasing(c["test_rows"], k, test)
                        grid.append([round((model(*batch[:4], n_steps=T).argmax(-1) == batch[4]).float().mean().item(), 4)
                                     for T in c["test_T"]])
                    out["looped"].append(grid)
                else:
                    accs = []
                    for k in c["test_k"]:
                        batch = pointer_chasing(c["test_rows"], k, test)
                        accs.append(round((model(*batch[:4]).argmax(-1) == batch[4]).float().mean().item(), 4))
                    out["fixed"].append(accs)
        print(f"  seed {seed}: looped at T=k {[out['looped'][-1][k - 1][k - 1] for k in c['test_k']]}, "
              f"fixed {out['fixed'][-1]}", flush=True)
    return out


def check_reachability(r: dict) -> None:
    p = r["params"]
    assert abs(p["looped"] - p["fixed"]) / p["fixed"] < 0.05, p


# --- AlgoFormer: in-context linear regression --------------------------------------------------------------

def regression_batch(batch: int, n: int, d: int, gen: torch.Generator):
    """Chapter 10's prompts as tokens ``[x_i, y_i]`` (the query's ``y`` slot 0) and the query targets ``y_q``."""
    prompts = regression_prompts(batch, n, d, generator=gen)
    return prompt_tokens(prompts.xs, prompts.ys), prompts.ys[:, -1]


class RegressionModel(nn.Module):
    def __init__(self, d: int, d_model: int, core: nn.Module):
        super().__init__()
        self.read_in, self.core, self.read_out = nn.Linear(d + 1, d_model), core, nn.Linear(d_model, 1)

    def forward(self, tokens):
        return self.read_out(self.core(self.read_in(tokens))[:, -1])[:, 0]


def regression_models(seed: int, d: int, d_model: int):
    def blocks():
        torch.manual_seed(seed)
        cfg = TransformerConfig(vocab_size=2, d_model=d_model, n_layers=3, n_heads=4, pos="none")
        return [Block(cfg, i) for i in range(3)]

    standard = RegressionModel(d, d_model, Stack(blocks()))
    looped = RegressionModel(d, d_model, lp.LoopedTransformer(Stack(blocks()), 2))
    b = blocks()
    algo = RegressionModel(d, d_model, lp.AlgoFormer(b[0], b[1], b[2], 4))
    return {"standard": standard, "looped": looped, "algoformer": algo}


def run_algoformer(quick: bool) -> dict:
    c = dict(d=4, n=20, d_model=32, steps=3 if quick else 400, batch=32, lr=1e-3, test_rows=32 if quick else 2048)
    out = {"config": c, "mse": {}, "params": {}}
    for seed in SEEDS:
        for name, model in regression_models(seed, c["d"], c["d_model"]).items():
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.0)
            for _ in range(c["steps"]):
                tokens, target = regression_batch(c["batch"], c["n"], c["d"], gen)
                loss = F.mse_loss(model(tokens), target)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                tokens, target = regression_batch(c["test_rows"], c["n"], c["d"], torch.Generator().manual_seed(99))
                out["mse"].setdefault(name, []).append(round(F.mse_loss(model(tokens), target).item() / c["d"], 4))
            out["params"][name] = n_params(model)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in out["mse"].items()), flush=True)
    return out


def check_algoformer(r: dict) -> None:
    assert len(set(r["params"].values())) == 1, r["params"]


# --- recurrent transformer: running parity -----------------------------------------------------------------

class ParityModel(nn.Module):
    def __init__(self, d_model: int, core: nn.Module):
        super().__init__()
        self.embed, self.core, self.head = nn.Embedding(2, d_model), core, nn.Linear(d_model, 2)

    def forward(self, bits):
        return self.head(self.core(self.embed(bits)))


def parity_models(seed: int):
    torch.manual_seed(seed)
    recurrent = ParityModel(48, lp.RecurrentTransformer(48, 2, 4, d_ff=110))
    cfg = TransformerConfig(vocab_size=2, d_model=32, n_layers=4, n_heads=4, d_ff=88, max_len=64, pos="rope")
    standard = ParityModel(32, Stack([Block(cfg, i) for i in range(4)]))
    return {"recurrent": recurrent, "standard": standard}


def run_recurrent(quick: bool) -> dict:
    c = dict(L=8 if quick else 32, steps=3 if quick else 150, batch=32, lr=3e-3, test_rows=16 if quick else 256)
    out = {"config": c, "accuracy": {}, "params": {}}
    for seed in SEEDS:
        for name, model in parity_models(seed).items():
            gen = torch.Generator().manual_seed(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.0)
            for _ in range(c["steps"]):
                bits = torch.randint(2, (c["batch"], c["L"]), generator=gen)
                loss = F.cross_entropy(model(bits).flatten(0, 1), (bits.cumsum(1) % 2).flatten())
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                bits = torch.randint(2, (c["test_rows"], c["L"]), generator=torch.Generator().manual_seed(77))
                acc = (model(bits).argmax(-1) == bits.cumsum(1) % 2).float().mean().item()
            out["accuracy"].setdefault(name, []).append(round(acc, 4))
            out["params"][name] = n_params(model)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in out["accuracy"].items()), flush=True)
    return out


def check_recurrent(r: dict) -> None:
    p = r["params"]
    assert abs(p["recurrent"] - p["standard"]) / p["standard"] < 0.05, p


# --- cross-layer values, ladder, linear shortcuts ------------------------------------------------------------

class LadderLM(nn.Module):
    """A :class:`TransformerLM` run with the ladder residual (offset 1)."""

    def __init__(self, lm: TransformerLM):
        super().__init__()
        self.lm = lm

    def forward(self, idx):
        return ml.ladder_logits(self.lm, idx, offset=1)


@torch.no_grad()
def shortcut_agreement(model: TransformerLM, fit_idx: torch.Tensor, test_idx: torch.Tensor) -> dict:
    model.eval()
    fit = [h.reshape(-1, h.shape[-1]) for h in ml.hidden_states(model, fit_idx)]
    maps = lp.fit_linear_shortcuts(fit[:-1], fit[-1])
    test = [h.reshape(-1, h.shape[-1]) for h in ml.hidden_states(model, test_idx)]
    final = model.logits(test[-1]).argmax(-1)
    mapped = [round((model.logits(h @ a).argmax(-1) == final).float().mean().item(), 4) for h, a in zip(test[:-1], maps)]
    identity = [round((model.logits(h).argmax(-1) == final).float().mean().item(), 4) for h in test[:-1]]
    return {"shortcut": mapped, "identity": identity}


def run_cross_layer(quick: bool) -> dict:
    c = dict(CHAR, **(QUICK_CHAR if quick else {}), steps=3 if quick else 120, n_layers=6)
    tok, train_ids, starts, val = char_data(c)
    variants = {"vanilla": {}, "depth_attention": {"depth_attention": True}, "value_static": {"value_residual": "static"},
                "value_gated": {"value_residual": "gated"}, "ladder": None}
    out = {"config": c, "loss": {}, "params": {}, "shortcuts": [], "gates": []}
    for seed in SEEDS:
        for name, options in variants.items():
            if options is None:
                model = LadderLM(char_lm(tok.vocab_size, c["n_layers"], seed))
            elif name == "vanilla":
                model = char_lm(tok.vocab_size, c["n_layers"], seed)
            else:
                model = char_lm(tok.vocab_size, c["n_layers"], seed, model_cls=ml.CrossLayerLM, mixer_kwargs=options)
            train(model, char_batches(train_ids, starts, c, tok.vocab_size, seed), steps=c["steps"], lr=c["lr"],
                  warmup_steps=min(c["warmup"], c["steps"] - 1), progress=False)
            out["loss"].setdefault(name, []).append(val_loss(model, val))
            out["params"][name] = n_params(model)
            if name == "vanilla":
                fit_idx = next(char_batches(train_ids, starts, dict(c, batch=128), tok.vocab_size, seed + 500))[0]
                out["shortcuts"].append(shortcut_agreement(model, fit_idx, val[0]))
            if name == "value_gated":
                with torch.no_grad():  # mean gate per layer (2..6) and key/value head on the held-out windows
                    x = model.embed(val[0])
                    gates = []
                    depth = DepthMemory()
                    for block in model.blocks:
                        h = block.norm1(x)
                        if depth.values:
                            gates.append(torch.sigmoid(block.mixer.value_gate(h)).mean((0, 1)).tolist())
                        x = block.residual(x, block.mixer(h, depth=depth))
                        x = block.residual(x, block.ffn(block.norm2(x)))
                    out["gates"].append([[round(g, 3) for g in row] for row in gates])
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in out["loss"].items()), flush=True)
    return out


def check_cross_layer(r: dict) -> None:
    p = r["params"]
    assert p["depth_attention"] == p["vanilla"] == p["ladder"]
    assert p["value_static"] == p["vanilla"] + 6


# --- sliced recursive ViT ---------------------------------------------------------------------------------

class RecursiveViT(VisionTransformer):
    """A :class:`~minilib.vision.VisionTransformer` whose blocks each run ``n_recursions`` times (shared weights)."""

    def __init__(self, *args, n_recursions: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_recursions = n_recursions

    def forward(self, images):
        z = lp.recursive_forward(self.blocks, self.embed(images), self.n_recursions)
        return self.head(self.final_norm(z).mean(dim=1))


def run_sliced(quick: bool) -> dict:
    c = dict(steps=3 if quick else 300, batch=64, lr=3e-3, d_model=32, n_heads=4, patch=2, groups=4)
    (x_train, y_train), (x_test, y_test) = digits_split(n_test=500, seed=0)
    out = {"config": c, "accuracy": {}, "params": {}}
    for seed in SEEDS:
        for name, rec in (("2 blocks", 1), ("2 blocks x 2", 2)):
            torch.manual_seed(seed)
            model = RecursiveViT(8, c["patch"], c["d_model"], 2, c["n_heads"], n_classes=10, n_recursions=rec)
            gen = torch.Generator().manual_seed(seed)
            train(model, labelled_batches(x_train, y_train, batch_size=c["batch"], generator=gen), steps=c["steps"],
                  lr=c["lr"], warmup_steps=min(20, c["steps"] - 1), progress=False, loss_fn=lambda m, b: F.cross_entropy(m(b[0]), b[1]))
            model.eval()
            with torch.no_grad():
                acc = (model(x_test).argmax(-1) == y_test).float().mean().item()
            out["accuracy"].setdefault(name, []).append(round(acc, 4))
            out["params"][name] = n_params(model)
        print(f"  seed {seed}: " + ", ".join(f"{k} {v[-1]}" for k, v in out["accuracy"].items()), flush=True)
    n_tokens = (8 // c["patch"]) ** 2
    out["scores_per_head"] = {"full": n_tokens ** 2, "sliced": c["groups"] * (n_tokens // c["groups"]) ** 2}
    return out


def check_sliced(r: dict) -> None:
    assert r["params"]["2 blocks"] == r["params"]["2 blocks x 2"]
    assert r["scores_per_head"]["full"] == r["config"]["groups"] * r["scores_per_head"]["sliced"]

# --- early exit: confidence-based per-token exit in a 6-layer LM ---------------------------------------------

@torch.no_grad()
def exit_curve(model, idx, target, full, thresholds, shortcuts) -> list[dict]:
    rows = []
    for threshold in thresholds:
        logits, layer = ml.early_exit(model, idx, threshold, shortcuts=shortcuts)
        rows.append({"threshold": threshold, "mean_exit_layer": round(layer.float().mean().item(), 4),
                     "agreement": round((logits.argmax(-1) == full.argmax(-1)).float().mean().item(), 4),
                     "loss": round(F.cross_entropy(logits.flatten(0, 1), target.flatten()).item(), 4)})
    return rows


def run_early_exit(quick: bool) -> dict:
    c = dict(CHAR, **(QUICK_CHAR if quick else {}), steps=3 if quick else 120, n_layers=6,
             thresholds=[0.5, 1.0] if quick else [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
    tok, train_ids, starts, val = char_data(c)
    out = {"config": c, "identity": [], "shortcut": [], "full_loss": []}
    for seed in SEEDS[:1] if quick else SEEDS:
        model = char_lm(tok.vocab_size, c["n_layers"], seed)
        train(model, char_batches(train_ids, starts, c, tok.vocab_size, seed), steps=c["steps"], lr=c["lr"],
              warmup_steps=min(c["warmup"], c["steps"] - 1), progress=False)
        model.eval()
        with torch.no_grad():
            for p in model.parameters():  # evaluate what the saved float16 weights load back to
                p.copy_(p.half().float())
            fit_idx = next(char_batches(train_ids, starts, dict(c, batch=128), tok.vocab_size, seed + 500))[0]
            fit = [h.reshape(-1, h.shape[-1]) for h in ml.hidden_states(model, fit_idx)]
            maps = [a.half().float() for a in lp.fit_linear_shortcuts(fit[:-1], fit[-1])]
            full = model(val[0])
            out["full_loss"].append(round(F.cross_entropy(full.flatten(0, 1), val[1].flatten()).item(), 4))
            out["identity"].append(exit_curve(model, val[0], val[1], full, c["thresholds"], None))
            out["shortcut"].append(exit_curve(model, val[0], val[1], full, c["thresholds"], maps))
        if seed == SEEDS[0]:
            torch.save({"model": {k: v.half() for k, v in model.state_dict().items()},
                        "shortcuts": [a.half() for a in maps]}, artifact_path("looped_early_exit.pt"))
        print(f"  seed {seed}: full {out['full_loss'][-1]}, shortcut {out['shortcut'][-1]}", flush=True)
    return out


def check_early_exit(r: dict) -> None:
    for readout in ("identity", "shortcut"):
        for rows, full in zip(r[readout], r["full_loss"]):
            last = rows[-1]
            assert last["threshold"] == 1.0 and last["agreement"] == 1.0 and last["loss"] == full, last
            assert last["mean_exit_layer"] == r["config"]["n_layers"], last


# --- continuous thought: a trained 2-layer model on graph reachability -----------------------------------------

def reachability_batch(batch: int, c: dict, rng: np.random.Generator):
    """Edge tokens of a random digraph, SEP, source, target; label 1 if target is reachable; its hop distance (0 if not)."""
    n, sep = c["n_nodes"], c["n_nodes"]
    rows, labels, hops = [], [], []
    for _ in range(batch):
        edges = lp.random_digraph(n, c["n_edges"], seed=int(rng.integers(2 ** 31)))
        source = int(rng.integers(n))
        balls = lp.reachable_within(edges, n, source, n)
        reach, far = np.flatnonzero(balls[-1]), np.flatnonzero(~balls[-1])
        reach = reach[reach != source]
        yes = len(far) == 0 or (len(reach) > 0 and rng.random() < 0.5)
        target = int(rng.choice(reach if yes else far))
        rows.append(np.concatenate([rng.permutation(edges).ravel(), [sep, source, target]]))
        labels.append(int(yes))
        hops.append(int(np.argmax(balls[:, target])) if yes else 0)
    return torch.tensor(np.stack(rows)), torch.tensor(labels), np.array(hops)


def thought_model(c: dict, seed: int) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig(vocab_size=c["n_nodes"] + 3, d_model=c["d_model"], n_layers=2, n_heads=4, max_len=64))


def answer_logits(model, idx, n_thoughts: int, c: dict):
    """The yes/no logits read after ``n_thoughts`` continuous thoughts."""
    return ml.continuous_thought(model, idx, n_thoughts)[:, c["n_nodes"] + 1:]


def run_coconut(quick: bool) -> dict:
    c = dict(n_nodes=8, n_edges=10, d_model=32, thoughts=[0, 3], steps=4 if quick else 400, batch=32, lr=3e-3,
             test_rows=32 if quick else 1024)
    out = {"config": c, "accuracy": {}, "by_hops": {}, "params": None}
    test = reachability_batch(c["test_rows"], c, np.random.default_rng(12345))
    for seed in SEEDS[:1] if quick else SEEDS:
        for k in c["thoughts"]:
            model = thought_model(c, seed)
            out["params"] = n_params(model)
            rng = np.random.default_rng(seed)
            opt = torch.optim.AdamW(model.parameters(), lr=c["lr"], weight_decay=0.01)
            for _ in range(c["steps"]):
                idx, label, _ = reachability_batch(c["batch"], c, rng)
                loss = F.cross_entropy(answer_logits(model, idx, k, c), label)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
            with torch.no_grad():
                right = (answer_logits(model, test[0], k, c).argmax(-1) == test[1]).numpy()
            out["accuracy"].setdefault(str(k), []).append(round(float(right.mean()), 4))
            out["by_hops"].setdefault(str(k), []).append(
                {str(h): round(float(right[test[2] == h].mean()), 4) for h in sorted(set(test[2].tolist()))})
        print(f"  seed {seed}: " + ", ".join(f"{k} thoughts {v[-1]}" for k, v in out["accuracy"].items()), flush=True)
    out["hop_counts"] = {str(h): int((test[2] == h).sum()) for h in sorted(set(test[2].tolist()))}
    return out


def check_coconut(r: dict) -> None:
    assert set(r["accuracy"]) == {str(k) for k in r["config"]["thoughts"]}
    assert sum(r["hop_counts"].values()) == r["config"]["test_rows"]


def report(name: str, r: dict) -> str:
    if name == "matformer":
        return f"nested {np.mean(r['nested'], 0).round(3).tolist()} vs separate {np.mean(r['separate'], 0).round(3).tolist()}"
    if name == "relaxed":
        return f"teacher {np.mean(r['teacher']):.3f}; " + ", ".join(
            f"rank {k} {np.mean(r['init'][k]):.3f} -> {np.mean(v):.3f}" for k, v in r["trained"].items())
    if name == "reachability":
        grid = np.mean(r["looped"], 0)
        return f"looped at T=k {[round(grid[k][k], 3) for k in range(len(grid))]}; fixed {np.mean(r['fixed'], 0).round(3).tolist()}"
    if name == "early_exit":
        return "; ".join(f"{k}: " + ", ".join(f"{row['threshold']}: {row['mean_exit_layer']:.2f} layers, {row['agreement']:.3f}"
                                             for row in r[k][0]) for k in ("identity", "shortcut"))
    if name == "sliced":
        return ", ".join(f"{k} {np.mean(v):.3f}" for k, v in r["accuracy"].items())
    key = {"algoformer": "mse", "recurrent": "accuracy", "cross_layer": "loss", "coconut": "accuracy"}[name]
    return ", ".join(f"{k} {np.mean(v):.4f}" for k, v in r[key].items())


EXPERIMENTS = {"matformer": (run_matformer, check_matformer), "relaxed": (run_relaxed, check_relaxed),
               "reachability": (run_reachability, check_reachability), "algoformer": (run_algoformer, check_algoformer),
               "recurrent": (run_recurrent, check_recurrent), "cross_layer": (run_cross_layer, check_cross_layer),
               "sliced": (run_sliced, check_sliced), "early_exit": (run_early_exit, check_early_exit),
               "coconut": (run_coconut, check_coconut)}


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="looped", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
