"""The linear-attention mixers: their output written out by hand, cached decoding, training inside TransformerLM."""
import pytest
import torch
from torch import nn

from minilib.linear_attention import (LinearAttention, LinearAttentionCache, Retention, TransNormerBlock,
                                      multiscale_decays, transnormer_decays)
from minilib.mixing import mixer_factory
from minilib.models import TransformerConfig, TransformerLM, train
from tests.models_support import decode_in_pieces

CONFIGS = {
    "elu+1 normalised": dict(),
    "relu, gated decay, rms norm": dict(feature="relu", normalize=False, decay="gated", head_norm="rms", chunk_size=3),
    "retention": "retention",
    "transnormer": "transnormer",
}


def build(name, d_model=12, n_heads=3):
    torch.manual_seed(0)
    kwargs = CONFIGS[name]
    if kwargs == "retention":
        return Retention(d_model, n_heads, chunk_size=4).double()
    if kwargs == "transnormer":
        return TransNormerBlock(d_model, n_heads, layer=1, n_layers=3, chunk_size=4).double()
    return LinearAttention(d_model, n_heads, **kwargs).double()


def test_multiscale_decays_are_retnets():
    torch.testing.assert_close(multiscale_decays(3), torch.tensor([1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128], dtype=torch.float64))


def test_retention_is_the_decay_matrix_product_written_out():
    layer = build("retention")
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    B, T, H, D = 2, 9, 3, 4
    q = layer.wq(x).view(B, T, H, D).transpose(1, 2)
    k = layer.wk(x).view(B, T, H, D).transpose(1, 2) / D ** 0.5
    v = layer.wv(x).view(B, T, H, D).transpose(1, 2)
    t = torch.arange(T)
    gammas = torch.tensor([1 - 2.0 ** (-5 - h) for h in range(H)], dtype=torch.float64)
    Dmat = torch.where(t[:, None] >= t[None, :], gammas[:, None, None] ** (t[:, None] - t[None, :]), 0.0)
    heads = (q @ k.transpose(-1, -2) * Dmat) @ v
    heads = nn.functional.layer_norm(heads, (D,)).transpose(1, 2).reshape(B, T, H * D)
    want = layer.wo(nn.functional.silu(layer.wg(x)) * heads * layer.norm_weight)
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)


def test_normalised_elu_layer_is_softmax_free_attention_written_out():
    layer = build("elu+1 normalised")
    x = torch.randn(1, 7, 12, dtype=torch.float64)
    phi = lambda z: nn.functional.elu(z) + 1  # noqa: E731
    q = phi(layer.wq(x).view(1, 7, 3, 4).transpose(1, 2))
    k = phi(layer.wk(x).view(1, 7, 3, 4).transpose(1, 2))
    v = layer.wv(x).view(1, 7, 3, 4).transpose(1, 2)
    w = (q @ k.transpose(-1, -2)).tril()
    heads = (w / w.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(layer(x), layer.wo(heads.transpose(1, 2).reshape(1, 7, 12)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_decoding_in_pieces_equals_the_full_forward(name):
    layer = build(name)
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    cache = layer.new_cache()
    assert isinstance(cache, LinearAttentionCache) and cache.length == 0
    decoded = decode_in_pieces(lambda piece: layer(piece, cache=cache), x, range(5, 11))
    assert cache.length == 11
    torch.testing.assert_close(decoded, layer(x), rtol=0, atol=1e-12)


def test_the_state_does_not_grow_with_length():
    layer = build("retention")
    cache = layer.new_cache()
    layer(torch.randn(1, 3, 12, dtype=torch.float64), cache=cache)
    size = cache.state.numel()
    layer(torch.randn(1, 50, 12, dtype=torch.float64), cache=cache)
    assert cache.state.numel() == size == 3 * 4 * 4


@pytest.mark.parametrize("mixer, kwargs", [("linear_attention", {}), ("linear_attention", {"decay": "gated"}),
                                           ("retention", {}), ("transnormer", {})])
def test_trains_and_decodes_inside_transformer_lm(mixer, kwargs):
    torch.manual_seed(0)
    cfg = TransformerConfig(5, 16, 2, 2, max_len=32, pos="none", mixer=mixer, mixer_kwargs=kwargs)
    model = TransformerLM(cfg)
    assert all(isinstance(block.mixer, LinearAttention) for block in model.blocks)
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.2 * losses[0]
    model = model.double().eval()
    idx = torch.randint(0, 5, (2, 12), generator=torch.Generator().manual_seed(2))
    caches = model.new_caches()
    decoded = decode_in_pieces(lambda piece: model(piece, caches=caches), idx, range(5, 12))
    torch.testing.assert_close(decoded, model(idx), rtol=0, atol=1e-10)
    prompt = idx[:, :4]
    assert torch.equal(model.generate(prompt, 10, temperature=0), model.generate(prompt, 10, temperature=0, use_cache=False))


def test_registered_factories_read_mixer_kwargs():
    from types import SimpleNamespace

    config = SimpleNamespace(d_model=8, n_heads=2, mixer_kwargs={"chunk_size": 5})
    assert mixer_factory("linear_attention")(config, 0).chunk_size == 5
    retention = mixer_factory("retention")(config, 0)
    assert isinstance(retention, Retention) and retention.decay == "multiscale" and not retention.normalize


@pytest.mark.parametrize("kwargs, name", [(dict(decay="fixed"), "decay"), (dict(head_norm="batch"), "head_norm"),
                                          (dict(feature="tanh", normalize=False), "name"), (dict(chunk_size=0), "chunk_size"),
                                          (dict(feature="relu"), "normalize")])
def test_bad_arguments_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LinearAttention(8, 2, **kwargs)
    with pytest.raises(ValueError, match="n_heads"):
        LinearAttention(8, 3)


def test_bad_input_raises():
    layer = build("elu+1 normalised")
    with pytest.raises(ValueError, match="d_model"):
        layer(torch.randn(1, 4, 10, dtype=torch.float64))


def test_transnormer_decays_and_block_written_out():
    torch.testing.assert_close(transnormer_decays(4, 1, 2), torch.exp(-torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)))
    assert bool((transnormer_decays(4, 0, 3) <= transnormer_decays(4, 2, 3)).all())
    layer = build("transnormer")
    x = torch.randn(2, 9, 12, dtype=torch.float64)
    B, T, H, D = 2, 9, 3, 4
    lam = layer.gammas  # stored in float32, like every parameter before .double()
    torch.testing.assert_close(lam, transnormer_decays(3, 1, 3), rtol=0, atol=1e-7)
    q, k, v = (w(x).view(B, T, H, D).transpose(1, 2) for w in (layer.wq, layer.wk, layer.wv))
    t = torch.arange(T)
    Lam = torch.where(t[:, None] >= t[None, :], lam[:, None, None] ** (t[:, None] - t[None, :]), 0.0)
    heads = (q @ (k / D ** 0.5).transpose(-1, -2) * Lam) @ v
    heads = heads / heads.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    want = layer.wo(nn.functional.silu(layer.wg(x)) * heads.transpose(1, 2).reshape(B, T, H * D) * layer.norm_weight)
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="layer"):
        transnormer_decays(4, 3, 3)


def test_a_decay_tensor_is_checked():
    with pytest.raises(ValueError, match="decay"):
        LinearAttention(8, 2, decay=torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="decay"):
        LinearAttention(8, 2, decay=torch.tensor([0.5]))
