"""minilib.sparse.layers: the "sliding_window" token mixer equals masked attention, decodes like its full forward,
trains inside TransformerLM, and loads the weights of a full-attention model; mixed spans per layer."""

import pytest
import torch

from minilib.attention import MultiHeadAttention
from minilib.mixing import mixer_factory
from minilib.models import TransformerConfig, TransformerLM
from minilib.sparse import HeavyHitterCache, SparseAttention, mixed_span_factory, sink_window_mask
from tests.flash_reference import reference
from tests.models_support import assert_causal_lm, decode_in_pieces, assert_cached_decoding_matches_recomputing, assert_learns_repeated_triples, seeded


def test_forward_is_attention_with_the_sink_window_mask():
    seeded(0)
    layer = SparseAttention(16, 4, n_kv_heads=2, window=3, n_sinks=1).double()
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, v = layer.project_qkv(x, torch.arange(9))
    heads = reference(q, k, v, mask=sink_window_mask(9, 3, n_sinks=1))
    torch.testing.assert_close(layer(x), layer.wo(heads.transpose(1, 2).reshape(2, 9, 16)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(window=1), dict(window=4), dict(window=3, n_sinks=2), {}])
def test_cached_decoding_equals_the_full_forward(kwargs):
    from types import SimpleNamespace

    seeded(1)
    config = SimpleNamespace(d_model=16, n_heads=4, n_kv_heads=2, pos="rope", max_len=32, mixer_kwargs=kwargs)
    mixer = mixer_factory("sliding_window")(config, 0).double()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    cache = mixer.new_cache()
    torch.testing.assert_close(decode_in_pieces(lambda piece: mixer(piece, cache=cache), x, range(5, 11)), mixer(x),
                               rtol=0, atol=1e-12)
    if kwargs:
        assert cache.size <= kwargs["window"] - 1 + kwargs.get("n_sinks", 0)


def test_trains_in_transformer_lm_and_generates_with_its_cache():
    g = seeded(2)
    model = TransformerLM(TransformerConfig(vocab_size=12, d_model=32, n_layers=2, n_heads=4, max_len=64,
                                            mixer="sliding_window", mixer_kwargs=dict(window=4, n_sinks=1)))
    assert_causal_lm(model, vocab_size=12, seq_len=10, changed=5)

    assert_learns_repeated_triples(model, g)
    assert_cached_decoding_matches_recomputing(model, 20)


def test_full_attention_weights_load_and_decode_through_a_policy():
    seeded(3)
    base = TransformerLM(TransformerConfig(vocab_size=10, d_model=16, n_layers=2, n_heads=2, max_len=32))
    policy = TransformerLM(TransformerConfig(vocab_size=10, d_model=16, n_layers=2, n_heads=2, max_len=32,
                                             mixer="sliding_window",
                                             mixer_kwargs=dict(cache_policy="heavy_hitter", cache_budget=32)))
    policy.load_state_dict(base.state_dict())
    idx = torch.randint(0, 10, (2, 20))
    caches = policy.new_caches()
    assert all(isinstance(c, HeavyHitterCache) for c in caches)
    with torch.no_grad():
        stepwise = torch.cat([policy(idx[:, t:t + 1], caches=caches) for t in range(20)], dim=1)
        torch.testing.assert_close(stepwise, base(idx), rtol=0, atol=1e-5)


def test_mixed_spans_put_full_attention_in_the_named_layers():
    config = TransformerConfig(vocab_size=10, d_model=16, n_layers=4, n_heads=2, max_len=32,
                               mixer=mixed_span_factory([0], window=4))
    model = TransformerLM(config)
    assert [block.mixer.window for block in model.blocks] == [None, 4, 4, 4]
    assert all(isinstance(block.mixer, MultiHeadAttention) for block in model.blocks)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="window"):
        SparseAttention(16, 4, window=0)
    with pytest.raises(ValueError, match="budget"):
        SparseAttention(16, 4, cache_policy="tova", cache_budget=0)
    with pytest.raises(ValueError, match="score"):
        SparseAttention(16, 4, score="sigmoid")
    with pytest.raises(TypeError, match="cache"):
        SparseAttention(16, 4)(torch.randn(1, 3, 16), cache=object())
