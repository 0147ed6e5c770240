"""The MetaFormer block and classifier, written out by hand, and the token-mixing matrix against explicit matrices."""
import pytest
import torch
import torch.nn.functional as F

from minilib.attention import MultiHeadAttention
from minilib.mixers import (AttentionMixer, BidirectionalMixer, DepthwiseConvMixer, FourierMixer, MetaFormer, MetaFormerBlock, PoolMixer,
                            dct_matrix,
                            TokenMLPMixer, aff_mix, mixing_matrix)
from minilib.mixing import TokenMixer, register_mixer
from minilib.vision import PatchEmbedding

f64 = torch.float64


def test_block_is_norm_mixer_residual_then_norm_mlp_residual():
    torch.manual_seed(0)
    block = MetaFormerBlock(PoolMixer(3, causal=False), 8, d_ff=16).double()
    x = torch.randn(2, 5, 8, dtype=f64)
    h = F.layer_norm(x, (8,), block.norm1.weight, block.norm1.bias, eps=1e-5)
    pooled = torch.stack([h[:, max(0, t - 1):t + 2].mean(1) for t in range(5)], 1) - h
    x1 = x + pooled
    h2 = F.layer_norm(x1, (8,), block.norm2.weight, block.norm2.bias, eps=1e-5)
    want = x1 + F.gelu(h2 @ block.mlp.w1.weight.T) @ block.mlp.w2.weight.T
    torch.testing.assert_close(block(x), want)


def test_block_takes_a_mixer_by_name_or_factory_and_any_registered_family(monkeypatch):
    from minilib import mixing

    monkeypatch.setattr(mixing._REGISTRY, "factories", dict(mixing._REGISTRY.factories))
    built = []

    class Scale(TokenMixer):
        def __init__(self, d):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(d))

        def forward(self, x, *, cache=None):
            return x * self.w

    def factory(config, layer):  # what a later chapter's mixer (an SSM) registers
        built.append((config.d_model, config.mixer_kwargs, layer))
        return Scale(config.d_model)

    register_mixer("scale-test", factory)
    block = MetaFormerBlock("scale-test", 6, mixer_kwargs={"k": 1}, layer=3)
    assert isinstance(block.mixer, Scale) and built == [(6, {"k": 1}, 3)]
    assert isinstance(MetaFormerBlock(factory, 6).mixer, Scale)
    assert isinstance(MetaFormerBlock("pool", 6, mixer_kwargs={"causal": False}).mixer, PoolMixer)


def test_attention_mixer_is_multihead_attention_with_its_own_causal_flag():
    torch.manual_seed(0)
    mixer = AttentionMixer(8, 2).double()
    plain = MultiHeadAttention(8, 2).double()
    plain.load_state_dict(mixer.state_dict())
    x = torch.randn(2, 5, 8, dtype=f64)
    torch.testing.assert_close(mixer(x), plain(x, causal=False))
    assert mixer.new_cache() is None and AttentionMixer(8, 2, causal=True).new_cache() is not None


def test_metaformer_reads_the_mean_or_the_last_token():
    torch.manual_seed(0)
    model = MetaFormer(PatchEmbedding(8, 2, 8), lambda i: PoolMixer(3, causal=False, grid=(4, 4)), d_model=8,
                       n_layers=2, n_classes=10).double()
    images = torch.rand(3, 8, 8, dtype=f64)
    z = model.embed(images)
    for block in model.blocks:
        z = block(z)
    torch.testing.assert_close(model(images), model.head(model.final_norm(z.mean(1))))
    model.readout = "last"
    torch.testing.assert_close(model(images), model.head(model.final_norm(z[:, -1])))


def test_mixing_matrix_of_linear_mixers_is_their_explicit_matrix():
    L = 6
    x = torch.randn(L, 3, dtype=f64)
    avg = torch.zeros(L, L, dtype=f64)
    for t in range(L):
        avg[t, max(0, t - 1):t + 2] = 1 / len(range(max(0, t - 1), min(L, t + 2)))
    torch.testing.assert_close(mixing_matrix(PoolMixer(3, causal=False), x), avg - torch.eye(L, dtype=f64))
    conv = DepthwiseConvMixer(3, 3).double()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).expand(3, 3))
    toeplitz = 3 * torch.eye(L, dtype=f64) + 2 * torch.diag(torch.ones(L - 1, dtype=f64), -1) + torch.diag(torch.ones(L - 2, dtype=f64), -2)
    torch.testing.assert_close(mixing_matrix(conv, x), toeplitz)
    mlp = TokenMLPMixer(L, causal=False).double()
    pre = mlp.w1 @ x  # (hidden, C)
    normal = torch.distributions.Normal(torch.zeros((), dtype=f64), torch.ones((), dtype=f64))
    slope = normal.cdf(pre) + pre * normal.log_prob(pre).exp()  # GELU'(z) = Phi(z) + z phi(z)
    linearised = torch.einsum("th,hc,hs->ts", mlp.w2, slope, mlp.w1) / 3
    torch.testing.assert_close(mixing_matrix(mlp, x), linearised)


def test_mixing_matrix_of_aff_with_a_fixed_filter_is_circulant_and_norm_reduce_is_nonnegative():
    L = 5
    h = torch.randn(L, 1, dtype=f64)
    filt = torch.fft.rfft(h, dim=0)[None]
    M = mixing_matrix(lambda a: aff_mix(a, filt), torch.randn(L, 1, dtype=f64))
    circulant = torch.tensor([[h[(t - s) % L, 0].item() for s in range(L)] for t in range(L)], dtype=f64)
    torch.testing.assert_close(M, circulant)
    N = mixing_matrix(FourierMixer(), torch.randn(L, 4, dtype=f64), reduce="norm")
    assert N.shape == (L, L) and (N >= 0).all() and (N > 0.1).all()  # FNet mixes every pair of tokens


def test_bad_input_fails_clearly():
    with pytest.raises(TypeError, match="mixer must be a minilib.mixing.TokenMixer"):
        MetaFormerBlock(lambda config, layer: torch.nn.Identity(), 4)
    with pytest.raises(ValueError, match="mixer_kwargs only apply"):
        MetaFormerBlock(PoolMixer(3), 4, mixer_kwargs={"causal": False})
    with pytest.raises(ValueError, match="readout"):
        MetaFormer(torch.nn.Identity(), lambda i: PoolMixer(3), d_model=4, n_layers=1, n_classes=2, readout="cls")
    with pytest.raises(ValueError, match="reduce"):
        mixing_matrix(PoolMixer(3), torch.randn(4, 2), reduce="max")
    with pytest.raises(ValueError, match="x must have 2 dimensions"):
        mixing_matrix(PoolMixer(3), torch.randn(1, 4, 2))


def test_metaformer_shortens_by_dct_before_the_named_block():
    torch.manual_seed(0)
    model = MetaFormer(torch.nn.Identity(), lambda i: PoolMixer(3, causal=False), d_model=4, n_layers=2, n_classes=3,
                       shorten={1: 3}).double()
    x = torch.randn(2, 8, 4, dtype=f64)
    z = model.blocks[0](x)
    coeffs = torch.einsum("kj,bjc->bkc", dct_matrix(8)[:3], z)  # the 3 lowest DCT coefficients
    short = torch.einsum("kj,bkc->bjc", dct_matrix(3), coeffs) * (3 / 8) ** 0.5
    torch.testing.assert_close(model(x), model.head(model.final_norm(model.blocks[1](short).mean(1))))
    with pytest.raises(ValueError, match="shorten"):
        MetaFormer(torch.nn.Identity(), lambda i: PoolMixer(3), d_model=4, n_layers=2, n_classes=3, shorten={2: 3})


def test_bidirectional_mixer_adds_a_forward_and_a_reversed_pass_and_sees_both_sides():
    from minilib.ssm import S4DMixer

    torch.manual_seed(0)
    f, g = S4DMixer(4, expand=1).double(), S4DMixer(4, expand=1).double()
    x = torch.randn(2, 7, 4, dtype=f64)
    # the reversed pass written as a loop: position t of g's output reads x_{T-1}, ..., x_t
    backward = torch.stack([g(x[:, t:].flip(1))[:, -1] for t in range(7)], dim=1)
    torch.testing.assert_close(BidirectionalMixer(f, g)(x), f(x) + backward)
    shared = BidirectionalMixer(f)
    torch.testing.assert_close(shared(x), f(x) + f(x.flip(1)).flip(1))
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in f.parameters())
    assert not shared.causal and shared.new_cache() is None
    # both directions: the first output moves with the last input, the last output with the first input
    y = shared(x)
    for t, s in ((0, 6), (6, 0)):
        x2 = x.clone()
        x2[:, s] += 1.0
        assert (shared(x2)[:, t] - y[:, t]).abs().max() > 1e-6


def test_bidirectional_mixer_trains_in_the_metaformer():
    from minilib.ssm import MambaMixer

    torch.manual_seed(0)
    model = MetaFormer(torch.nn.Identity(), lambda i: BidirectionalMixer(MambaMixer(8, expand=1)), d_model=8,
                       n_layers=1, n_classes=2)
    x, y = torch.randn(16, 5, 8), torch.randint(0, 2, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
