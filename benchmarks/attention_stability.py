"""Attention entropy collapse and σReparam: a tiny ViT on the 8x8 digits trained at a high learning rate.

    python benchmarks/attention_stability.py        # writes benchmarks/results/attention_stability.{json,png}

The ViT (2x2 pixel patches -> 16 tokens, d_model 32, 2 pre-LayerNorm layers of 4 heads, mean-pooled
classifier) is built from minilib pieces: ``MultiHeadAttention`` (non-causal), ``FeedForward``, ``LayerNorm``.
Each run trains with Adam at a constant learning rate, no warm-up, no weight decay and no gradient clipping,
once as it is and once after :func:`minilib.norms.sigma_reparam_` has replaced every linear layer by a
:class:`~minilib.norms.SigmaReparamLinear` (same function at step 0). Every ``EVAL_EVERY`` steps it records, on
the held-out images, each head's attention entropy (mean over images and query tokens, in nats; the uniform
maximum is log 16 = 2.77) and the spectral norm of each head's logit matrix $W_Q^{h\top} W_K^h / \\sqrt{D}$.
The same ViT is also trained at the calm learning rate with sigmoid attention (bias $-\log 16$) against softmax
(``--only sigmoid``), for the sigmoid-attention claim of the scoring section.
Torch runs on one thread; on a shared 2-core machine the collapse runs took about 2 minutes (``seconds`` in
the JSON). The claims the chapter states are asserted at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import downsample  # noqa: E402
from minilib.attention import MultiHeadAttention, attention_entropy  # noqa: E402
from minilib.models import FeedForward  # noqa: E402
from minilib.norms import LayerNorm, SigmaReparamLinear, sigma_reparam_  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COMMAND = "python benchmarks/attention_stability.py"
CONFIG = dict(patch=2, d_model=32, n_layers=2, n_heads=4, d_ff=64, steps=600, batch=64, n_test=297,
              eval_every=10, high_lr=3e-2, high_lr_seeds=[0, 1, 2], low_lr=1e-3, very_high_lr=1e-1)


class TinyViT(nn.Module):
    r"""Vision Transformer for 8x8 images: patches -> linear embedding + learned positions -> pre-LN blocks -> mean -> classes.

    ``images (B, 8, 8) -> logits (B, 10)``; with ``return_entropy`` also the per-head attention entropy
    ``(n_layers, n_heads)`` averaged over images and query tokens.
    """

    def __init__(self, *, patch: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, score: str = "softmax"):
        super().__init__()
        self.patch, n_tokens = patch, (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(n_tokens, d_model))
        self.attn = nn.ModuleList(MultiHeadAttention(d_model, n_heads, score=score) for _ in range(n_layers))
        self.ffn = nn.ModuleList(FeedForward(d_model, d_ff, kind="gelu") for _ in range(n_layers))
        self.norm1 = nn.ModuleList(LayerNorm(d_model) for _ in range(n_layers))
        self.norm2 = nn.ModuleList(LayerNorm(d_model) for _ in range(n_layers))
        self.final_norm = LayerNorm(d_model)
        self.head = nn.Linear(d_model, 10)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        B, p = images.shape[0], self.patch
        grid = images.reshape(B, 8 // p, p, 8 // p, p).permute(0, 1, 3, 2, 4)
        return grid.reshape(B, (8 // p) ** 2, p * p)

    def forward(self, images: torch.Tensor, *, return_entropy: bool = False):
        x = self.embed(self.tokens(images)) + self.pos
        positions = torch.arange(x.shape[1])
        entropies = []
        for attn, ffn, norm1, norm2 in zip(self.attn, self.ffn, self.norm1, self.norm2):
            h = norm1(x)
            if return_entropy:
                q, k, _ = attn.project_qkv(h, positions)
                entropies.append(attention_entropy(attn.weights(q, k, causal=False)).mean(dim=(0, 2)))
            x = x + attn(h, causal=False)
            x = x + ffn(norm2(x))
        logits = self.head(self.final_norm(x).mean(dim=1))
        return (logits, torch.stack(entropies)) if return_entropy else logits


def weight_of(layer: nn.Module) -> torch.Tensor:
    """The weight a linear layer applies: $\\widehat W$ for σReparam, $W$ otherwise."""
    return layer.effective_weight() if isinstance(layer, SigmaReparamLinear) else layer.weight


@torch.no_grad()
def logit_spectral_norms(model: TinyViT) -> torch.Tensor:
    r"""$\sigma_h = \lVert W_Q^{h\top} W_K^h \rVert_2 / \sqrt{D}$ for every layer and head, ``(n_layers, n_heads)``."""
    out = []
    for attn in model.attn:
        D = attn.head_dim
        wq = weight_of(attn.wq).view(attn.n_heads, D, -1)
        wk = weight_of(attn.wk).view(attn.n_heads, D, -1)
        out.append(torch.linalg.matrix_norm(wq.transpose(1, 2) @ wk, ord=2) / D ** 0.5)
    return torch.stack(out)


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images / 16.0, dtype=torch.float32)
    labels = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    test, train = perm[:CONFIG["n_test"]], perm[CONFIG["n_test"]:]
    return (images[train], labels[train]), (images[test], labels[test])


def run(lr: float, reparam: bool, seed: int, data, *, score: str = "softmax") -> dict:
    """Train one TinyViT; returns its per-step losses, the recorded entropies and spectral norms, and test accuracy."""
    c = CONFIG
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    model = TinyViT(patch=c["patch"], d_model=c["d_model"], n_layers=c["n_layers"], n_heads=c["n_heads"], d_ff=c["d_ff"],
                    score=score)
    if reparam:
        sigma_reparam_(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1000 + seed)
    losses, entropy, spectral, eval_steps = [], [], [], []
    for step in range(c["steps"] + 1):
        if step % c["eval_every"] == 0:
            model.eval()
            with torch.no_grad():
                entropy.append(model(x_test, return_entropy=True)[1])
            spectral.append(logit_spectral_norms(model))
            eval_steps.append(step)
        if step == c["steps"]:
            break
        model.train()
        idx = torch.randint(0, len(y_train), (c["batch"],), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    entropy, spectral = torch.stack(entropy), torch.stack(spectral)  # (n_evals, n_layers, n_heads)
    return dict(
        lr=lr, reparam=reparam, seed=seed, score=score, test_accuracy=accuracy,
        loss_10=downsample(losses, len(losses) // 10),
        final_loss=float(np.mean(losses[-50:])), loss_std_last200=float(np.std(losses[-200:])),
        max_loss_after_100=float(np.max(losses[100:])),
        eval_steps=eval_steps,
        entropy_mean=[round(v, 4) for v in entropy.mean(dim=(1, 2)).tolist()],
        entropy_min_head=[round(v, 4) for v in entropy.amin(dim=(1, 2)).tolist()],
        entropy_final_per_head=[[round(v, 4) for v in row] for row in entropy[-1].tolist()],
        logit_sigma_max=[round(v, 4) for v in spectral.amax(dim=(1, 2)).tolist()],
        final_entropy_mean=float(entropy[-1].mean()), final_entropy_min_head=float(entropy[-1].min()),
        final_logit_sigma_max=float(spectral[-1].max()),
    )


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_s, ax_l) = plt.subplots(1, 3, figsize=(15, 4))
    for r in results["runs"]:
        if r["lr"] != CONFIG["high_lr"]:
            continue
        color = "tab:orange" if r["reparam"] else "tab:blue"
        label = ("σReparam" if r["reparam"] else "baseline") if r["seed"] == 0 else None
        ax_e.plot(r["eval_steps"], r["entropy_min_head"], color=color, label=label)
        ax_s.semilogy(r["eval_steps"], r["logit_sigma_max"], color=color, label=label)
        ax_l.plot(10 * np.arange(len(r["loss_10"])) + 5, r["loss_10"], color=color, label=label)
    ax_e.axhline(np.log(16), color="grey", ls=":", label="uniform (log 16)")
    ax_e.set(xlabel="training step", ylabel="lowest head entropy (nats)",
             title=f"Attention entropy, lr = {CONFIG['high_lr']:g}, no warm-up")
    ax_s.set(xlabel="training step", ylabel=r"max$_h\ \|W_Q^{h\top} W_K^h\|_2/\sqrt{D}$", title="Spectral norm of the logits")
    ax_l.set(xlabel="training step", ylabel="training loss (nats, 10-step mean)", title="Training loss")
    ax_e.legend(), ax_s.legend(), ax_l.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def run_collapse(data) -> dict:
    """Baseline and σReparam at the collapse learning rate (three seeds), a calm one and a very high one."""
    c = CONFIG
    plan = [(c["high_lr"], seed) for seed in c["high_lr_seeds"]] + [(c["low_lr"], 0), (c["very_high_lr"], 0)]
    runs = []
    for lr, seed in plan:
        for reparam in (False, True):
            runs.append(run(lr, reparam, seed, data))
            r = runs[-1]
            print(f"lr={lr:g} seed={seed} reparam={reparam}: acc {r['test_accuracy']:.3f}, final loss {r['final_loss']:.3f}, "
                  f"entropy mean {r['final_entropy_mean']:.3f} min-head {r['final_entropy_min_head']:.3f}, "
                  f"logit sigma max {r['final_logit_sigma_max']:.2f}", flush=True)
    return dict(runs=runs)


def run_sigmoid(data) -> dict:
    """The same ViT with softmax and with sigmoid attention (b = -log 16) at the calm learning rate, three seeds."""
    rows = []
    for seed in CONFIG["high_lr_seeds"]:
        for score in ("softmax", "sigmoid"):
            r = run(CONFIG["low_lr"], False, seed, data, score=score)
            rows.append({k: r[k] for k in ("score", "seed", "lr", "test_accuracy", "final_loss")})
            print(f"sigmoid_vit {score:8s} seed={seed}: acc {r['test_accuracy']:.3f}, final loss {r['final_loss']:.3f}",
                  flush=True)
    return dict(sigmoid_vit=rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["collapse", "sigmoid"], help="run one experiment, keep the other's saved results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    data = digits()
    path = RESULTS / "attention_stability.json"
    results = json.loads(path.read_text()) if args.only and path.exists() else {}
    if args.only != "sigmoid":
        results.update(run_collapse(data))
    if args.only != "collapse":
        results.update(run_sigmoid(data))
    results.update(command=COMMAND, torch=torch.__version__, threads=1, config=CONFIG)
    results[f"seconds_{args.only}" if args.only else "seconds"] = round(time.perf_counter() - start, 1)
    check(results)
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, separators=(",", ":")))
    plot(results, RESULTS / "attention_stability.png")
    print(f"wrote {path} in {round(time.perf_counter() - start, 1)} s")


def check(results: dict) -> None:
    """The claims the chapter states: at the high learning rate, for every seed, the baseline collapses and σReparam does not."""
    runs = results["runs"]

    def pick(lr, seed, reparam):
        return next(r for r in runs if r["lr"] == lr and r["seed"] == seed and r["reparam"] == reparam)

    for seed in CONFIG["high_lr_seeds"]:
        base, sigma = pick(CONFIG["high_lr"], seed, False), pick(CONFIG["high_lr"], seed, True)
        assert base["final_entropy_min_head"] < 0.01 < 0.1 < sigma["final_entropy_min_head"], seed
        assert np.mean(sigma["entropy_mean"][-10:]) > np.mean(base["entropy_mean"][-10:]), seed
        assert base["final_logit_sigma_max"] > 10 * sigma["final_logit_sigma_max"], seed
        assert sigma["final_loss"] < base["final_loss"] and sigma["test_accuracy"] > base["test_accuracy"], seed
    for reparam in (False, True):
        calm = pick(CONFIG["low_lr"], 0, reparam)
        assert calm["final_entropy_min_head"] > 1.0 and calm["test_accuracy"] > 0.9, reparam
    accuracy = {score: np.mean([r["test_accuracy"] for r in results["sigmoid_vit"] if r["score"] == score])
                for score in ("softmax", "sigmoid")}
    assert accuracy["sigmoid"] > accuracy["softmax"] - 0.03, accuracy


if __name__ == "__main__":
    main()
