"""MinimalTransformer: each reduced attention against its equation, parameter counts by hand."""
import pytest
import torch

from minilib.models import MinimalAttention, MinimalTransformer, count_parameters
from tests.models_support import seeded



D_IN, N_CLS, SEQ, D, L, H, FF = 8, 10, 8, 16, 2, 2, 32

def minimal(**flags):
    seeded()
    return MinimalTransformer(D_IN, N_CLS, SEQ, D, L, H, d_ff=FF, **flags)

def test_minimal_parameter_counts_by_hand():
    shared = (D_IN * D + D) + SEQ * D + 2 * D + (SEQ * D * N_CLS + N_CLS)  # embed, positions, final LN, classifier
    per_layer = 2 * D + 2 * D * D + 2 * D * D + (2 * D * FF + 2 * D)  # LN, W_Q W_K, W_V W_O, MLP with its LN
    full = shared + L * per_layer
    assert count_parameters(minimal()) == full
    assert count_parameters(minimal(mlp=False)) == full - L * (2 * D * FF + 2 * D)
    assert count_parameters(minimal(value_out=False)) == full - L * 2 * D * D
    assert count_parameters(minimal(similarity="collapsed")) == full - L * 2 * D * D + L * H * D * D
    assert count_parameters(minimal(similarity="symmetric")) == full - L * 2 * D * D + L * H * D * (D + 1) // 2
    smallest = minimal(mlp=False, similarity="symmetric", value_out=False)
    assert count_parameters(smallest) == shared + L * (2 * D + H * D * (D + 1) // 2)

def test_qk_attention_matches_torch_multihead_attention():
    seeded()
    attn = MinimalAttention(D, H).double()
    ref = torch.nn.MultiheadAttention(D, H, bias=False, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.wq.weight, attn.wk.weight, attn.wv.weight]))
        ref.out_proj.weight.copy_(attn.wo.weight)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    torch.testing.assert_close(attn(x), ref(x, x, x, need_weights=False)[0])

def test_collapsed_matrix_reproduces_query_key_product():
    seeded()
    qk = MinimalAttention(D, H).double()
    collapsed = MinimalAttention(D, H, similarity="collapsed").double()
    wq, wk = qk.wq.weight.view(H, D // H, D), qk.wk.weight.view(H, D // H, D)
    with torch.no_grad():
        collapsed.a.copy_(torch.stack([wq[h].T @ wk[h] for h in range(H)]))
        collapsed.wv.weight.copy_(qk.wv.weight)
        collapsed.wo.weight.copy_(qk.wo.weight)
    x = torch.randn(2, 6, D, dtype=torch.float64)
    torch.testing.assert_close(collapsed(x), qk(x))

@pytest.mark.parametrize("similarity", ["qk", "collapsed", "symmetric"])
def test_scores_symmetric_only_for_symmetric_similarity(similarity):
    seeded()
    attn = MinimalAttention(D, H, similarity=similarity).double()
    s = attn.scores(torch.randn(2, 7, D, dtype=torch.float64))
    asym = (s - s.transpose(-2, -1)).abs().amax().item()
    if similarity == "symmetric":
        assert asym < 1e-12
    else:
        assert asym > 1e-3

def test_reduced_attention_equals_softmax_of_scores_on_channel_slices():
    seeded()
    attn = MinimalAttention(D, H, similarity="symmetric", value_out=False).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    weights = torch.softmax(attn.scores(x), dim=-1)
    dh = D // H
    want = torch.cat([weights[:, h] @ x[..., h * dh:(h + 1) * dh] for h in range(H)], dim=-1)
    torch.testing.assert_close(attn(x), want)

def test_minimal_shapes():
    assert minimal(mlp=False, similarity="symmetric", value_out=False)(torch.randn(4, SEQ, D_IN)).shape == (4, N_CLS)


@pytest.mark.parametrize("kwargs, name", [
    (dict(similarity="cosine"), "similarity"), (dict(d_model=15), "d_model"), (dict(seq_len=0), "seq_len"),
    (dict(n_heads=0), "n_heads"), (dict(n_classes=0), "n_classes"), (dict(d_ff=-4), "d_ff")])
def test_bad_config_is_named(kwargs, name):
    sizes = dict(d_in=8, n_classes=10, seq_len=8, d_model=16, n_layers=1, n_heads=2) | kwargs
    with pytest.raises(ValueError, match=name):
        MinimalTransformer(**sizes)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8, 8\)"):
        minimal()(torch.randn(2, SEQ, D_IN + 1))
    with pytest.raises(TypeError, match="x"):
        minimal()(torch.zeros(2, SEQ, D_IN, dtype=torch.long))
