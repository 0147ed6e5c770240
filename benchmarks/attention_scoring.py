"""Chapter 02, scoring functions: small models trained with softmax, off-by-one, clipped, gated and sigmoid attention,
then measured for attention sinks, activation outliers and the loss of 8-bit fake quantization.

    python benchmarks/attention_scoring.py                # both experiments: writes benchmarks/results/attention_scoring.json
                                                          # (+ attention_scoring.png, attention_scoring_softmax.pt)
    python benchmarks/attention_scoring.py --only noop    # one of: charlm, noop (keeps the other's saved results)
    python benchmarks/attention_scoring.py --quick        # tiny sizes, a smoke run; nothing saved

``charlm``: a 3-layer character LM (d_model 64, 4 heads, 1000 steps) trained four ways, differing only in
``mixer_kwargs`` of :class:`minilib.models.TransformerLM`: ``softmax``, ``clipped`` (zeta = 1, gamma = -0.03), ``gated``
(a sigmoid gate per head and token) :cite:`bondarenko2023quantizable`, and ``sigmoid`` (bias -log n)
:cite:`ramapuram2024sigmoid`, each with three seeds (the seed sets the initialisation and the training batches).
The gate adds 780 parameters to 154k (0.5%); the other three have identical parameter counts. Same data
(``tiny_corpus``, ``CharTokenizer``) and optimiser. Every training and evaluation window opens a line, and its first
token (the newline) is replaced by a beginning-of-sequence id that occurs nowhere else (``bos_id = vocab_size``), as
in large models, where that first token is where attention sinks form :cite:`xiao2024efficient`. The seed-0 softmax
model's weights are saved in float16 so that the chapter can look for sinks and apply ACT live.

``noop``: a 2-layer model (d_model 32, 2 heads, 1500 steps, three seeds) on BOS followed by the uniformly random tokens
of :func:`minilib.data.induction_heads`, trained on every next token, so that attention heads have nothing useful to
read at almost every position; with ``softmax``, ``softmax1`` (off-by-one), ``clipped`` and ``gated`` attention.

Per model and seed, on held-out data (the character windows' start offsets are saved):

- the float loss and the loss with W8A8 and W8A6 per-tensor fake quantization of every linear layer's weight and
  input (:func:`minilib.compress.fake_quantized`);
- max |x|, kurtosis and RMS of four activations per layer: the residual stream after the block, the normalised input
  of the attention projections, the attention output (input of W_O) and the feed-forward hidden layer (input of W_2);
  kurtosis E[(x - mean)^4] / Var(x)^2 is taken over all elements of the tensor (3 for a Gaussian);
- per layer and head: the attention weight on token 0 (BOS), the row sum, the share of all-zero rows, the mean gate;
  for the character LM also the weight on delimiters (space, newline, full stop).

Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON). Each character LM took about a minute
and each no-op model about 13 s on a 2-core machine that other jobs shared (``seconds`` per model in the JSON).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import artifact_path, downsample, run_experiments  # noqa: E402
from minilib.compress import fake_quantized  # noqa: E402
from minilib.data import CharTokenizer, induction_heads, tiny_corpus, train_val_split  # noqa: E402
from minilib.models import TransformerLM, attention_maps, lm_loss, train  # noqa: E402

SEEDS = [0, 1, 2]
CONFIG = dict(n_chars=300_000, d_model=64, n_layers=3, n_heads=4, seq_len=64, batch=32, steps=1000, lr=3e-3,
              warmup=50, weight_decay=0.1, eval_windows=128, delimiters=" \n.", skip_queries=8, seeds=SEEDS)
QUICK = dict(CONFIG, n_chars=20_000, d_model=16, n_layers=2, n_heads=2, seq_len=32, steps=10, warmup=2,
             eval_windows=16, seeds=[0, 1])
VARIANTS = {
    "softmax": {},
    "clipped": dict(score="clipped", score_kwargs=dict(zeta=1.0, gamma=-0.03)),
    "gated": dict(gate=True),
    "sigmoid": dict(score="sigmoid"),
}
SITES = ("resid", "attn_in", "attn_out", "ffn_hidden")
trained_softmax: dict[str, torch.Tensor] = {}  # the seed-0 softmax weights of the last charlm run, saved by main


def line_starts(ids: torch.Tensor, newline_id: int, seq_len: int) -> torch.Tensor:
    """Positions of the newlines that can open a window of ``seq_len + 1`` tokens."""
    return (ids[: len(ids) - seq_len - 1] == newline_id).nonzero()[:, 0]


def windows(ids: torch.Tensor, starts: torch.Tensor, seq_len: int, bos_id: int):
    """Inputs ``(BOS, ids[a + 1 : a + T])`` and targets ``ids[a + 1 : a + T + 1]`` for every start ``a``."""
    w = ids[starts[:, None] + torch.arange(seq_len + 1)]
    w[:, 0] = bos_id
    return w[:, :-1], w[:, 1:]


def line_batches(ids: torch.Tensor, newline_id: int, bos_id: int, *, batch_size: int, seq_len: int,
                 generator: torch.Generator):
    """Endless training windows that each open a line, their first token (the newline) replaced by ``bos_id``."""
    starts = line_starts(ids, newline_id, seq_len)
    while True:
        yield windows(ids, starts[torch.randint(len(starts), (batch_size,), generator=generator)], seq_len, bos_id)


def char_corpus(c: dict):
    """The generated corpus of ``c["n_chars"]`` characters, its tokenizer, the train/validation ids, the newline id
    and ``c["eval_windows"]`` evenly spread validation windows' starts (lines of ``c["seq_len"]`` tokens)."""
    text, source = tiny_corpus(c["n_chars"], seed=0)
    tok = CharTokenizer(text)
    train_ids, val_ids = train_val_split(tok.encode(text), 0.1)
    newline = int(tok.encode("\n")[0])
    val_starts = line_starts(val_ids, newline, c["seq_len"])
    val_starts = val_starts[:: max(1, len(val_starts) // c["eval_windows"])][: c["eval_windows"]]
    return tok, source, train_ids, val_ids, newline, val_starts


def data(c: dict):
    tok, source, train_ids, val_ids, newline, val_starts = char_corpus(c)
    return tok, source, train_ids, newline, val_starts, windows(val_ids, val_starts, c["seq_len"], tok.vocab_size)


def kurtosis(x: torch.Tensor) -> float:
    r"""$E[(x - \bar x)^4] / \operatorname{Var}(x)^2$ over all elements (3 for a Gaussian)."""
    x = x.double().flatten()
    x = x - x.mean()
    return (x.pow(4).mean() / x.pow(2).mean() ** 2).item()


@torch.no_grad()
def activations(model: TransformerLM, idx: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Per layer: residual stream after the block, attention input, attention output (W_O input), FFN hidden (W_2 input)."""
    acts = {site: [] for site in SITES}
    hooks = []
    for block in model.blocks:
        hooks.append(block.register_forward_hook(lambda m, a, out: acts["resid"].append(out)))
        hooks.append(block.mixer.wq.register_forward_pre_hook(lambda m, a: acts["attn_in"].append(a[0])))
        hooks.append(block.mixer.wo.register_forward_pre_hook(lambda m, a: acts["attn_out"].append(a[0])))
        hooks.append(block.ffn.w2.register_forward_pre_hook(lambda m, a: acts["ffn_hidden"].append(a[0])))
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    return acts


@torch.no_grad()
def outlier_stats(model: TransformerLM, x: torch.Tensor) -> dict:
    """max |x|, kurtosis and RMS of each activation site (see :func:`activations`), per layer."""
    acts = activations(model, x)
    return dict(max_abs={site: [round(a.abs().max().item(), 3) for a in acts[site]] for site in SITES},
                kurtosis={site: [round(kurtosis(a), 2) for a in acts[site]] for site in SITES},
                rms={site: [round(a.pow(2).mean().sqrt().item(), 4) for a in acts[site]] for site in SITES})


@torch.no_grad()
def quantization_gaps(model: TransformerLM, batch, float_loss: float) -> dict:
    """Loss increase with W8A8 and W8A6 per-tensor fake quantization of every linear layer."""
    out = {}
    for name, bits in [("w8a8", 8), ("w8a6", 6)]:
        with fake_quantized(model, weight_bits=8, act_bits=bits):
            out[f"{name}_loss"] = lm_loss(model, batch).item()
        out[f"{name}_gap"] = out[f"{name}_loss"] - float_loss
    return out


@torch.no_grad()
def attention_stats(model: TransformerLM, x: torch.Tensor, queries: slice) -> tuple[torch.Tensor, dict]:
    """Per layer and head, over the given queries: mass on token 0, total row mass, share of all-zero rows."""
    maps = attention_maps(model, x)[..., queries, :]  # (L, B, H, T', T)
    rows = maps.sum(-1)
    stats = dict(first_token_mass=maps[..., 0].mean(dim=(1, 3)).round(decimals=4).tolist(),
                 row_mass=rows.mean(dim=(1, 3)).round(decimals=4).tolist(),
                 silent_row_fraction=(rows == 0).float().mean(dim=(1, 3)).round(decimals=4).tolist())
    if model.blocks[0].mixer.wg is not None:
        gates = []
        hooks = [b.mixer.wg.register_forward_hook(lambda m, a, o: gates.append(torch.sigmoid(o[:, queries]))) for b in model.blocks]
        model(x)
        for hook in hooks:
            hook.remove()
        stats["mean_gate"] = [g.mean(dim=(0, 1)).round(decimals=4).tolist() for g in gates]
    return maps, stats


@torch.no_grad()
def measure(model: TransformerLM, tok: CharTokenizer, val, c: dict) -> dict:
    model.eval()
    x, y = val
    out = dict(val_loss=lm_loss(model, val).item())
    out.update(quantization_gaps(model, val, out["val_loss"]))
    out.update(outlier_stats(model, x))
    maps, stats = attention_stats(model, x, slice(c["skip_queries"], None))
    out.update(stats)
    delim = torch.isin(x, tok.encode(c["delimiters"]))
    out["delimiter_mass"] = (maps * delim[None, :, None, None, :]).sum(-1).mean(dim=(1, 3)).round(decimals=4).tolist()
    out["delimiter_fraction"] = delim[:, c["skip_queries"]:].float().mean().item()
    return out


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_charlm(quick: bool) -> dict:
    """Every scoring variant and seed on the character LM; ``models[name]`` is the list of per-seed measurements."""
    c = QUICK if quick else CONFIG
    tok, source, train_ids, newline, val_starts, val = data(c)
    results = dict(config=c, variants=VARIANTS, entropy_floor=source.entropy_rate_per_char(), bos_id=tok.vocab_size,
                   eval_starts=val_starts.tolist(), params={}, models={name: [] for name in VARIANTS})
    for name, kwargs in VARIANTS.items():
        for seed in c["seeds"]:
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = TransformerLM(tok.vocab_size + 1, c["d_model"], c["n_layers"], c["n_heads"],  # + 1: the BOS id
                                  max_len=c["seq_len"], mixer_kwargs=kwargs)
            batches = line_batches(train_ids, newline, tok.vocab_size, batch_size=c["batch"], seq_len=c["seq_len"],
                                   generator=torch.Generator().manual_seed(seed))
            losses = train(model, batches, steps=c["steps"], lr=c["lr"], warmup_steps=c["warmup"],
                           weight_decay=c["weight_decay"], progress=False)
            r = dict(seed=seed, **measure(model, tok, val, c), curve=downsample(losses),
                     seconds=round(time.perf_counter() - start, 1))
            results["models"][name].append(r)
            results["params"][name] = n_params(model)
            print(f"  {name:8s} seed {seed}: val {r['val_loss']:.4f}  W8A8 gap {r['w8a8_gap']:+.5f}  "
                  f"W8A6 gap {r['w8a6_gap']:+.4f}  kurt(resid) {r['kurtosis']['resid']}  [{r['seconds']} s]", flush=True)
            if name == "softmax" and seed == 0:
                trained_softmax.update({k: v.half() for k, v in model.state_dict().items()})
    return results


NOOP = dict(vocab_size=16, seq_len=32, d_model=32, n_layers=2, n_heads=2, batch=32, steps=1500, lr=3e-3, warmup=30,
            eval_batch=256, skip_queries=4, seeds=SEEDS)
NOOP_QUICK = dict(NOOP, steps=10, warmup=2, eval_batch=32, seeds=[0, 1])
NOOP_VARIANTS = {
    "softmax": {},
    "softmax1": dict(score="softmax1"),
    "clipped": dict(score="clipped", score_kwargs=dict(zeta=1.0, gamma=-0.03)),
    "gated": dict(gate=True),
}


def noop_batches(c: dict, generator: torch.Generator, batch_size: int):
    """BOS, then :func:`minilib.data.induction_heads` (random tokens; the last one a trigger seen once before).

    Every next token is trained on, so at all positions but the last the best prediction is uniform and an attention
    head has nothing useful to read: the "no-op" situation of :cite:`bondarenko2023quantizable`. Ids: content
    ``0..V-1``, trigger ``V``, BOS ``V + 1``.
    """
    while True:
        b = induction_heads(batch_size, seq_len=c["seq_len"], vocab_size=c["vocab_size"], generator=generator)
        z = torch.cat([torch.full((batch_size, 1), c["vocab_size"] + 1), b.inputs, b.targets[:, -1:]], dim=1)
        yield z[:, :-1], z[:, 1:]


def run_noop(quick: bool) -> dict:
    """Every no-op variant and seed on random tokens; ``models[name]`` is the list of per-seed measurements."""
    c = NOOP_QUICK if quick else NOOP
    results = dict(config=c, variants=NOOP_VARIANTS, params={}, models={name: [] for name in NOOP_VARIANTS})
    test = next(noop_batches(c, torch.Generator().manual_seed(12345), c["eval_batch"]))
    for name, kwargs in NOOP_VARIANTS.items():
        for seed in c["seeds"]:
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = TransformerLM(c["vocab_size"] + 2, c["d_model"], c["n_layers"], c["n_heads"],
                                  max_len=c["seq_len"] + 1, mixer_kwargs=kwargs)
            losses = train(model, noop_batches(c, torch.Generator().manual_seed(seed), c["batch"]), steps=c["steps"],
                           lr=c["lr"], warmup_steps=c["warmup"], progress=False)
            model.eval()
            with torch.no_grad():
                logits = model(test[0])
            r = dict(seed=seed, test_loss=lm_loss(model, test).item(),
                     last_accuracy=(logits[:, -1].argmax(-1) == test[1][:, -1]).float().mean().item())
            r.update(quantization_gaps(model, test, r["test_loss"]))
            r.update(outlier_stats(model, test[0]))
            r.update(attention_stats(model, test[0], slice(c["skip_queries"], -1))[1])  # the last query has work to do
            r["curve"] = downsample(losses)
            r["seconds"] = round(time.perf_counter() - start, 1)
            results["models"][name].append(r)
            results["params"][name] = n_params(model)
            print(f"  no-op {name:8s} seed {seed}: loss {r['test_loss']:.4f}  W8A6 gap {r['w8a6_gap']:+.5f}  "
                  f"max BOS mass {max(max(h) for h in r['first_token_mass']):.3f}  "
                  f"min row mass {min(min(h) for h in r['row_mass']):.3f}  [{r['seconds']} s]", flush=True)
    results["uniform_first_token_share"] = (1 / torch.arange(c["skip_queries"] + 1, c["seq_len"] + 1)).mean().item()
    return results


def seed_values(models: dict, name: str, key: str, site: str | None = None) -> np.ndarray:
    """One row per seed: ``models[name][i][key]`` (or ``[key][site]``, a per-layer list) as an array."""
    return np.array([r[key] if site is None else r[key][site] for r in models[name]])


def check_charlm(out: dict) -> None:
    """The chapter's claims on the character LM: on the means over seeds, or in every seed where it says so."""
    m = out["models"]
    params = out["params"]
    assert params["softmax"] == params["clipped"] == params["sigmoid"] and params["gated"] < 1.01 * params["softmax"]
    loss = {name: seed_values(m, name, "val_loss").mean() for name in m}
    assert abs(loss["sigmoid"] / loss["softmax"] - 1) < 0.03, "sigmoid attention within 3% of softmax"
    assert all(r["w8a8_gap"] < 0.006 * r["val_loss"] for runs in m.values() for r in runs), "W8A8 costs under 0.6%"
    for key in ("kurtosis", "max_abs"):
        gated, softmax = seed_values(m, "gated", key, "resid"), seed_values(m, "softmax", key, "resid")
        assert np.all(gated[:, :2] < softmax[:, :2]), f"gates lower the {key} after blocks 1 and 2 in every seed"


def check_noop(out: dict) -> None:
    """The chapter's claims on the random-token models: softmax parks its weight on BOS, off-by-one softmax can spend less."""
    m, uniform = out["models"], out["uniform_first_token_share"]
    bos_peak = {name: [max(max(layer) for layer in r["first_token_mass"]) for r in runs] for name, runs in m.items()}
    row_low = {name: [min(min(layer) for layer in r["row_mass"]) for r in runs] for name, runs in m.items()}
    assert min(bos_peak["softmax"]) > 10 * uniform, bos_peak
    assert min(row_low["softmax1"]) < 0.1 and min(row_low["softmax"]) > 0.999, row_low


def report(name: str, r: dict) -> str:
    loss_key = "val_loss" if name == "charlm" else "test_loss"
    rows = []
    for variant in r["models"]:
        loss, gap8, gap6 = (1e3 * seed_values(r["models"], variant, k) if k != loss_key else
                            seed_values(r["models"], variant, k) for k in (loss_key, "w8a8_gap", "w8a6_gap"))
        rows.append(f"  {variant:8s} params {r['params'][variant]:7,d}  {loss_key} {loss.mean():.4f} ± {loss.std():.4f}  "
                    f"W8A8 gap {gap8.mean():+.2f} ± {gap8.std():.2f} mnats  W8A6 gap {gap6.mean():+.2f} ± {gap6.std():.2f} mnats")
    return f"{name} (mean ± std over {len(r['config']['seeds'])} seeds):\n" + "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    """Training curves of the character LMs, BOS mass per head in the no-op task, and the fake-quantization gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charlm, noop = results["charlm"], results["noop"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, runs in charlm["models"].items():
        curve = np.mean([r["curve"] for r in runs], axis=0)
        axes[0].plot(np.linspace(0, charlm["config"]["steps"], len(curve)), curve, label=name)
    axes[0].axhline(charlm["entropy_floor"], color="k", ls=":", label="entropy floor")
    axes[0].set(xlabel="training step", ylabel="training loss (nats/char, mean of seeds)",
                title="Character LM, four scoring functions", ylim=(0.6, 2.0))
    axes[0].legend(fontsize=8)
    c = noop["config"]
    heads = [f"{l + 1}.{h + 1}" for l in range(c["n_layers"]) for h in range(c["n_heads"])]
    for i, (name, runs) in enumerate(noop["models"].items()):
        axes[1].bar(np.arange(len(heads)) + (i - 1.5) * 0.2, np.ravel(runs[0]["first_token_mass"]), 0.2, label=name)
    axes[1].axhline(noop["uniform_first_token_share"], color="k", ls=":", label="uniform")
    axes[1].set_xticks(np.arange(len(heads)), heads)
    axes[1].set(xlabel="layer.head", ylabel="attention weight on BOS", title="Random tokens: sinks (seed 0)")
    axes[1].legend(fontsize=8)
    names = ["softmax", "clipped", "gated"]
    for offset, models, key, label in ((-0.2, charlm["models"], "w8a8_gap", "character LM, W8A8"),
                                       (0.2, noop["models"], "w8a6_gap", "random tokens, W8A6")):
        gaps = [1e3 * seed_values(models, n, key) for n in names]
        axes[2].bar(np.arange(3) + offset, [g.mean() for g in gaps], 0.4, yerr=[g.std() for g in gaps], capsize=3,
                    label=label)
    axes[2].set_xticks(np.arange(3), names)
    axes[2].set(xlabel="scoring", ylabel="loss increase (millinats/token)", title="Fake-quantization gap (mean ± std)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


EXPERIMENTS = {"charlm": (run_charlm, check_charlm), "noop": (run_noop, check_noop)}


def main(argv=None) -> None:
    results = run_experiments(EXPERIMENTS, name="attention_scoring", description=__doc__, report=report, argv=argv)
    if trained_softmax:
        torch.save(trained_softmax, artifact_path("attention_scoring_softmax.pt"))
    if {"charlm", "noop"} <= results.keys():
        plot(results, artifact_path("attention_scoring.png"))


if __name__ == "__main__":
    main()
