"""TransformerLM: cached decoding equals full recomputation, every configuration runs, bad input is named."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.attention import merge_heads, split_heads
from minilib.feedforward import FeedForward
from minilib.models import TransformerLM, attention_maps, evaluate, lm_loss, sample_next, train

CONFIGS = [
    dict(pos="rope"), dict(pos="sinusoidal", norm="layer"), dict(pos="learned", ffn="gelu"),
    dict(pos="alibi", n_kv_heads=1), dict(pos="none", pre_norm=False, norm="layer"),
]


def small_lm(**kw):
    torch.manual_seed(0)
    return TransformerLM(11, 16, 2, 4, max_len=64, **kw).double()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_cached_generation_equals_uncached(cfg):
    model = small_lm(**cfg)
    prompt = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    greedy = [model.generate(prompt, 20, temperature=0, use_cache=c) for c in (True, False)]
    assert torch.equal(*greedy)
    sampled = [model.generate(prompt, 20, generator=torch.Generator().manual_seed(7), use_cache=c) for c in (True, False)]
    assert torch.equal(*sampled)
    assert sampled[0].shape == (2, 25) and torch.equal(sampled[0][:, :5], prompt)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_logits_are_causal(cfg):
    model = small_lm(**cfg)
    idx = torch.randint(0, 11, (1, 9))
    changed = idx.clone()
    changed[0, 6] = (idx[0, 6] + 1) % 11
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-12)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-6


def test_cached_logits_equal_full_logits():
    model = small_lm(pos="rope", n_kv_heads=2)
    idx = torch.randint(0, 11, (2, 12))
    caches = model.new_caches()
    stepwise = torch.cat([model(idx[:, :7], caches=caches)] + [model(idx[:, t:t + 1], caches=caches) for t in range(7, 12)], 1)
    torch.testing.assert_close(stepwise, model(idx), rtol=0, atol=1e-10)


def test_swiglu_and_gelu_match_their_equations():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    swiglu, gelu = FeedForward(8, 12).double(), FeedForward(8, 12, kind="gelu").double()
    want = (F.silu(x @ swiglu.w1.weight.T) * (x @ swiglu.w3.weight.T)) @ swiglu.w2.weight.T
    torch.testing.assert_close(swiglu(x), want)
    erf_gelu = lambda z: 0.5 * z * (1 + torch.erf(z / 2 ** 0.5))
    torch.testing.assert_close(gelu(x), erf_gelu(x @ gelu.w1.weight.T) @ gelu.w2.weight.T)


def test_training_learns_a_deterministic_sequence():
    torch.manual_seed(0)
    model = TransformerLM(5, 16, 1, 2, max_len=16)
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    batches = iter(lambda: (x, y), None)
    losses = train(model, batches, steps=60, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.1
    assert evaluate(model, iter(lambda: (x, y), None), n_batches=2) == pytest.approx(lm_loss(model.eval(), (x, y)).item(), rel=1e-5)


def test_top_k_one_is_greedy():
    logits = torch.randn(4, 9)
    got = sample_next(logits, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, logits.argmax(-1, keepdim=True))


def test_bad_input_raises():
    model = small_lm()
    with pytest.raises(ValueError, match="exceeds max_len=64"):
        model(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="pos must be one of"):
        TransformerLM(5, 8, 1, 2, pos="relative")
    with pytest.raises(ValueError, match="norm must be"):
        TransformerLM(5, 8, 1, 2, norm="batch")


@pytest.mark.parametrize("cfg", [dict(pos="rope", n_kv_heads=2), dict(pos="alibi"), dict(pos="learned", pre_norm=False, norm="layer")],
                         ids=["rope-gqa", "alibi", "postnorm"])
def test_attention_maps_reproduce_the_layer_outputs(cfg):
    """Weights from attention_maps, times the layer's values, give back what the layer computed."""
    model = small_lm(**cfg)
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))
    maps = attention_maps(model, idx)
    assert maps.shape == (2, 2, 4, 8, 8)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 8, dtype=torch.float64))
    assert torch.all(maps.triu(diagonal=1) == 0)
    seen = []
    model.blocks[1].mixer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model(idx)
    x, out = seen[0]
    attn = model.blocks[1].mixer
    v = split_heads(attn.wv(x), attn.n_kv_heads).repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
    heads = maps[1] @ v
    torch.testing.assert_close(attn.wo(merge_heads(heads)), out, rtol=0, atol=1e-10)


def test_sinusoidal_table_is_scaled_to_the_embeddings():
    model = TransformerLM(11, 32, 1, 4, max_len=40, pos="sinusoidal")
    table = model.pos_table.double()
    assert abs(table.pow(2).mean().sqrt().item() - 0.02) < 1e-6
    assert abs(model.embed.weight.double().std().item() - 0.02) < 0.004  # the same scale as the token embeddings
    reference = torch.tensor([[math.sin(p / 10000 ** (2 * (i // 2) / 32)) if i % 2 == 0 else math.cos(p / 10000 ** (2 * (i // 2) / 32))
                               for i in range(32)] for p in range(40)], dtype=torch.float64)
    ratio = table[reference.abs() > 0.1] / reference[reference.abs() > 0.1]
    assert ratio.std() < 1e-5 and abs(ratio.mean().item() - 0.02 / reference.pow(2).mean().sqrt().item()) < 1e-5


def test_attention_maps_of_a_layer_sharing_kv_use_the_keys_below():
    """With share_kv_layers={1}, layer 1's map times layer 0's values gives back layer 1's output."""
    model = small_lm(pos="rope").eval()
    model.share_kv_layers = {1}
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    maps = attention_maps(model, idx)
    seen = []
    for block in model.blocks:
        block.mixer.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    model(idx)
    (x0, _), (_, out1) = seen
    below, attn = model.blocks[0].mixer, model.blocks[1].mixer
    v0 = split_heads(below.wv(x0), below.n_kv_heads)
    torch.testing.assert_close(attn.wo(merge_heads(maps[1] @ v0)), out1, rtol=0, atol=1e-10)
    model.share_kv_layers = set()
    assert not torch.allclose(attention_maps(model, idx)[1], maps[1])
