"""TransformerLM and its config: the forward against the model written out in fp64, cached decoding against full
recomputation, any token mixer through the config (a mean-pooling mixer written here), old keywords and checkpoints, stochastic KV routing and cross-layer KV sharing against a manual computation."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minilib import feedforward, mixing
from minilib.attention import kv_cache_bytes
from minilib.experiments import results_path
from minilib.feedforward import register_ffn
from minilib.mixing import TokenMixer, register_mixer
from minilib.models import (TransformerConfig, TransformerLM, attention_maps, sample_next, to_pre_rmsnorm, train)
from minilib.norms import LayerNorm
from minilib.positional import rope
from tests.models_support import decode_in_pieces


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

def test_sinusoidal_table_is_scaled_to_the_embeddings():
    model = TransformerLM(11, 32, 1, 4, max_len=40, pos="sinusoidal")
    table = model.pos_table.double()
    assert abs(table.pow(2).mean().sqrt().item() - 0.02) < 1e-6
    assert abs(model.embed.weight.double().std().item() - 0.02) < 0.004  # the same scale as the token embeddings
    reference = torch.tensor([[math.sin(p / 10000 ** (2 * (i // 2) / 32)) if i % 2 == 0 else math.cos(p / 10000 ** (2 * (i // 2) / 32))
                               for i in range(32)] for p in range(40)], dtype=torch.float64)
    ratio = table[reference.abs() > 0.1] / reference[reference.abs() > 0.1]
    assert ratio.std() < 1e-5 and abs(ratio.mean().item() - 0.02 / reference.pow(2).mean().sqrt().item()) < 1e-5


# ----------------------------------------------------------------------------- the config

def test_config_keywords_and_positional_sizes_build_the_same_model():
    config = TransformerConfig(11, 16, 2, 4, n_kv_heads=2, max_len=32, norm="layer", pos="learned", ffn="gelu")
    models = []
    for make in (lambda: TransformerLM(config), lambda: TransformerLM(**dataclasses.asdict(config)),
                 lambda: TransformerLM(11, 16, 2, 4, n_kv_heads=2, max_len=32, norm="layer", pos="learned", ffn="gelu")):
        torch.manual_seed(0)
        models.append(make())
    for model in models:
        assert model.config == config
        for (name, a), (_, b) in zip(models[0].state_dict().items(), model.state_dict().items()):
            assert torch.equal(a, b), name


@pytest.mark.parametrize("field, value", [
    ("vocab_size", 0), ("d_model", -8), ("n_layers", 0), ("n_heads", 0), ("n_kv_heads", 0), ("d_ff", 0),
    ("max_len", 0), ("norm", "batch"), ("ffn", "relu7"), ("pos", "relative"), ("init", "lecun"),
    ("mixer", "no-such-mixer"), ("kv_route_p", 1.5), ("kv_route_p", True), ("n_layers", 2.0)])
def test_config_rejects_bad_fields_by_name(field, value):
    fields = dict(vocab_size=11, d_model=16, n_layers=2, n_heads=4)
    fields[field] = value
    with pytest.raises(ValueError, match=field):
        TransformerConfig(**fields)


def test_config_rejects_bad_combinations_and_types():
    with pytest.raises(ValueError, match=r"d_model \(18\) must be divisible by n_heads \(4\)"):
        TransformerConfig(11, 18, 2, 4)
    with pytest.raises(TypeError, match="pre_norm"):
        TransformerConfig(11, 16, 2, 4, pre_norm="yes")
    with pytest.raises(TypeError, match="mixer_kwargs"):
        TransformerConfig(11, 16, 2, 4, mixer_kwargs=[("gate", True)])
    with pytest.raises(TypeError, match="not both"):
        TransformerLM(TransformerConfig(11, 16, 2, 4), d_model=32)
    with pytest.raises(TypeError, match="at most 4 positional"):
        TransformerLM(11, 16, 2, 4, 2)


def test_state_dicts_saved_with_attn_keys_load_into_mixer():
    source, target = small_lm(pos="learned"), TransformerLM(11, 16, 2, 4, max_len=64, pos="learned").double()
    old = {key.replace(".mixer.", ".attn."): value for key, value in source.state_dict().items()}
    assert any(".attn." in key for key in old)
    target.load_state_dict(old)
    idx = torch.randint(0, 11, (2, 9))
    torch.testing.assert_close(target(idx), source(idx), rtol=0, atol=0)


def test_the_committed_attention_scoring_checkpoint_still_loads():
    saved = torch.load(results_path("attention_scoring_softmax.pt"), weights_only=True)
    vocab, d_model = saved["embed.weight"].shape
    n_layers = 1 + max(int(key.split(".")[1]) for key in saved if key.startswith("blocks."))
    model = TransformerLM(vocab, d_model, n_layers, 4)
    model.load_state_dict({key: value.float() for key, value in saved.items()})  # strict: every key has its place
    assert torch.equal(model.blocks[0].mixer.wq.weight, saved["blocks.0.attn.wq.weight"].float())


# ----------------------------------------------------------------------------- any token mixer

class RunningSum:
    """Decoding state of :class:`CausalMeanPool`: the sum of the values seen so far and their number."""

    def __init__(self):
        self.total, self.length = 0.0, 0


class CausalMeanPool(TokenMixer):
    r"""$y_t = W_o\, \frac{1}{t+1} \sum_{s \le t} W_v x_s$: a causal token mixer with a running-sum cache."""

    def __init__(self, d_model: int):
        super().__init__()
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)

    def new_cache(self):
        return RunningSum()

    def forward(self, x, *, cache=None):
        past_total, past = (0.0, 0) if cache is None else (cache.total, cache.length)
        sums = past_total + self.wv(x).cumsum(dim=1)
        counts = torch.arange(past + 1, past + x.shape[1] + 1, dtype=x.dtype, device=x.device)
        if cache is not None:
            cache.total, cache.length = sums[:, -1:], past + x.shape[1]
        return self.wo(sums / counts[:, None])


class UncachedMeanPool(CausalMeanPool):
    """The same mixer without an incremental form: decoding must recompute the prefix."""

    def new_cache(self):
        return None

    def forward(self, x, *, cache=None):
        assert cache is None, "a mixer without new_cache() is never handed a cache"
        return super().forward(x)


def mean_pool_lm(mixer=CausalMeanPool, **kw):
    torch.manual_seed(0)
    fields = dict(max_len=64, pos="none") | kw
    return TransformerLM(TransformerConfig(11, 16, 2, 4, mixer=lambda config, layer: mixer(config.d_model), **fields)).double()


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(mixing._REGISTRY, "factories", dict(mixing._REGISTRY.factories))


def test_a_registered_mixer_trains_through_the_config(clean_registry):
    register_mixer("mean-pool-test", lambda config, layer: CausalMeanPool(config.d_model))
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", mixer="mean-pool-test"))
    assert all(isinstance(block.mixer, CausalMeanPool) for block in model.blocks)
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.2 * losses[0]


@pytest.fixture
def clean_ffn_registry(monkeypatch):
    monkeypatch.setattr(feedforward._REGISTRY, "factories", dict(feedforward._REGISTRY.factories))


class _ScaledReLU(torch.nn.Module):
    def __init__(self, d_model, scale):
        super().__init__()
        self.lin, self.scale = torch.nn.Linear(d_model, d_model), scale

    def forward(self, x):
        return self.scale * torch.relu(self.lin(x))


def test_a_registered_ffn_is_built_per_layer_from_the_config_and_trains(clean_ffn_registry):
    register_ffn("scaled-relu-test", lambda config, layer: _ScaledReLU(config.d_model, **config.ffn_kwargs) if layer
                 else feedforward.FeedForward(config.d_model, kind="gelu"))
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", ffn="scaled-relu-test",
                                            ffn_kwargs={"scale": 0.5}))
    first, second = model.blocks[0].ffn, model.blocks[1].ffn
    assert isinstance(first, feedforward.FeedForward) and isinstance(second, _ScaledReLU) and second.scale == 0.5
    h = torch.randn(3, 16)
    torch.testing.assert_close(second(h), 0.5 * torch.relu(h @ second.lin.weight.T + second.lin.bias))
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    y = torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[0] > 1.4 and losses[-1] < 0.2 * losses[0]


def test_bad_ffn_names_kwargs_and_factories_fail_clearly(clean_ffn_registry):
    with pytest.raises(ValueError, match="ffn must be a registered name"):
        TransformerConfig(5, 16, 2, 2, ffn="nonesuch")
    with pytest.raises(TypeError, match="ffn_kwargs"):
        TransformerConfig(5, 16, 2, 2, ffn_kwargs=[1])
    with pytest.raises(TypeError, match="must return an nn.Module"):
        TransformerLM(TransformerConfig(5, 16, 2, 2, ffn=lambda config, layer: "not a module"))


def test_mixer_cached_decoding_equals_the_full_forward():
    model = mean_pool_lm(norm="layer", pre_norm=False)
    caches = model.new_caches()
    assert all(isinstance(cache, RunningSum) for cache in caches)
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(2))
    decoded = decode_in_pieces(lambda piece: model(piece, caches=caches), idx, range(5, 12))
    torch.testing.assert_close(decoded, model(idx), rtol=0, atol=1e-12)
    prompt = idx[:, :4]
    assert torch.equal(model.generate(prompt, 10, temperature=0), model.generate(prompt, 10, temperature=0, use_cache=False))


def test_a_mixer_without_cache_generates_by_recomputing_the_prefix():
    model = mean_pool_lm(UncachedMeanPool)
    assert model.new_caches() is None
    prompt = torch.randint(0, 11, (3, 4), generator=torch.Generator().manual_seed(5))
    out = prompt
    for _ in range(8):  # the reference: greedy decoding by hand, the whole sequence every step
        out = torch.cat([out, model(out)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(prompt, 8, temperature=0), out)
    with_cache = mean_pool_lm(CausalMeanPool)  # the same weights (same seed), decoded incrementally
    assert torch.equal(with_cache.generate(prompt, 8, temperature=0), out)


def test_attention_only_features_fail_clearly_for_other_mixers():
    with pytest.raises(ValueError, match="alibi.*needs attention mixers.*CausalMeanPool"):
        mean_pool_lm(pos="alibi")
    with pytest.raises(ValueError, match="kv_route_p.*needs attention mixers"):
        mean_pool_lm(kv_route_p=0.5)
    model = mean_pool_lm()
    with pytest.raises(ValueError, match="share_kv_layers needs attention mixers"):
        model.share_kv_layers = {1}
    with pytest.raises(ValueError, match="attention_maps needs attention mixers"):
        attention_maps(model, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="MultiHeadAttention"):
        mean_pool_lm(init="deepscale")
    with pytest.raises(ValueError, match="MultiHeadAttention"):
        to_pre_rmsnorm(mean_pool_lm(norm="layer"))


def test_a_mixer_factory_must_return_a_causal_token_mixer():
    with pytest.raises(TypeError, match="TokenMixer"):
        TransformerLM(TransformerConfig(11, 16, 1, 4, mixer=lambda config, layer: nn.Linear(16, 16)))

    class Bidirectional(CausalMeanPool):
        causal = False

    with pytest.raises(ValueError, match="causal"):
        TransformerLM(TransformerConfig(11, 16, 1, 4, mixer=lambda config, layer: Bidirectional(16)))


# ----------------------------------------------------------------------------- the forward, written out

def reference_logits(model: TransformerLM, idx: torch.Tensor) -> torch.Tensor:
    """TransformerLM's forward from the equations, reading only the weights: fp64 torch built-ins throughout."""
    cfg = model.config
    B, T = idx.shape
    d, H = cfg.d_model, cfg.n_heads
    Hkv, D = cfg.n_kv_heads or H, d // H
    x = model.embed.weight[idx]
    if cfg.pos == "learned":
        x = x + model.pos_embed.weight[:T]
    if cfg.pos == "sinusoidal":
        p = torch.arange(cfg.max_len, dtype=torch.float64)[:, None]
        i = torch.arange(d, dtype=torch.float64)[None, :]
        angle = p / 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / d)
        table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
        x = x + (0.02 / table.pow(2).mean().sqrt()) * table[:T]
    positions = torch.arange(T, dtype=torch.float64)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    mask = torch.zeros(H, T, T, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    if cfg.pos == "alibi":
        slopes = torch.tensor([2.0 ** (-8 * (h + 1) / H) for h in range(H)], dtype=torch.float64)
        mask = mask - slopes[:, None, None] * (positions[:, None] - positions[None, :]).clamp_min(0)

    def norm(layer, h):
        if isinstance(layer, LayerNorm):
            return F.layer_norm(h, (d,), layer.weight, layer.bias, eps=layer.eps)
        return F.rms_norm(h, (d,), layer.weight, eps=layer.eps)

    def rotate(z):  # RoPE: each pair (z_2i, z_2i+1) as a complex number times exp(i m theta_i)
        theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        turn = torch.polar(torch.ones(T, D // 2, dtype=torch.float64), positions[:, None] * theta)
        return torch.view_as_real(torch.view_as_complex(z.reshape(*z.shape[:-1], D // 2, 2)) * turn).flatten(-2)

    def attention(a, h):
        q = (h @ a.wq.weight.T).view(B, T, H, D).transpose(1, 2)
        k = (h @ a.wk.weight.T).view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        v = (h @ a.wv.weight.T).view(B, T, Hkv, D).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
        if cfg.pos == "rope":
            q, k = rotate(q), rotate(k)
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return heads.transpose(1, 2).reshape(B, T, d) @ a.wo.weight.T

    def ffn(f, h):
        if cfg.ffn == "swiglu":
            return (F.silu(h @ f.w1.weight.T) * (h @ f.w3.weight.T)) @ f.w2.weight.T
        return F.gelu(h @ f.w1.weight.T) @ f.w2.weight.T

    for block in model.blocks:
        if cfg.pre_norm:
            x = x + attention(block.mixer, norm(block.norm1, x))
            x = x + ffn(block.ffn, norm(block.norm2, x))
        else:
            x = norm(block.norm1, x + attention(block.mixer, x))
            x = norm(block.norm2, x + ffn(block.ffn, x))
    if cfg.pre_norm:
        x = norm(model.final_norm, x)
    return x @ model.embed.weight.T


@pytest.mark.parametrize("pos", ["rope", "sinusoidal", "learned", "alibi", "none"])
@pytest.mark.parametrize("pre_norm, norm, ffn, n_kv_heads", [(True, "rms", "swiglu", 2), (False, "layer", "gelu", None)],
                         ids=["pre-rms-swiglu-gqa", "post-layer-gelu"])
def test_forward_equals_the_model_written_out(pos, pre_norm, norm, ffn, n_kv_heads):
    torch.manual_seed(0)
    model = TransformerLM(13, 16, 2, 4, n_kv_heads=n_kv_heads, max_len=24, norm=norm, pre_norm=pre_norm, ffn=ffn,
                          pos=pos).double()
    with torch.no_grad():  # move every gain and bias off its initial value, so the norms are really read
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    idx = torch.randint(0, 13, (3, 17), generator=torch.Generator().manual_seed(1))
    # the sinusoidal table is built (in float32) when the model is made, before .double(): its rounding shows at 1e-8
    torch.testing.assert_close(model(idx), reference_logits(model, idx), rtol=0, atol=1e-7 if pos == "sinusoidal" else 1e-10)


# ---------------------------------------------------------------------------- stochastic KV routing, KV sharing

f64 = torch.float64


def routed_lm(**kw):
    torch.manual_seed(0)
    return TransformerLM(13, 16, 4, 4, n_kv_heads=2, max_len=32, **kw).double()


def test_kv_route_p_zero_is_the_plain_model_exactly():
    plain, routed = routed_lm(), routed_lm(kv_route_p=0.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    a = plain.train()(idx)
    state = torch.random.get_rng_state()
    torch.manual_seed(5)
    b = routed.train()(idx)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.random.get_rng_state())  # p = 0 draws nothing


def test_training_with_p_one_equals_inference_sharing_every_layer():
    model = routed_lm(kv_route_p=1.0)
    idx = torch.randint(0, 13, (2, 10), generator=torch.Generator().manual_seed(1))
    trained_view = model.train()(idx)
    model.eval().share_kv_layers = {1, 2, 3}
    torch.testing.assert_close(model(idx), trained_view, rtol=0, atol=0)
    model.share_kv_layers = set()
    assert (model(idx) - trained_view).abs().max() > 1e-6


def test_routing_draws_each_layer_with_probability_p():
    model = routed_lm(kv_route_p=0.3).train()
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
        a = blk.mixer
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
    model = routed_lm(kv_route_p=0.5).eval()
    model.share_kv_layers = shared
    idx = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(idx), manual_shared_forward(model, idx, shared), rtol=0, atol=1e-12)


def cache_bytes(caches):
    return sum(t.numel() * t.element_size() for c in caches if c.length for t in (c.k, c.v))


@pytest.mark.parametrize("shared", [{1, 3}, {1, 2}])
def test_cached_decoding_with_shared_layers_equals_full_forward_at_half_the_cache(shared):
    model = routed_lm().eval()
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
            routed_lm(kv_route_p=p)
    model = routed_lm()
    for layers in ({0}, {4}, {1.0}):
        with pytest.raises(ValueError, match="share_kv_layers"):
            model.share_kv_layers = layers
    model.eval()
    caches = model.new_caches()
    model(torch.zeros(1, 3, dtype=torch.long), caches=caches)
    model.share_kv_layers = {1}
    with pytest.raises(ValueError, match="another share_kv_layers"):
        model(torch.zeros(1, 1, dtype=torch.long), caches=caches)
