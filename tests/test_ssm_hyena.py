"""minilib.ssm.hyena: 2-D FFT convolution vs conv2d, the Hyena operator against a direct recomputation, causality, training."""
import math

import pytest
import torch
import torch.nn.functional as F

from minilib.models import TransformerConfig, TransformerLM, train
from minilib.ssm import Hyena2D, Hyena2DMixer, HyenaMixer, ImplicitFilter, direct_causal_conv, fft_conv2d


@pytest.mark.parametrize("H,W,kh,kw", [(8, 8, 8, 8), (7, 5, 3, 2), (1, 4, 1, 4), (6, 9, 6, 1)])
def test_fft_conv2d_equals_direct_conv2d(H, W, kh, kw):
    g = torch.Generator().manual_seed(H * W)
    u = torch.randn(2, 3, H, W, dtype=torch.float64, generator=g)
    k = torch.randn(3, kh, kw, dtype=torch.float64, generator=g)
    # y_ij = sum_ab k_ab u_{i-a, j-b}: conv2d (a correlation) with the flipped kernel, padded above and left
    want = F.conv2d(F.pad(u, (kw - 1, 0, kh - 1, 0)), k.flip(-1, -2)[:, None], groups=3)
    torch.testing.assert_close(fft_conv2d(u, k), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(fft_conv2d(u.float(), k.float()), want.float(), rtol=0, atol=1e-5)


def test_hyena_equals_a_direct_recomputation_and_is_causal():
    torch.manual_seed(0)
    m = HyenaMixer(8).double()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    T = x.shape[1]
    z = m.short(m.in_proj(x).transpose(1, 2))[..., :T]
    v, x1, x2 = z.chunk(3, dim=1)
    h = m.filters(T).view(2, 8, T)
    for i, gate in enumerate((x1, x2)):  # the long convolutions done directly, O(T^2)
        v = gate * (direct_causal_conv(v, h[i]) + m.bias[i, :, None] * v)
    torch.testing.assert_close(m(x), m.out_proj(v.transpose(1, 2)), rtol=0, atol=1e-10)
    x2_ = x.clone()
    x2_[:, 12] += 1.0
    torch.testing.assert_close(m(x2_)[:, :12], m(x)[:, :12], rtol=0, atol=1e-12)
    assert (m(x2_)[:, 12:] - m(x)[:, 12:]).abs().amax() > 1e-6
    assert m.new_cache() is None


def test_implicit_filters_have_a_fixed_parameter_count_and_decay():
    f = ImplicitFilter(4, n_freqs=3, hidden=8)
    n_params = sum(p.numel() for p in f.parameters())
    assert f(16).shape == (4, 16) and f(1024).shape == (4, 1024)
    assert sum(p.numel() for p in f.parameters()) == n_params
    h = f(512).detach().abs()
    # the fastest channel's window is exp(-30 p): below 1e-6 of the MLP's output scale beyond p = 1/2
    assert h[-1, 256:].max() < 1e-6 * f.mlp(torch.zeros(1, 7)).abs().max().item() + 1e-5
    assert ImplicitFilter(4, dims=2)(5, 6).shape == (4, 5, 6)


def test_hyena_trains_in_transformer_lm_and_hyena_2d_mixes_the_whole_image():
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig(5, 16, 2, 2, max_len=16, pos="none", mixer="hyena"))
    x, y = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]]), torch.tensor([[1, 2, 3, 4, 0, 1, 2, 3]])
    losses = train(model, iter(lambda: (x, y), None), steps=40, lr=1e-2, progress=False)
    assert losses[-1] < 0.3 * losses[0]
    m = Hyena2D(4).double()
    img = torch.randn(1, 5, 6, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: m(t)[0, 2, 3].sum(), img)
    assert (jac[0].abs().sum(-1) > 0).all(), "every pixel influences the centre output"


def test_bad_input():
    with pytest.raises(ValueError, match=r"kernel must be \(C, k_h <= H, k_w <= W\)"):
        fft_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 5, 1))
    with pytest.raises(ValueError, match=r"x must end in d_model=8 features"):
        HyenaMixer(8)(torch.randn(1, 3, 7))
    with pytest.raises(ValueError, match="need 1 sizes"):
        ImplicitFilter(2)(3, 4)
    with pytest.raises(ValueError, match="T must be a positive int"):
        HyenaMixer(8).fft_flops(0)


@pytest.mark.parametrize("B,T", [(1, 1), (1, 8), (3, 13), (2, 64)])
def test_fft_flops_count_the_ffts_the_forward_runs(B, T):
    """Every FFT call of a forward pass recorded with its length and batch; counted at 2.5 n log2 n per real FFT."""
    from torch.overrides import TorchFunctionMode

    calls = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.fft.rfft, torch.fft.irfft):
                n, x = kwargs["n"], args[0]
                calls.append((func, n, x.numel() // x.shape[-1]))
            return func(*args, **kwargs)

    mixer = HyenaMixer(4)
    with Record(), torch.no_grad():
        mixer(torch.randn(B, T, 4))
    fft = sum(count * 2.5 * n * math.log2(n) for _, n, count in calls if n > 1)
    products = sum(6 * count * (n // 2 + 1) for f, n, count in calls if f is torch.fft.irfft)
    assert len(calls) == 6  # two convolutions: input, filter, inverse
    assert mixer.fft_flops(T, batch=B) == round(fft + products)


def test_hyena2d_mixer_reads_tokens_row_by_row_and_trains_in_a_classifier():
    from types import SimpleNamespace

    from minilib.mixers import MetaFormer
    from minilib.mixing import mixer_factory
    from minilib.vision import PatchEmbedding

    torch.manual_seed(0)
    config = SimpleNamespace(d_model=4, n_heads=1, max_len=16, mixer_kwargs={"grid": (3, 5)})
    mixer = mixer_factory("hyena2d")(config, 0).double()
    assert not mixer.causal
    grid = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    tokens = torch.stack([grid[:, i, j] for i in range(3) for j in range(5)], dim=1)  # row by row, written out
    want = mixer.hyena(grid)
    got = mixer(tokens)
    for i in range(3):
        for j in range(5):
            torch.testing.assert_close(got[:, 5 * i + j], want[:, i, j], rtol=0, atol=1e-12)
    model = MetaFormer(PatchEmbedding(4, 1, 8), lambda layer: Hyena2DMixer(8, (4, 4)), d_model=8, n_layers=1,
                       n_classes=2, d_ff=16)
    x, y = torch.randn(16, 4, 4), torch.arange(16) % 2
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    with pytest.raises(ValueError, match="grid"):
        Hyena2DMixer(4, (3, 0))
    with pytest.raises(ValueError, match="x must hold grid 3x5"):
        mixer(tokens[:, :14])
