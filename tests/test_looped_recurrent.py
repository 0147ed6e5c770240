"""RecurrentTransformer: the sequential form against a naive per-position computation written out with explicit softmax."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.looped import RecurrentTransformer


def naive(model, x):
    """Position by position, layer by layer: keys/values from the layer's earlier outputs and the current input."""
    B, T, d = x.shape
    outputs = [[] for _ in model.layers]  # per layer, the outputs y_s computed so far
    result = []
    for t in range(T):
        h = x[:, t]
        for i, layer in enumerate(model.layers):
            a = layer.attn
            H, D = a.n_heads, a.head_dim
            u = layer.norm1(h)
            sources = torch.stack([layer.norm1(y) for y in outputs[i]] + [u], dim=1)  # (B, t + 1, d)
            q = (u @ a.wq.weight.T).view(B, H, D)
            k = (sources @ a.wk.weight.T).view(B, -1, H, D)
            v = (sources @ a.wv.weight.T).view(B, -1, H, D)
            w = torch.softmax(torch.einsum("bhd,bshd->bhs", q, k) / D ** 0.5, dim=-1)
            z = h + torch.einsum("bhs,bshd->bhd", w, v).reshape(B, H * D) @ a.wo.weight.T
            h = z + layer.ffn(layer.norm2(z))
            outputs[i].append(h)
        result.append(h)
    return torch.stack(result, dim=1)


@settings(max_examples=8, deadline=None)
@given(T=st.integers(1, 6), layers=st.integers(1, 3))
def test_sequential_equals_naive(T, layers):
    torch.manual_seed(T * 10 + layers)
    model = RecurrentTransformer(8, layers, 2, d_ff=12).double()
    x = torch.randn(2, T, 8, dtype=torch.float64)
    torch.testing.assert_close(model(x), naive(model, x))


def test_pieces_equal_full_and_cache_is_one_kv_per_position():
    torch.manual_seed(0)
    model = RecurrentTransformer(8, 2, 2).double()
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    caches = model.new_caches()
    pieces = torch.cat([model(x[:, :3], caches=caches), model(x[:, 3:], caches=caches)], dim=1)
    torch.testing.assert_close(pieces, model(x))
    assert caches[0].k.shape == (1, 2, 7, 4) and caches[1].v.shape == (1, 2, 7, 4)


def test_causal():
    torch.manual_seed(1)
    model = RecurrentTransformer(8, 2, 2).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    y = x.clone()
    y[:, 4:] += 1.0
    torch.testing.assert_close(model(x)[:, :4], model(y)[:, :4])


def test_bad_arguments():
    model = RecurrentTransformer(8, 2, 2)
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(1, 3, 9))
    with pytest.raises(ValueError, match="caches"):
        model(torch.randn(1, 3, 8), caches=[])
    with pytest.raises(ValueError, match="n_layers"):
        RecurrentTransformer(8, 0, 2)
