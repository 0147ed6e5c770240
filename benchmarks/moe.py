"""The trained comparisons of chapter 09 on the tiny_corpus character LM, three seeds each.

    python benchmarks/moe.py                  # every experiment, claims checked, writes benchmarks/results/moe.json
    python benchmarks/moe.py --only ffn_kinds # one experiment; the file keeps the others
    python benchmarks/moe.py --quick          # tiny sizes, a few seconds; nothing checked or saved

Experiments (chapter 09 reads them all), each a 2-layer TransformerLM (d_model 32, 4 heads, 32-token windows, 150 AdamW steps):

* ``ffn_kinds``: GELU, ReLU, SwiGLU, GEGLU, ReGLU and PolyNorm FFNs at their default widths (the 2/3 rule for the
  gated ones), parameter counts within 5%; validation loss;
* ``sparsity``: ReLU FFNs of width 4d and 8d: fraction of zero hidden activations per layer at initialisation and
  after training (the lazy-neuron probe), and width 4d trained on random labels (every target a uniform random token);
* ``moe``: dense SwiGLU, a 4-expert top-2 MoE and MoE++ (4 FFN + zero, copy, constant experts, top-2), without and
  with gating residuals: validation loss, FFN experts run per token, load coefficient of variation;
* ``upcycle``: a dense model trained, upcycled into 4 experts (same loss at the switch), both trained on;
* ``bam``: two dense models branched from one initialisation, each trained on one half of the training text, upcycled
  into 2 FFN experts (top-2) with their attention averaged (FFN-only) or as 2 attention experts (BAM), both trained on;
* ``tokenformer``: a Pattention-FFN model grown from 32 to 64 parameter tokens halfway, against 64 from scratch;
* ``hash_memory``: MemoryFormer-style hash-memory FFN against the dense GELU FFN;
* ``mohd``: MoHD (d_ff 4d, a quarter shared, 3 groups, top-1: half the units active) against a dense GELU FFN of
  the active width (2d);
* ``structured``: a low-rank FFN (rank 14, width 8d) at the dense FFN's parameter count, with and without self-guided
  training (dense guide blended out over the first half), and a block-diagonal one (2 blocks, width 8d, exactly the
  dense count);
* ``digits``: on scikit-learn's 8x8 digits, a 2-layer ViT, 2-layer Activator (with and without the channel MLP) and a
  4-layer WideNet (individual and shared LayerNorms), test accuracy and parameters;
* ``digits_sparsity``: the 2-layer digits ViT with ReLU FFNs (width 4d) trained on the true labels and on random
  labels (one fixed random label per image, as in the lazy-neuron paper): non-zero fraction of the FFN units on test
  images at initialisation and after training;
* ``poly_fit``: a 1-D fit of a smooth function by one hidden layer of ReLU or PolyReLU units (L-BFGS, float64):
  mean squared error against the parameter count.

"±" in the reports is the sample standard deviation over the seeds (``seed_spread``). One torch thread throughout.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import (downsample, paired_difference, run_experiments, seed_difference,  # noqa: E402
                                     seed_spread)
from minilib.data import CharTokenizer, lm_batches, lm_eval_windows, tiny_corpus, train_val_split  # noqa: E402
from minilib.feedforward import FeedForward  # noqa: E402
from minilib.models import TransformerConfig, TransformerLM, count_parameters, evaluate, lm_loss, train  # noqa: E402
from minilib.activations import polyrelu  # noqa: E402
from minilib.data import digits_split, labelled_batches  # noqa: E402
from minilib.moe import (ActivatorClassifier, BlockDiagonalLinear, LowRankLinear, MoE, MoEPlusPlus,  # noqa: E402
                         SelfGuided, WideNet, activation_sparsity, link_gating_residuals, upcycle)
from minilib.vision import VisionTransformer  # noqa: E402

CFG = dict(n_chars=200_000, corpus_seed=0, val_frac=0.1, seq_len=32, d_model=32, n_layers=2, n_heads=4, steps=150,
           batch=16, lr=3e-3, warmup=15, seeds=[0, 1, 2])
QUICK = dict(n_chars=20_000, steps=6, seeds=[0])
FFN_KINDS = ("gelu", "relu", "swiglu", "geglu", "reglu", "polynorm")


def sized(quick: bool) -> dict:
    return {**CFG, **(QUICK if quick else {})}


class Data:
    def __init__(self, c: dict):
        text, source = tiny_corpus(c["n_chars"], seed=c["corpus_seed"])
        self.tok = CharTokenizer(text)
        self.train_ids, val_ids = train_val_split(self.tok.encode(text), c["val_frac"])
        self.val = lm_eval_windows(val_ids, seq_len=c["seq_len"])
        self.unigram_entropy = source.char_unigram_entropy()
        self.c = c

    def batches(self, seed: int):
        return lm_batches(self.train_ids, batch_size=self.c["batch"], seq_len=self.c["seq_len"],
                          generator=torch.Generator().manual_seed(1000 + seed))

    def model(self, seed: int, **options) -> TransformerLM:
        torch.manual_seed(seed)
        c = self.c
        return TransformerLM(TransformerConfig(self.tok.vocab_size, c["d_model"], c["n_layers"], c["n_heads"],
                                               max_len=c["seq_len"], **options))

    def fit(self, model, seed: int, steps: int | None = None, batches=None) -> list[float]:
        return train(model, batches or self.batches(seed), steps=steps or self.c["steps"], lr=self.c["lr"],
                     warmup_steps=min(self.c["warmup"], (steps or self.c["steps"]) // 2), progress=False)

    def val_loss(self, model) -> float:
        return evaluate(model, iter([self.val]), n_batches=1)

    def from_scratch(self, seed: int, **options) -> tuple[TransformerLM, float]:
        """A model built with ``options``, trained for the whole budget; with its validation loss."""
        model = self.model(seed, **options)
        self.fit(model, seed)
        return model, self.val_loss(model)


def run_ffn_kinds(quick: bool = False) -> dict:
    data = Data(sized(quick))
    rows = {}
    for kind in FFN_KINDS:
        losses, curves = [], []
        for seed in data.c["seeds"]:
            model = data.model(seed, ffn=kind)
            curves.append(downsample(data.fit(model, seed)))
            losses.append(data.val_loss(model))
        rows[kind] = dict(params=count_parameters(model), val_loss=seed_spread(losses), curves=curves)
    params = [r["params"] for r in rows.values()]
    return dict(config=data.c, unigram_entropy=data.unigram_entropy, rows=rows,
                param_spread=max(params) / min(params) - 1)


def check_ffn_kinds(out: dict) -> None:
    assert out["param_spread"] <= 0.05, f"ffn_kinds: parameter counts differ by {out['param_spread']:.1%}"
    for kind, r in out["rows"].items():
        assert r["val_loss"]["mean"] < out["unigram_entropy"], f"ffn_kinds: {kind} above the unigram entropy"


def _random_labels(batches, vocab_size: int, seed: int):
    """The same inputs with every target replaced by a uniformly random token (the lazy-neuron paper's control)."""
    g = torch.Generator().manual_seed(3000 + seed)
    for x, y in batches:
        yield x, torch.randint(0, vocab_size, y.shape, generator=g)


def run_sparsity(quick: bool = False) -> dict:
    data = Data(sized(quick))
    x_val = data.val[0][:32]
    rows = {}
    for name, width, random_labels in (("4d", 4, False), ("8d", 8, False), ("4d, random labels", 4, True)):
        init, trained, losses = [], [], []
        for seed in data.c["seeds"]:
            model = data.model(seed, ffn="relu", d_ff=width * data.c["d_model"])
            init.append(activation_sparsity(model, lambda m: m(x_val)))
            batches = data.batches(seed)
            data.fit(model, seed, batches=_random_labels(batches, data.tok.vocab_size, seed) if random_labels else batches)
            trained.append(activation_sparsity(model, lambda m: m(x_val)))
            losses.append(data.val_loss(model))
        rows[name] = dict(zero_init=np.mean(init, 0).round(4).tolist(), zero_trained=np.mean(trained, 0).round(4).tolist(),
                          zero_trained_per_seed=np.round(trained, 4).tolist(),
                          nonzero_trained=seed_spread([1 - np.mean(z) for z in trained]), val_loss=seed_spread(losses))
    nonzero = {k: r["nonzero_trained"]["per_seed"] for k, r in rows.items()}
    return dict(config=data.c, rows=rows, uniform_loss=float(np.log(data.tok.vocab_size)),
                wider_minus_4d=paired_difference(nonzero["8d"], nonzero["4d"]),
                random_minus_real=paired_difference(nonzero["4d, random labels"], nonzero["4d"]))


def check_sparsity(out: dict) -> None:
    for width in ("4d", "8d"):
        r = out["rows"][width]
        for a, b in zip(r["zero_init"], r["zero_trained"]):
            assert b > a, f"sparsity: {width}: trained zero fraction {b} not above initialisation {a}"


def _cv(load: torch.Tensor) -> float:
    load = load.float()
    return float(load.std(unbiased=False) / load.mean())


def run_moe(quick: bool = False) -> dict:
    data = Data(sized(quick))
    x_val = data.val[0]
    variants = {"dense": dict(ffn="swiglu"),
                "moe": dict(ffn="moe", ffn_kwargs=dict(n_experts=4, top_k=2)),
                "moe++": dict(ffn="moe++", ffn_kwargs=dict(n_ffn=4, top_k=2)),
                "moe++, gating residuals": dict(ffn="moe++", ffn_kwargs=dict(n_ffn=4, top_k=2, gating_residual=True))}
    rows = {}
    for name, options in variants.items():
        losses, per_token, cvs = [], [], []
        for seed in data.c["seeds"]:
            model = data.model(seed, **options)
            link_gating_residuals(model)
            data.fit(model, seed)
            losses.append(data.val_loss(model))
            with torch.no_grad():
                model.eval()
                model(x_val)
            ffns = [b.ffn for b in model.blocks]
            if isinstance(ffns[0], MoEPlusPlus):
                per_token.append(float(np.mean([f.ffn_experts_per_token() for f in ffns])))
                cvs.append(float(np.mean([_cv(f.routing.load[:f.n_ffn]) for f in ffns])))
            elif isinstance(ffns[0], MoE):
                per_token.append(2.0)
                cvs.append(float(np.mean([_cv(f.routing.load) for f in ffns])))
        rows[name] = dict(params=count_parameters(model), val_loss=seed_spread(losses),
                          ffn_experts_per_token=seed_spread(per_token) if per_token else None,
                          load_cv=seed_spread(cvs) if cvs else None)
    loss = {k: np.array(r["val_loss"]["per_seed"]) for k, r in rows.items()}
    return dict(config=data.c, rows=rows, moepp_percent_above_moe=seed_difference(100 * (loss["moe++"] / loss["moe"] - 1)),
                residual_percent_above_moe=seed_difference(100 * (loss["moe++, gating residuals"] / loss["moe"] - 1)),
                residual_minus_moepp=paired_difference(loss["moe++, gating residuals"], loss["moe++"]))


def check_moe(out: dict) -> None:
    for name in ("moe++", "moe++, gating residuals"):
        assert out["rows"][name]["ffn_experts_per_token"]["mean"] < 2, out["rows"][name]


def run_upcycle(quick: bool = False) -> dict:
    data = Data(sized(quick))
    half = data.c["steps"] // 2
    rows = dict(switch_gap=[], dense=[], upcycled=[], dense_at_switch=[], scratch_moe=[])
    for seed in data.c["seeds"]:
        dense = data.model(seed, ffn="swiglu")
        batches = data.batches(seed)
        data.fit(dense, seed, half, batches)
        moe = data.model(seed, ffn="moe", ffn_kwargs=dict(n_experts=4, top_k=2))
        moe.load_state_dict(upcycle([dense.state_dict()], 4))
        at_switch = data.val_loss(dense)
        rows["dense_at_switch"].append(at_switch)
        rows["switch_gap"].append(abs(data.val_loss(moe) - at_switch))
        rest = list(zip(range(half), batches))  # the same batches for both continuations
        data.fit(dense, seed, half, iter([b for _, b in rest]))
        data.fit(moe, seed, half, iter([b for _, b in rest]))
        rows["dense"].append(data.val_loss(dense))
        rows["upcycled"].append(data.val_loss(moe))
        rows["scratch_moe"].append(data.from_scratch(seed, ffn="moe", ffn_kwargs=dict(n_experts=4, top_k=2))[1])
    return dict(config=data.c, **{k: seed_spread(v) for k, v in rows.items()})


def check_upcycle(out: dict) -> None:
    assert out["switch_gap"]["max"] < 1e-4, f"upcycle: loss changed at the switch: {out['switch_gap']}"


def run_bam(quick: bool = False) -> dict:
    data = Data(sized(quick))
    half, c = data.c["steps"] // 2, data.c
    n = len(data.train_ids) // 2
    halves = (data.train_ids[:n], data.train_ids[n:])
    moe = dict(ffn="moe", ffn_kwargs=dict(n_experts=2, top_k=2))
    rows = dict(specialist=[], ffn_only_at_switch=[], bam_at_switch=[], ffn_only=[], bam=[])
    for seed in c["seeds"]:
        specialists = []
        for part, ids in enumerate(halves):  # branched from one initialisation, each trained on its half of the text
            model = data.model(seed, ffn="swiglu")
            data.fit(model, seed, half, lm_batches(ids, batch_size=c["batch"], seq_len=c["seq_len"],
                                                   generator=torch.Generator().manual_seed(2000 + 10 * seed + part)))
            specialists.append(model)
        rows["specialist"].append(float(np.mean([data.val_loss(m) for m in specialists])))
        states = [m.state_dict() for m in specialists]
        ffn_only = data.model(seed, **moe)
        ffn_only.load_state_dict(upcycle(states, 2))
        bam = data.model(seed, **moe, mixer="moa", mixer_kwargs=dict(n_experts=2))
        bam.load_state_dict(upcycle(states, 2, attention=True))
        batches = data.batches(seed)
        rest = [next(batches) for _ in range(half)]  # the same batches for both continuations
        for name, model in (("ffn_only", ffn_only), ("bam", bam)):
            rows[f"{name}_at_switch"].append(data.val_loss(model))
            data.fit(model, seed, half, iter(rest))
            rows[name].append(data.val_loss(model))
    return dict(config=data.c, **{k: seed_spread(v) for k, v in rows.items()},
                params=dict(ffn_only=count_parameters(ffn_only), bam=count_parameters(bam)),
                bam_minus_ffn_only=paired_difference(rows["bam"], rows["ffn_only"]))


def check_bam(out: dict) -> None:
    assert out["params"]["bam"] > out["params"]["ffn_only"], out["params"]
    assert out["bam"]["mean"] < out["bam_at_switch"]["mean"], "bam: no improvement after upcycling"


def run_tokenformer(quick: bool = False) -> dict:
    data = Data(sized(quick))
    half = data.c["steps"] // 2
    rows = dict(switch_gap=[], grown=[], scratch=[], small=[], at_switch=[])
    for seed in data.c["seeds"]:
        model = data.model(seed, ffn="pattention", ffn_kwargs=dict(n_tokens=32))
        batches = data.batches(seed)
        data.fit(model, seed, half, batches)
        before = data.val_loss(model)
        for block in model.blocks:
            block.ffn.grow(32)
        rows["at_switch"].append(before)
        rows["switch_gap"].append(abs(data.val_loss(model) - before))
        data.fit(model, seed, half, batches)
        rows["grown"].append(data.val_loss(model))
        rows["scratch"].append(data.from_scratch(seed, ffn="pattention", ffn_kwargs=dict(n_tokens=64, tau=32 ** 0.5))[1])
        rows["small"].append(data.from_scratch(seed, ffn="pattention", ffn_kwargs=dict(n_tokens=32))[1])
    return dict(config=data.c, **{k: seed_spread(v) for k, v in rows.items()})


def check_tokenformer(out: dict) -> None:
    assert out["switch_gap"]["max"] < 1e-5, f"tokenformer: loss changed at growth: {out['switch_gap']}"


def run_hash_memory(quick: bool = False) -> dict:
    data = Data(sized(quick))
    rows = {}
    for name, options in {"dense gelu": dict(ffn="gelu"),
                          "hash memory": dict(ffn="hash_memory", ffn_kwargs=dict(chunk=8))}.items():
        losses = []
        for seed in data.c["seeds"]:
            model, loss = data.from_scratch(seed, **options)
            losses.append(loss)
        rows[name] = dict(params=count_parameters(model), val_loss=seed_spread(losses))
    return dict(config=data.c, unigram_entropy=data.unigram_entropy, rows=rows)


def check_hash_memory(out: dict) -> None:
    assert out["rows"]["hash memory"]["val_loss"]["mean"] < out["unigram_entropy"], out["rows"]


def run_mohd(quick: bool = False) -> dict:
    data = Data(sized(quick))
    d = data.c["d_model"]
    rows = {}
    for name, options in {"dense, active width": dict(ffn="gelu", d_ff=2 * d),
                          "mohd": dict(ffn="mohd", d_ff=4 * d, ffn_kwargs=dict(n_groups=3, top_k=1,
                                                                               shared_fraction=0.25))}.items():
        losses = []
        for seed in data.c["seeds"]:
            model, loss = data.from_scratch(seed, **options)
            losses.append(loss)
        rows[name] = dict(params=count_parameters(model), val_loss=seed_spread(losses))
    return dict(config=data.c, rows=rows, active_fraction=model.blocks[0].ffn.active_fraction())


def check_mohd(out: dict) -> None:
    assert abs(out["active_fraction"] - 0.5) < 1e-9, out["active_fraction"]


class _StructuredFFN(nn.Module):
    """GELU FFN whose two matrices are ``structured(d_in, d_out)`` (optionally self-guided by dense ones)."""

    def __init__(self, d_model: int, d_ff: int, structured, guide_steps: int | None):
        super().__init__()
        def linear(a, b):
            low = structured(a, b)
            return low if guide_steps is None else SelfGuided(low, a, b, guide_steps)
        self.w1, self.w2 = linear(d_model, d_ff), linear(d_ff, d_model)

    def forward(self, x):
        return self.w2(F.gelu(self.w1(x)))


def _guided_steps(model):
    for m in model.modules():
        if isinstance(m, SelfGuided):
            m.step()


def run_structured(quick: bool = False) -> dict:
    data = Data(sized(quick))
    d, steps = data.c["d_model"], data.c["steps"]
    rank = 14  # 2 r (d + 8d) = 2 * 14 * 9 * 32 = 8064 weights vs 8 d^2 = 8192 for the dense FFN (98%)

    def low_rank(a, b):
        return LowRankLinear(a, b, rank)

    def block_diagonal(a, b):  # 2 blocks: 2 * (d * 8d / 2) = 8 d^2 weights, exactly the dense FFN's
        return BlockDiagonalLinear(a, b, 2)
    variants = {"dense": dict(ffn="gelu"),
                "low-rank 8d": dict(ffn=lambda config, layer: _StructuredFFN(d, 8 * d, low_rank, None)),
                "low-rank 8d, self-guided": dict(ffn=lambda config, layer: _StructuredFFN(d, 8 * d, low_rank, steps // 2)),
                "block-diagonal 8d": dict(ffn=lambda config, layer: _StructuredFFN(d, 8 * d, block_diagonal, None))}
    rows = {}
    for name, options in variants.items():
        losses, early = [], []
        for seed in data.c["seeds"]:
            model = data.model(seed, **options)
            batches = data.batches(seed)

            def stepped():
                for batch in batches:
                    _guided_steps(model)
                    yield batch
            curve = data.fit(model, seed, steps, stepped())
            early.append(float(np.mean(curve[steps // 4: steps // 2])))
            for m in model.modules():  # inference uses the structured path only once alpha reached 0
                if isinstance(m, SelfGuided):
                    m.steps_taken = max(m.steps_taken, m.guide_steps)
            losses.append(data.val_loss(model))
        structured = sum(p.numel() for n_, p in model.named_parameters() if ".ffn." in n_ and ".dense." not in n_)
        rows[name] = dict(ffn_params=structured, val_loss=seed_spread(losses), early_train_loss=seed_spread(early))
    loss = {k: np.array(r["val_loss"]["per_seed"]) for k, r in rows.items()}
    return dict(config=data.c, rows=rows,
                low_rank_percent_above_dense=seed_difference(100 * (loss["low-rank 8d"] / loss["dense"] - 1)),
                block_diagonal_percent_above_dense=seed_difference(100 * (loss["block-diagonal 8d"] / loss["dense"] - 1)))


def check_structured(out: dict) -> None:
    p = {k: r["ffn_params"] for k, r in out["rows"].items()}
    assert p["low-rank 8d"] <= p["dense"] and p["block-diagonal 8d"] <= p["dense"], p


POLY_FIT = dict(points=128, iters=300, relu_widths=[8, 16, 32], poly_widths=[4, 8, 16], seeds=[0, 1, 2])
POLY_FIT_QUICK = dict(iters=5, seeds=[0])


def poly_fit_target(x: torch.Tensor) -> torch.Tensor:
    r"""The smooth 1-D function both activations fit: $\sin 3x + 0.3 x^2$ on $[-2, 2]$."""
    return torch.sin(3 * x) + 0.3 * x ** 2


def fit_1d(width: int, poly: bool, seed: int, *, points: int = 128, iters: int = 300):
    """Fit ``poly_fit_target`` with one hidden layer of ``width`` ReLU or PolyReLU (order 3, learned coefficients)
    units, float64, L-BFGS; returns (mean squared error, parameters, the fitted values)."""
    x = torch.linspace(-2, 2, points, dtype=torch.float64)[:, None]
    y = poly_fit_target(x)
    torch.manual_seed(seed)
    l1, l2 = nn.Linear(1, width).double(), nn.Linear(width, 1).double()
    coeffs = nn.Parameter(torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    params = [*l1.parameters(), *l2.parameters()] + ([coeffs] if poly else [])
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-15)

    def predict():
        h = l1(x)
        return l2(polyrelu(h, coeffs) if poly else torch.relu(h))

    def closure():
        opt.zero_grad()
        loss = (predict() - y).pow(2).mean()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        fitted = predict()
    return float((fitted - y).pow(2).mean()), sum(p.numel() for p in params), fitted[:, 0].tolist()


def run_poly_fit(quick: bool = False) -> dict:
    c = {**POLY_FIT, **(POLY_FIT_QUICK if quick else {})}
    rows = {}
    for name, widths, poly in (("relu", c["relu_widths"], False), ("polyrelu", c["poly_widths"], True)):
        for width in widths:
            fits = [fit_1d(width, poly, seed, points=c["points"], iters=c["iters"]) for seed in c["seeds"]]
            rows[f"{name} {width}"] = dict(params=fits[0][1], mse=seed_spread([f[0] for f in fits]),
                                           fitted_seed0=[round(v, 5) for v in fits[0][2]])
    return dict(config=c, rows=rows)


def check_poly_fit(out: dict) -> None:
    r = out["rows"]
    assert r["polyrelu 8"]["params"] < r["relu 16"]["params"], r


DIGITS = dict(n_test=360, d_model=32, patch=2, steps=200, batch=32, lr=3e-3, seeds=[0, 1, 2])
DIGITS_QUICK = dict(steps=5, seeds=[0])


def run_digits(quick: bool = False) -> dict:
    c = {**DIGITS, **(DIGITS_QUICK if quick else {})}
    (x_tr, y_tr), (x_te, y_te) = digits_split(n_test=c["n_test"], seed=0)
    d = c["d_model"]
    builders = {
        "vit (2 layers)": lambda: VisionTransformer(8, c["patch"], d, 2, 4, n_classes=10),
        "activator (2 layers)": lambda: ActivatorClassifier(8, c["patch"], d, 2, n_classes=10, token_hidden=16,
                                                            d_ff=4 * d * 2 // 3),
        "activator, no channel MLP": lambda: ActivatorClassifier(8, c["patch"], d, 2, n_classes=10, token_hidden=16,
                                                                 d_ff=4 * d * 2 // 3, channel_mlp=False),
        "vit (4 layers)": lambda: VisionTransformer(8, c["patch"], d, 4, 4, n_classes=10),
        "widenet (4 layers)": lambda: WideNet(8, c["patch"], d, 4, 4, n_classes=10, n_experts=4, top_k=2),
        "widenet, shared norms": lambda: WideNet(8, c["patch"], d, 4, 4, n_classes=10, n_experts=4, top_k=2,
                                                 share_norms=True)}
    rows = {}
    for name, build in builders.items():
        accs = []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = build()
            _train_classifier(model, x_tr, y_tr, c, seed)
            with torch.no_grad():
                accs.append(float((model(x_te).argmax(-1) == y_te).float().mean()))
        rows[name] = dict(params=count_parameters(model), accuracy=seed_spread(accs))
    return dict(config=c, rows=rows)


def _train_classifier(model: nn.Module, x_tr: torch.Tensor, y_tr: torch.Tensor, c: dict, seed: int) -> None:
    """``c["steps"]`` AdamW steps of cross-entropy (plus the model's ``aux_loss``, if any) on digits; leaves it in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"])
    batches = labelled_batches(x_tr, y_tr, batch_size=c["batch"], generator=torch.Generator().manual_seed(seed))
    for _ in range(c["steps"]):
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        aux = getattr(model, "aux_loss", None)
        opt.zero_grad()
        (loss + (aux if aux is not None else 0.0)).backward()
        opt.step()
    model.eval()


def run_digits_sparsity(quick: bool = False) -> dict:
    c = {**DIGITS, **(DIGITS_QUICK if quick else {})}
    (x_tr, y_tr), (x_te, y_te) = digits_split(n_test=c["n_test"], seed=0)
    y_random = torch.randint(0, 10, y_tr.shape, generator=torch.Generator().manual_seed(4000))  # fixed per image
    d = c["d_model"]
    rows = {}
    for name, labels in (("true labels", y_tr), ("random labels", y_random)):
        init, trained, train_acc = [], [], []
        for seed in c["seeds"]:
            torch.manual_seed(seed)
            model = VisionTransformer(8, c["patch"], d, 2, 4, n_classes=10)
            for block in model.blocks:  # the lazy-neuron probe needs exact zeros: ReLU FFNs of the same width
                block.ffn = FeedForward(d, 4 * d, kind="relu")
            init.append(activation_sparsity(model, lambda m: m(x_te[:128])))
            _train_classifier(model, x_tr, labels, c, seed)
            trained.append(activation_sparsity(model, lambda m: m(x_te[:128])))
            with torch.no_grad():
                train_acc.append(float((model(x_tr).argmax(-1) == labels).float().mean()))
        rows[name] = dict(zero_init=np.mean(init, 0).round(4).tolist(), zero_trained=np.mean(trained, 0).round(4).tolist(),
                          nonzero_init=seed_spread([1 - np.mean(z) for z in init]),
                          nonzero_trained=seed_spread([1 - np.mean(z) for z in trained]),
                          train_accuracy=seed_spread(train_acc))
    nonzero = {k: r["nonzero_trained"]["per_seed"] for k, r in rows.items()}
    return dict(config=c, rows=rows, random_minus_true=paired_difference(nonzero["random labels"], nonzero["true labels"]))


def check_digits_sparsity(out: dict) -> None:
    r = out["rows"]["true labels"]
    assert r["nonzero_trained"]["mean"] < r["nonzero_init"]["mean"], r


def check_digits(out: dict) -> None:
    p = {k: r["params"] for k, r in out["rows"].items()}
    assert p["widenet (4 layers)"] < p["vit (4 layers)"], p


EXPERIMENTS = {"ffn_kinds": (run_ffn_kinds, check_ffn_kinds), "sparsity": (run_sparsity, check_sparsity),
               "moe": (run_moe, check_moe), "upcycle": (run_upcycle, check_upcycle), "bam": (run_bam, check_bam),
               "tokenformer": (run_tokenformer, check_tokenformer), "hash_memory": (run_hash_memory, check_hash_memory),
               "mohd": (run_mohd, check_mohd), "structured": (run_structured, check_structured),
               "digits": (run_digits, check_digits), "poly_fit": (run_poly_fit, check_poly_fit),
               "digits_sparsity": (run_digits_sparsity, check_digits_sparsity)}


def report(name: str, r: dict) -> str:
    if name == "digits_sparsity":
        return "digits_sparsity: " + ", ".join(f"{k} non-zero {row['nonzero_init']['mean']:.3f} -> "
                                               f"{row['nonzero_trained']['mean']:.3f}" for k, row in r["rows"].items())
    if name == "poly_fit":
        return "poly_fit: " + ", ".join(f"{k} ({row['params']} params) {row['mse']['mean']:.1e}" for k, row in r["rows"].items())
    if name == "digits":
        return "digits: " + ", ".join(f"{k} {row['accuracy']['mean']:.3f}±{row['accuracy']['std']:.3f}"
                                      for k, row in r["rows"].items())
    if "rows" in r and name != "sparsity":
        return f"{name}: " + ", ".join(f"{k} {row['val_loss']['mean']:.3f}±{row['val_loss']['std']:.3f}"
                                      for k, row in r["rows"].items())
    if name == "sparsity":
        return "sparsity: " + ", ".join(f"{w} init {row['zero_init']} trained {row['zero_trained']}"
                                        for w, row in r["rows"].items())
    return f"{name}: " + ", ".join(f"{k} {v['mean']:.4f}" for k, v in r.items() if isinstance(v, dict) and "mean" in v)


def main(argv=None):
    run_experiments(EXPERIMENTS, name="moe", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
