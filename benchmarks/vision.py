r"""Chapter 11: Vision Transformers and their efficient variants trained on the 8x8 digits.

    python benchmarks/vision.py                      # writes benchmarks/results/vision.json
    python benchmarks/vision.py --only convolutional # one of: convolutional, structured, windows, efficient, causal, reparam,
                                                     # latency, augmented, soft_mask
    python benchmarks/vision.py --quick              # tiny sizes, a smoke run; nothing saved

Every row trains with the one harness :func:`minilib.mixers.zoo.train_classifier` (AdamW, weight decay 0.01,
cosine decay to 10% of ``lr``, batches of 64 drawn with the seed) on :func:`minilib.mixers.zoo.make_task`
``("digits")`` (1 437 training and 360 test images, split with seed 0), three seeds (the seed sets the
initialisation and the batches). The reference row is :class:`minilib.vision.VisionTransformer` with 2x2 patches
(16 tokens), width 32, 2 layers of 4 heads, feed-forward 64: 17 706 parameters. Every other row of the accuracy
experiments is matched to it by its feed-forward width (``knob`` in the JSON), within 5% of the parameters,
except the ablations marked ``matched: false``. ``flops`` is the forward pass of one image counted by
:class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions, 2 per multiply-add).

Experiments: ``convolutional`` (ViT with and without positions, the CNN, CCT, CvT, T2T), ``structured`` (TNT,
CrossViT and its single branches), ``windows`` (Swin, DaViT), ``efficient`` (EfficientViT, SHViT, RMT with and without decay;
mean pairwise cosine similarity of the heads' attention maps, also for the ViT), ``causal`` (the causal ViT with
the class token first and last), ``reparam`` (a 3-layer, 4-branch ViT merged for inference vs a 6-layer ViT),
``latency`` (forward time of SHViT's single-head mixer vs 4-head attention at equal width, and of the merged
3-layer vs the 6-layer ViT; ``best_time``, batch 64), ``augmented`` (the reference ViT behind
:class:`minilib.vision.RandomShift` by up to one pixel, 1500 steps, towards the issue's 97% bar), ``soft_mask`` (the causal ViT with
its class token last, trained causal from the start or with iLLaMA's soft mask annealed from bidirectional to causal
over the first 200 of the 400 steps). Torch runs on ``--threads`` CPU threads (default 1, which
gave the saved JSON).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._experiments import paired_difference, run_experiments, seed_spread  # noqa: E402
from minilib import vision as V  # noqa: E402
from minilib.attention import MultiHeadAttention  # noqa: E402
from minilib.experiments import best_time, count_parameters  # noqa: E402
from minilib.mixers.zoo import make_task, train_classifier  # noqa: E402

SEEDS = [0, 1, 2]
CONFIG = dict(steps=400, lr=3e-3, seeds=SEEDS, target=17706, tolerance=0.05)
QUICK = dict(CONFIG, steps=5, seeds=[0])
#: the reference ViT trained towards the issue's 97% bar: random shifts by up to one pixel and 1500 steps instead of 400
AUGMENTED = dict(CONFIG, steps=1500)
#: steps over which the soft mask anneals from bidirectional to causal (half of the 400)
ANNEAL_STEPS = 200

#: row name -> (builder of the model from its knob, reference knob or None to match the parameters, matched)
ROWS = {
    "vit": (lambda k: V.VisionTransformer(8, 2, 32, 2, 4, n_classes=10, d_ff=k), 64, True),
    "vit-nope": (lambda k: V.VisionTransformer(8, 2, 32, 2, 4, n_classes=10, d_ff=k, pos="none"), 64, True),
    "cnn": (lambda k: V.SmallCNN(k, n_classes=10), None, True),
    "cct": (lambda k: V.CCT(8, 32, 2, 4, n_classes=10, d_ff=k), None, True),
    "cvt": (lambda k: V.CvT(8, 32, 2, 4, n_classes=10, d_ff=k), None, True),
    "t2t": (lambda k: V.T2TViT(8, 32, 2, 4, n_classes=10, d_ff=k), None, True),
    "tnt": (lambda k: V.TNT(8, 4, 2, 32, 8, 2, 4, n_classes=10, d_ff=k), None, True),
    "crossvit": (lambda k: V.CrossViT(8, (2, 4), (16, 16), 2, 4, n_classes=10, mlp_ratio=k / 16), None, True),
    "crossvit-small": (lambda k: V.CrossViT(8, (2, 4), (16, 16), 2, 4, n_classes=10, mlp_ratio=k / 16,
                                            branches="small"), None, True),
    "crossvit-large": (lambda k: V.CrossViT(8, (2, 4), (16, 16), 2, 4, n_classes=10, mlp_ratio=k / 16,
                                            branches="large"), None, True),
    "swin": (lambda k: V.Swin(8, 1, 16, (2, 2), 4, n_classes=10, window=4, mlp_ratio=k / 16), None, True),
    "davit": (lambda k: V.DaViT(8, 2, 32, 2, 4, n_classes=10, window=2, d_ff=k), None, True),
    "efficientvit": (lambda k: V.EfficientViT(8, 2, 32, 2, 4, n_classes=10, d_ff=k), None, True),
    "shvit": (lambda k: V.SHViT(8, 2, 32, 2, n_classes=10, d_ff=k), None, True),
    "rmt": (lambda k: V.RMT(8, 2, 32, 2, 4, n_classes=10, d_ff=k), None, True),
    "rmt-nodecay": (lambda k: V.RMT(8, 2, 32, 2, 4, n_classes=10, d_ff=k, decay=False), None, True),
    "causal-first": (lambda k: V.causal_vit(8, 2, 32, 2, 4, n_classes=10, cls_position="first", d_ff=k), None, True),
    "causal-last": (lambda k: V.causal_vit(8, 2, 32, 2, 4, n_classes=10, cls_position="last", d_ff=k), None, True),
    "causal-last-soft": (lambda k: V.causal_vit(8, 2, 32, 2, 4, n_classes=10, cls_position="last", d_ff=k,
                                                anneal_steps=ANNEAL_STEPS), None, True),
    # the shifts draw from a generator seeded with the run's seed (train_row seeds torch just before building)
    "vit-aug": (lambda k: nn.Sequential(V.RandomShift(1, seed=torch.initial_seed()),
                                        V.VisionTransformer(8, 2, 32, 2, 4, n_classes=10, d_ff=k)), 64, True),
    "reparam-3x4": (lambda k: V.ReparamViT(8, 2, 32, 3, 4, n_classes=10, n_branches=4, d_ff=k), 64, False),
    "vit-6": (lambda k: V.VisionTransformer(8, 2, 32, 6, 4, n_classes=10, d_ff=k), 64, False),
}
GROUPS = {"convolutional": ["vit", "vit-nope", "cnn", "cct", "cvt", "t2t"],
          "structured": ["tnt", "crossvit", "crossvit-small", "crossvit-large"],
          "windows": ["swin", "davit"],
          "efficient": ["vit", "efficientvit", "shvit", "rmt", "rmt-nodecay"],
          "causal": ["causal-first", "causal-last"],
          "reparam": ["reparam-3x4", "vit-6"],
          "augmented": ["vit-aug"],
          "soft_mask": ["causal-last", "causal-last-soft"]}


def matched_knob(name: str, target: int) -> int:
    """The knob (feed-forward width, or the CNN's width) whose model has the parameter count closest to ``target``."""
    build, knob, _ = ROWS[name]
    if knob is not None:
        return knob
    if name == "cnn":
        return min(range(1, 65), key=lambda w: abs(count_parameters(build(w)) - target))
    p1, p2 = (count_parameters(build(k)) for k in (8, 16))  # affine in the feed-forward width
    return max(1, round(8 + 8 * (target - p1) / (p2 - p1)))


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one image's forward pass, counted by torch."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 8, 8))
    return int(counter.get_total_flops())


@torch.no_grad()
def mean_head_similarity(model: nn.Module, images: torch.Tensor) -> float | None:
    """:func:`minilib.vision.head_similarity` of every attention layer's maps on ``images``, averaged over layers."""
    sims, hooks = [], []

    def record(module, inputs, _output):
        x = inputs[0]
        if isinstance(module, MultiHeadAttention):
            q, k, _ = module.project_qkv(x, torch.arange(x.shape[1]))
            maps = module.weights(q, k, causal=False)
        else:
            maps = module.attention_maps(x)
        if maps.shape[1] > 1:
            sims.append(V.head_similarity(maps).item())

    for m in model.modules():
        if isinstance(m, (MultiHeadAttention, V.CascadedGroupAttention)):
            hooks.append(m.register_forward_hook(record))
    model.eval()
    model(images)
    for h in hooks:
        h.remove()
    return statistics.mean(sims) if sims else None


def train_row(name: str, c: dict, task) -> dict:
    build, _, matched = ROWS[name]
    knob = matched_knob(name, c["target"])
    accs, secs, sims = [], [], []
    for seed in c["seeds"]:
        torch.manual_seed(seed)
        model = build(knob)
        start = time.perf_counter()
        accs.append(train_classifier(model, task, steps=c["steps"], lr=c["lr"], seed=seed))
        secs.append(time.perf_counter() - start)
        sims.append(mean_head_similarity(model, task.test[0][:64]))
    params, spread = count_parameters(model), seed_spread(accs)
    return {"knob": knob, "params": params, "flops": forward_flops(model), "acc": accs,
            "acc_mean": spread["mean"], "acc_std": spread["std"], "train_seconds": statistics.mean(secs),
            "head_similarity": None if sims[0] is None else statistics.mean(sims),
            "matched": matched and abs(params - c["target"]) <= c["tolerance"] * c["target"]}


def run_group(group: str, config: dict = CONFIG):
    def run(quick: bool) -> dict:
        c = QUICK if quick else config
        task = make_task("digits", seed=0)
        return {"config": c, "rows": {name: train_row(name, c, task) for name in GROUPS[group]}}
    return run


def run_soft_mask(quick: bool) -> dict:
    """The causal ViT (class token last) trained causal from the start vs with the soft mask annealed over
    ``ANNEAL_STEPS``; ``soft_minus_causal`` is the per-seed accuracy difference."""
    r = run_group("soft_mask")(quick)
    r["anneal_steps"] = ANNEAL_STEPS
    r["soft_minus_causal"] = paired_difference(r["rows"]["causal-last-soft"]["acc"], r["rows"]["causal-last"]["acc"])
    return r


def check_convolutional(r: dict) -> None:
    rows = r["rows"]
    assert all(row["matched"] for row in rows.values()), {k: row["params"] for k, row in rows.items()}
    assert rows["vit"]["acc_mean"] >= 0.95
    assert rows["cct"]["acc_mean"] >= rows["vit"]["acc_mean"] + 0.02  # compact transformer: clearly above the ViT
    assert rows["cct"]["acc_mean"] >= rows["cnn"]["acc_mean"] - 0.02  # ... and within 2 points of the CNN (above it)
    assert rows["vit"]["acc_mean"] - rows["vit-nope"]["acc_mean"] >= 0.2  # the ViT needs its positions
    assert rows["cvt"]["acc_mean"] >= rows["vit"]["acc_mean"]  # CvT does not


def check_structured(r: dict) -> None:
    rows = r["rows"]
    assert all(row["matched"] for row in rows.values()), {k: row["params"] for k, row in rows.items()}
    assert rows["crossvit"]["acc_mean"] >= rows["crossvit-small"]["acc_mean"] + 0.04  # fusion helps the small branch


def check_windows(r: dict) -> None:
    rows = r["rows"]
    assert all(row["matched"] for row in rows.values()), {k: row["params"] for k, row in rows.items()}
    assert max(rows["swin"]["acc_mean"], rows["davit"]["acc_mean"]) < 0.9  # windows on 8x8 digits: an honest negative


def check_efficient(r: dict) -> None:
    rows = r["rows"]
    assert rows["vit"]["acc_mean"] >= 0.95
    # honest negatives at this scale: the cascade's heads are *more* alike than the ViT's, and the decay hurts
    assert rows["efficientvit"]["head_similarity"] > rows["vit"]["head_similarity"]
    assert rows["rmt"]["acc_mean"] < rows["rmt-nodecay"]["acc_mean"] - 0.1


def check_causal(r: dict) -> None:
    assert r["rows"]["causal-first"]["acc_mean"] < 0.15  # chance is 0.1: one constant prediction
    assert r["rows"]["causal-last"]["acc_mean"] >= 0.93


def check_augmented(r: dict) -> None:
    row = r["rows"]["vit-aug"]
    assert row["matched"] and row["params"] == 17706, row["params"]  # the augmentation adds no parameter
    assert row["acc_mean"] >= 0.95, row["acc"]  # the first bar; the 97% bar is not met (see the chapter)


def check_soft_mask(r: dict) -> None:
    rows = r["rows"]
    assert all(row["matched"] for row in rows.values()), {k: row["params"] for k, row in rows.items()}
    assert min(rows["causal-last"]["acc_mean"], rows["causal-last-soft"]["acc_mean"]) >= 0.9  # both train
    d = r["soft_minus_causal"]
    assert not d["established"] and abs(d["mean"]) < d["std"], d  # at this scale the soft mask's effect is inside the spread


def check_reparam(r: dict) -> None:
    rows = r["rows"]
    assert rows["vit-6"]["acc_mean"] - 0.03 < rows["reparam-3x4"]["acc_mean"] < rows["vit-6"]["acc_mean"]


def run_latency(quick: bool) -> dict:
    repeat = 3 if quick else 20
    x = torch.randn(64, 16, 32)
    mixers = {"single-head": V.SingleHeadAttention(32, partial=0.25, qk_dim=16), "mhsa-4": MultiHeadAttention(32, 4)}
    calls = {"single-head": lambda: mixers["single-head"](x), "mhsa-4": lambda: mixers["mhsa-4"](x, causal=False)}
    torch.manual_seed(0)
    branched = ROWS["reparam-3x4"][0](64).eval()
    merged, deep = V.merge_branches(branched), ROWS["vit-6"][0](64).eval()
    images = torch.rand(64, 8, 8)
    with torch.no_grad():
        out = {f"mixer_{k}": best_time(f, repeat=repeat) for k, f in calls.items()}
        out.update({f"model_{k}": best_time(lambda m=m: m(images), repeat=repeat)
                    for k, m in (("reparam-branched", branched), ("reparam-merged", merged), ("vit-6", deep))})
        out["merge_max_abs_diff"] = (merged(images) - branched(images)).abs().max().item()
    out["params"] = {"reparam-branched": count_parameters(branched), "reparam-merged": count_parameters(merged),
                     "vit-6": count_parameters(deep)}
    return out


def check_latency(r: dict) -> None:
    assert r["mixer_single-head"] < r["mixer_mhsa-4"]
    assert r["model_reparam-merged"] < r["model_vit-6"]
    assert r["merge_max_abs_diff"] < 1e-5


def report(name: str, r: dict) -> str:
    if "rows" not in r:
        return f"{name}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                                       if k != "params")
    lines = [f"{name}:"] + [f"  {k:15s} params {row['params']:6d} flops {row['flops']:8d} acc {row['acc_mean']:.3f}"
                            f" ± {row['acc_std']:.3f}  {row['train_seconds']:.1f} s/run  per seed {row['acc']}"
                            for k, row in r["rows"].items()]
    return "\n".join(lines)


EXPERIMENTS = {"convolutional": (run_group("convolutional"), check_convolutional),
               "structured": (run_group("structured"), check_structured),
               "windows": (run_group("windows"), check_windows),
               "efficient": (run_group("efficient"), check_efficient),
               "causal": (run_group("causal"), check_causal),
               "reparam": (run_group("reparam"), check_reparam),
               "latency": (run_latency, check_latency),
               "augmented": (run_group("augmented", AUGMENTED), check_augmented),
               "soft_mask": (run_soft_mask, check_soft_mask)}


def main(argv=None) -> None:
    run_experiments(EXPERIMENTS, name="vision", description=__doc__, report=report, argv=argv)


if __name__ == "__main__":
    main()
