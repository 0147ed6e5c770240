"""Stochastic KV routing and cross-layer KV sharing in minilib.models (kv_route_p, share_kv_layers), against a
manual computation; moved here from the attention tests, where they did not belong."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.attention import kv_cache_bytes
from minilib.models import TransformerLM
from minilib.positional import rope

f64 = torch.float64


def lm(**kw):
    torch.manual_seed(0)
    return TransformerLM(13, 16, 4, 4, n_kv_heads=2, max_len=32, **kw).double()


def test_kv_route_p_zero_is_the_plain_model_exactly():
    plain, routed = lm(), lm(kv_route_p=0.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    a = plain.train()(idx)
    state = torch.random.get_rng_state()
    torch.manual_seed(5)
    b = routed.train()(idx)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())  # p = 0 draws nothing


def test_training_with_p_one_equals_inference_sharing_every_layer():
    model = lm(kv_route_p=1.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    trained_view = model.train()(idx)
    model.eval().share_kv_layers = {1, 2, 3}
    torch.testing.assert_close(model(idx), trained_view, rtol=0, atol=0)
    model.share_kv_layers = set()
    assert (model(idx) - trained_view).abs().max() > 1e-6


def test_routing_draws_each_layer_with_probability_p():
    model = lm(kv_route_p=0.3).train()
    torch.manual_seed(0)
    n = 4000
    counts = torch.zeros(4)
    for _ in range(n):
        for i in model.kv_sharing():
            counts[i] += 1
    assert counts[0] == 0
    sigma = math.sqrt(n * 0.3 * 0.7)
    assert ((counts[1:] - 0.3 * n).abs() < 5 * sigma).all()
    model.eval().share_kv_layers = {2}
    assert model.kv_sharing() == {2}


def manual_shared_forward(model, idx, shared):
    """The LM's forward written out: a shared layer uses its own queries on the last owner layer's k, v."""
    T = idx.shape[1]
    pos = torch.arange(T)
    x = model.embed(idx)
    for i, blk in enumerate(model.blocks):
        a = blk.attn
        h = blk.norm1(x)
        q = rope(split(h @ a.wq.weight.T, a.n_heads), pos)
        if i not in shared:
            k, v = rope(split(h @ a.wk.weight.T, a.n_kv_heads), pos), split(h @ a.wv.weight.T, a.n_kv_heads)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + heads.transpose(1, 2).reshape(x.shape) @ a.wo.weight.T
        x = x + blk.ffn(blk.norm2(x))
    return model.final_norm(x) @ model.embed.weight.T


def split(x, n):
    B, T, C = x.shape
    return x.view(B, T, n, C // n).transpose(1, 2)


@pytest.mark.parametrize("shared", [{1, 3}, {1, 2}, {2}])
def test_shared_layers_at_inference_equal_a_manual_computation(shared):
    model = lm(kv_route_p=0.5).eval()
    model.share_kv_layers = shared
    idx = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(idx), manual_shared_forward(model, idx, shared), rtol=0, atol=1e-12)


def cache_bytes(caches):
    return sum(t.numel() * t.element_size() for c in caches if c.length for t in (c.k, c.v))


@pytest.mark.parametrize("shared", [{1, 3}, {1, 2}])
def test_cached_decoding_with_shared_layers_equals_full_forward_at_half_the_cache(shared):
    model = lm().eval()
    model.share_kv_layers = shared
    idx = torch.randint(0, 13, (2, 12), generator=torch.Generator().manual_seed(3))
    caches = model.new_caches()
    stepwise = torch.cat([model(idx[:, :6], caches=caches)] + [model(idx[:, t:t + 1], caches=caches)
                                                               for t in range(6, 12)], 1)
    torch.testing.assert_close(stepwise, model(idx), rtol=0, atol=1e-12)
    assert [c.length for c in caches] == [0 if i in shared else 12 for i in range(4)]
    full = kv_cache_bytes(n_layers=4, n_kv_heads=2, head_dim=4, seq_len=12, batch=2, dtype=f64)
    assert cache_bytes(caches) == full // 2 == kv_cache_bytes(n_layers=2, n_kv_heads=2, head_dim=4, seq_len=12,
                                                              batch=2, dtype=f64)
    greedy = model.generate(idx[:, :4], 6, temperature=0)
    assert torch.equal(greedy, model.generate(idx[:, :4], 6, temperature=0, use_cache=False))


def test_kv_routing_rejects_bad_arguments():
    for p in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="kv_route_p"):
            lm(kv_route_p=p)
    model = lm()
    for layers in ({0}, {4}, {1.0}):
        with pytest.raises(ValueError, match="share_kv_layers"):
            model.share_kv_layers = layers
    model.eval()
    caches = model.new_caches()
    model(torch.zeros(1, 3, dtype=torch.long), caches=caches)
    model.share_kv_layers = {1}
    with pytest.raises(ValueError, match="another share_kv_layers"):
        model(torch.zeros(1, 1, dtype=torch.long), caches=caches)
