"""Feature maps: the simple ones by value, the random softmax features against exp(q.k)."""
import math

import pytest
import torch

from minilib.linear_attention import feature_map


def test_simple_feature_maps():
    x = torch.tensor([-2.0, 0.0, 1.5], dtype=torch.float64)
    torch.testing.assert_close(feature_map("elu+1")(x), torch.tensor([math.exp(-2.0), 1.0, 2.5], dtype=torch.float64))
    torch.testing.assert_close(feature_map("relu")(x), torch.tensor([0.0, 0.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(feature_map("identity")(x), x)
    with pytest.raises(ValueError, match="name"):
        feature_map("cosine")


def test_softmax_random_features_approach_exp_of_dot_product():
    g = torch.Generator().manual_seed(0)
    q, k = (0.4 * torch.randn(200, 8, generator=g, dtype=torch.float64) for _ in range(2))
    exact = ((q * k).sum(-1)).exp()
    errors = []
    for m in (8, 64, 1024):
        phis = [feature_map("softmax_kernel", dim=8, n_features=m, seed=seed) for seed in range(3)]
        assert all(phi(q).shape == (200, m) and bool((phi(q) > 0).all()) for phi in phis)
        errors.append(sum(((phi(q) * phi(k)).sum(-1) - exact).abs().mean().item() for phi in phis) / 3)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.4 * errors[0]


def test_softmax_kernel_needs_dim_and_features():
    with pytest.raises(ValueError, match="dim"):
        feature_map("softmax_kernel", n_features=4)
    with pytest.raises(ValueError, match="n_features"):
        feature_map("softmax_kernel", dim=4)
    phi = feature_map("softmax_kernel", dim=4, n_features=4)
    with pytest.raises(ValueError, match="dim"):
        phi(torch.zeros(2, 3))


def test_binary_hash_codes_and_features_count_agreeing_bits():
    phi = feature_map("binary_hash", dim=6, n_bits=16, seed=3)
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(50, 6, generator=g, dtype=torch.float64) for _ in range(2))
    hq, hk = phi.codes(q), phi.codes(k)
    assert set(hq.unique().tolist()) <= {-1.0, 1.0}
    hamming = (hq[:, None, :] != hk[None, :, :]).sum(-1).double()
    torch.testing.assert_close(hq @ hk.T, 16 - 2 * hamming, rtol=0, atol=0)
    fq, fk = phi(q), phi(k)
    assert fq.shape == (50, 32) and set(fq.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(fq @ fk.T, 16 - hamming, rtol=0, atol=0)


def test_binary_hash_linear_form_equals_the_quadratic_hamming_attention():
    from minilib.linear_attention import linear_attention_chunked

    phi = feature_map("binary_hash", dim=4, n_bits=8, seed=1)
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 2, 30, 4, generator=g) for _ in range(2))
    v = torch.randn(1, 2, 30, 3, generator=g)
    hq, hk = phi.codes(q), phi.codes(k)
    sim = (8 - (hq[..., :, None, :] != hk[..., None, :, :]).sum(-1)).float().tril()  # agreeing bits, causal
    want = (sim @ v) / sim.sum(-1, keepdim=True)
    got = linear_attention_chunked(phi(q), phi(k), v, normalize=True, chunk_size=7)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_binary_hash_needs_dim_and_bits():
    with pytest.raises(ValueError, match="n_bits"):
        feature_map("binary_hash", dim=4)
    with pytest.raises(ValueError, match="dim"):
        feature_map("binary_hash", dim=4, n_bits=2).codes(torch.zeros(3))
