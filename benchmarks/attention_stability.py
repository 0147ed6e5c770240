r"""Attention entropy collapse and σReparam: a tiny ViT on the 8x8 digits trained at a high learning rate.

    python benchmarks/attention_stability.py                  # writes benchmarks/results/attention_stability.{json,png}
    python benchmarks/attention_stability.py --only sigmoid   # one of: collapse, sigmoid
    python benchmarks/attention_stability.py --quick          # tiny sizes, a smoke run; nothing saved

The ViT is :class:`minilib.vision.VisionTransformer`: 2x2 pixel patches -> 16 tokens, d_model 32, 2 pre-LayerNorm
layers of 4 heads, GELU feed-forward of width 64, mean-pooled classifier. The data are
:func:`minilib.data.digits_split` (297 test images, seed 0). Each run trains with Adam at a constant learning
rate, no warm-up, no weight decay and no gradient clipping, once as it is and once after
:func:`minilib.norms.sigma_reparam_` has replaced every linear layer by a :class:`~minilib.norms.SigmaReparamLinear`
(same function at step 0). Every ``eval_every`` steps it records, on the held-out images, each head's attention
entropy (mean over images and query tokens, in nats; the uniform maximum is log 16 = 2.77) and the spectral norm of
each head's logit matrix $W_Q^{h\top} W_K^h / \sqrt{D}$.

``collapse``: baseline and σReparam at the collapse learning rate 3e-2, at a calm one (1e-3) and at a very high one
(1e-1), three seeds each (the seed sets the initialisation and the batches). ``sigmoid``: the same ViT with softmax
and with sigmoid attention (bias $-\log 16$) at the calm learning rate, three seeds, for the sigmoid-attention claim
of the scoring section. σReparam adds one scalar per linear layer (14 parameters); sigmoid attention adds none.
Torch runs on ``--threads`` CPU threads (default 1, which gave the saved JSON); each run took about 10 s on an idle
core (``seconds`` per experiment in the JSON). The claims the chapter states are asserted before anything is saved.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import artifact_path, downsample, run_experiments  # noqa: E402
from minilib.attention import attention_entropy  # noqa: E402
from minilib.data import digits_split, labelled_batches  # noqa: E402
from minilib.norms import SigmaReparamLinear, sigma_reparam_  # noqa: E402
from minilib.vision import VisionTransformer  # noqa: E402

SEEDS = [0, 1, 2]
CONFIG = dict(patch=2, d_model=32, n_layers=2, n_heads=4, d_ff=64, steps=600, batch=64, n_test=297, eval_every=10,
              high_lr=3e-2, low_lr=1e-3, very_high_lr=1e-1, seeds=SEEDS)
QUICK = dict(CONFIG, steps=20, seeds=[0, 1])


def weight_of(layer: nn.Module) -> torch.Tensor:
    r"""The weight a linear layer applies: $\widehat W$ for σReparam, $W$ otherwise."""
    return layer.effective_weight() if isinstance(layer, SigmaReparamLinear) else layer.weight


@torch.no_grad()
def logit_spectral_norms(model: VisionTransformer) -> torch.Tensor:
    r"""$\sigma_h = \lVert W_Q^{h\top} W_K^h \rVert_2 / \sqrt{D}$ for every layer and head, ``(n_layers, n_heads)``."""
    out = []
    for block in model.blocks:
        attn, D = block.attn, block.attn.head_dim
        wq = weight_of(attn.wq).view(attn.n_heads, D, -1)
        wk = weight_of(attn.wk).view(attn.n_heads, D, -1)
        out.append(torch.linalg.matrix_norm(wq.transpose(1, 2) @ wk, ord=2) / D ** 0.5)
    return torch.stack(out)


@torch.no_grad()
def head_entropies(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Attention entropy of every layer and head, ``(n_layers, n_heads)``, averaged over images and query tokens."""
    _, maps = model(images, return_attention=True)
    return torch.stack([attention_entropy(w).mean(dim=(0, 2)) for w in maps])


def train_vit(c: dict, data, *, lr: float, reparam: bool, seed: int, score: str = "softmax") -> dict:
    """Train one ViT; returns its per-step losses, the recorded entropies and spectral norms, and test accuracy."""
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    model = VisionTransformer(8, c["patch"], c["d_model"], c["n_layers"], c["n_heads"], n_classes=10, d_ff=c["d_ff"],
                              mixer_kwargs=dict(score=score))
    if reparam:
        sigma_reparam_(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    batches = labelled_batches(x_train, y_train, batch_size=c["batch"], generator=torch.Generator().manual_seed(1000 + seed))
    losses, entropy, spectral, eval_steps = [], [], [], []
    for step in range(c["steps"] + 1):
        if step % c["eval_every"] == 0:
            model.eval()
            entropy.append(head_entropies(model, x_test))
            spectral.append(logit_spectral_norms(model))
            eval_steps.append(step)
        if step == c["steps"]:
            break
        model.train()
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(-1) == y_test).float().mean().item()
    entropy, spectral = torch.stack(entropy), torch.stack(spectral)  # (n_evals, n_layers, n_heads)
    return dict(
        lr=lr, reparam=reparam, seed=seed, score=score, params=sum(p.numel() for p in model.parameters()),
        test_accuracy=accuracy, loss_10=downsample(losses, len(losses) // 10),
        final_loss=float(np.mean(losses[-50:])), loss_std_last200=float(np.std(losses[-200:])),
        eval_steps=eval_steps,
        entropy_mean=[round(v, 4) for v in entropy.mean(dim=(1, 2)).tolist()],
        entropy_min_head=[round(v, 4) for v in entropy.amin(dim=(1, 2)).tolist()],
        entropy_final_per_head=[[round(v, 4) for v in row] for row in entropy[-1].tolist()],
        logit_sigma_max=[round(v, 4) for v in spectral.amax(dim=(1, 2)).tolist()],
        final_entropy_mean=float(entropy[-1].mean()), final_entropy_min_head=float(entropy[-1].min()),
        final_logit_sigma_max=float(spectral[-1].max()),
    )


def digits(c: dict):
    return digits_split(n_test=c["n_test"], seed=0)


def run_collapse(quick: bool) -> dict:
    """Baseline and σReparam at the collapse learning rate, a calm one and a very high one, every seed."""
    c = QUICK if quick else CONFIG
    data = digits(c)
    runs = []
    for lr in (c["high_lr"], c["low_lr"], c["very_high_lr"]):
        for seed in c["seeds"]:
            for reparam in (False, True):
                r = train_vit(c, data, lr=lr, reparam=reparam, seed=seed)
                runs.append(r)
                print(f"  lr={lr:g} seed={seed} reparam={reparam}: acc {r['test_accuracy']:.3f}, final loss "
                      f"{r['final_loss']:.3f}, entropy mean {r['final_entropy_mean']:.3f} min-head "
                      f"{r['final_entropy_min_head']:.3f}, logit sigma max {r['final_logit_sigma_max']:.2f}", flush=True)
    return dict(config=c, runs=runs)


def run_sigmoid(quick: bool) -> dict:
    """The same ViT with softmax and with sigmoid attention (b = -log 16) at the calm learning rate, every seed."""
    c = QUICK if quick else CONFIG
    data = digits(c)
    runs = []
    for seed in c["seeds"]:
        for score in ("softmax", "sigmoid"):
            r = train_vit(c, data, lr=c["low_lr"], reparam=False, seed=seed, score=score)
            runs.append({k: r[k] for k in ("score", "seed", "lr", "params", "test_accuracy", "final_loss")})
            print(f"  {score:8s} seed={seed}: acc {r['test_accuracy']:.3f}, final loss {r['final_loss']:.3f}", flush=True)
    return dict(config=c, runs=runs)


def pick(runs: list[dict], lr: float, reparam: bool) -> list[dict]:
    """The runs at learning rate ``lr`` with or without σReparam, in seed order."""
    return sorted((r for r in runs if r["lr"] == lr and r["reparam"] == reparam), key=lambda r: r["seed"])


def check_collapse(out: dict) -> None:
    """At the high learning rate, in every seed, the baseline collapses and σReparam does not; calm runs train without
    collapse; at the very high one σReparam never leaves chance."""
    c, runs = out["config"], out["runs"]
    for base, sigma in zip(pick(runs, c["high_lr"], False), pick(runs, c["high_lr"], True), strict=True):
        assert base["final_entropy_min_head"] < 0.01 < 0.1 < sigma["final_entropy_min_head"], base["seed"]
        assert np.mean(sigma["entropy_mean"][-10:]) > np.mean(base["entropy_mean"][-10:]), base["seed"]
        assert base["final_logit_sigma_max"] > 10 * sigma["final_logit_sigma_max"], base["seed"]
        assert sigma["final_loss"] < base["final_loss"] and sigma["test_accuracy"] > base["test_accuracy"], base["seed"]
    for reparam in (False, True):
        for calm in pick(runs, c["low_lr"], reparam):
            assert calm["final_entropy_min_head"] > 0.7 and calm["test_accuracy"] > 0.95, (reparam, calm["seed"])
    for r in pick(runs, c["very_high_lr"], True):
        assert r["test_accuracy"] < 0.1 and r["final_entropy_mean"] > 0.98 * np.log(16), "at lr 0.1 σReparam stays at chance"


def check_sigmoid(out: dict) -> None:
    """Sigmoid attention ends within 3 points of softmax in mean test accuracy."""
    accuracy = {score: np.mean([r["test_accuracy"] for r in out["runs"] if r["score"] == score])
                for score in ("softmax", "sigmoid")}
    assert abs(accuracy["sigmoid"] - accuracy["softmax"]) < 0.03, accuracy


def report(name: str, r: dict) -> str:
    groups = {}
    for run in r["runs"]:
        key = (run["lr"], run.get("reparam", False), run["score"])
        groups.setdefault(key, []).append(run["test_accuracy"])
    rows = [f"  lr {lr:g} {'σReparam' if reparam else 'baseline'} {score}: test accuracy "
            f"{np.mean(acc):.3f} (seeds {', '.join(f'{a:.3f}' for a in acc)})" for (lr, reparam, score), acc in groups.items()]
    return f"{name}:\n" + "\n".join(rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, runs = results["collapse"]["config"], results["collapse"]["runs"]
    fig, (ax_e, ax_s, ax_l) = plt.subplots(1, 3, figsize=(15, 4))
    for reparam, color in ((False, "tab:blue"), (True, "tab:orange")):
        for i, r in enumerate(pick(runs, c["high_lr"], reparam)):
            label = ("σReparam" if reparam else "baseline") if i == 0 else None
            ax_e.plot(r["eval_steps"], r["entropy_min_head"], color=color, label=label)
            ax_s.semilogy(r["eval_steps"], r["logit_sigma_max"], color=color, label=label)
            ax_l.plot(10 * np.arange(len(r["loss_10"])) + 5, r["loss_10"], color=color, label=label)
    ax_e.axhline(np.log(16), color="grey", ls=":", label="uniform (log 16)")
    ax_e.set(xlabel="training step", ylabel="lowest head entropy (nats)",
             title=f"Attention entropy, lr = {c['high_lr']:g}, no warm-up")
    ax_s.set(xlabel="training step", ylabel=r"max$_h\ \|W_Q^{h\top} W_K^h\|_2/\sqrt{D}$", title="Spectral norm of the logits")
    ax_l.set(xlabel="training step", ylabel="training loss (nats, 10-step mean)", title="Training loss")
    for ax in (ax_e, ax_s, ax_l):
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


EXPERIMENTS = {"collapse": (run_collapse, check_collapse), "sigmoid": (run_sigmoid, check_sigmoid)}


def main(argv=None) -> None:
    results = run_experiments(EXPERIMENTS, name="attention_stability", description=__doc__, report=report, argv=argv)
    if "collapse" in results:
        plot(results, artifact_path("attention_stability.png"))


if __name__ == "__main__":
    main()
