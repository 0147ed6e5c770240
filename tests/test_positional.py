"""minilib.positional: sinusoids, RoPE and its scaling (PI, NTK, dynamic), ALiBi, Toeplitz matrices and
Laplacian positions, against closed forms, complex rotations and fp64 torch references."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from minilib.attention import KVCache, MultiHeadAttention, sdpa, urpe_attention
from minilib.models import TransformerLM, set_rope_scaling
from minilib.positional import (alibi_bias, alibi_slopes, laplacian_positional_encoding, rope, rope_angles, sinusoidal,
                                toeplitz_matrix)
from tests.attention_reference import randn

SETTINGS = settings(max_examples=30, deadline=None)
f64 = torch.float64


def test_sinusoidal_matches_the_formula_entry_by_entry():
    T, d = 7, 6
    table = sinusoidal(T, d)
    for p in range(T):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_odd_width():
    assert sinusoidal(3, 5).shape == (3, 5)


def rope_complex(x, positions, base):
    """Independent reference: pairs as complex numbers times e^{i m theta}."""
    D = x.shape[-1]
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], D // 2, 2).contiguous())
    theta = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = positions.double()[:, None] * theta
    return torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).flatten(-2)


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 9), half=st.integers(1, 6), seed=st.integers(0, 999), base=st.sampled_from([100.0, 10000.0]))
def test_rope_equals_complex_rotation(T, half, seed, base):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, T, 2 * half, generator=g, dtype=torch.float64)
    positions = torch.randint(0, 500, (T,), generator=g)
    torch.testing.assert_close(rope(x, positions, base=base), rope_complex(x, positions, base), rtol=0, atol=1e-10)


def test_rope_preserves_norm_and_is_relative():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 16, generator=g, dtype=torch.float64), torch.randn(1, 16, generator=g, dtype=torch.float64)

    def score(m, n):
        return (rope(q, torch.tensor([m])) * rope(k, torch.tensor([n]))).sum().item()

    torch.testing.assert_close(rope(q, torch.tensor([37])).norm(), q.norm(), rtol=0, atol=1e-12)
    for offset in [0, 3, 50]:
        assert score(10 + offset, 10) == pytest.approx(score(200 + offset, 200), abs=1e-10)
    assert abs(score(13, 10) - score(10, 13)) > 1e-3  # depends on the signed offset, not just its size


def test_rope_rejects_bad_input():
    with pytest.raises(ValueError, match="even last dimension"):
        rope(torch.randn(2, 5), torch.arange(2))
    with pytest.raises(ValueError, match=r"positions must have shape \(T,\)"):
        rope(torch.randn(3, 4), torch.arange(2))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_alibi_slopes_power_of_two(n):
    want = torch.tensor([2 ** (-8 * i / n) for i in range(1, n + 1)])
    torch.testing.assert_close(alibi_slopes(n), want)


def test_alibi_slopes_eight_heads_are_halves():
    # The paper: for 8 heads the slopes are 1/2, 1/4, ..., 1/256.
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([0.5 ** i for i in range(1, 9)]))


def test_alibi_slopes_non_power_of_two_follow_the_paper():
    # 6 heads: the 4 slopes of n=4, then slopes 1 and 3 (1-based odd) of n=8.
    want = [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(want))


def test_alibi_bias_values_with_cache_alignment():
    b = alibi_bias(2, 2, 4)
    m = alibi_slopes(2)
    # queries are absolute positions 2 and 3
    for h in range(2):
        for t, qpos in enumerate([2, 3]):
            for s in range(4):
                want = -m[h].item() * max(qpos - s, 0)
                assert b[h, t, s].item() == pytest.approx(want)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 9), extra=st.integers(0, 4), causal=st.booleans(), seed=st.integers(0, 999))
def test_toeplitz_matrix_entries(T, extra, causal, seed):
    S = T + extra
    c = torch.randn(3, S if causal else 2 * S - 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    C = toeplitz_matrix(c, T, S, causal=causal)
    assert C.shape == (3, T, S)
    for t in range(T):
        for s in range(S):
            delta = (S - T + t) - s
            want = (c[:, delta] if delta >= 0 else torch.zeros(3, dtype=torch.float64)) if causal else c[:, delta + S - 1]
            assert torch.equal(C[:, t, s], want)
    # constant along every diagonal
    assert torch.equal(C[:, 1:, 1:], C[:, :-1, :-1])


def plain_rotation(x, angles):
    """RoPE written as explicit 2x2 rotations of the interleaved pairs, from given angles (T, D/2)."""
    out = x.clone()
    for i in range(x.shape[-1] // 2):
        c, s = torch.cos(angles[:, i]), torch.sin(angles[:, i])
        out[..., 2 * i] = c * x[..., 2 * i] - s * x[..., 2 * i + 1]
        out[..., 2 * i + 1] = s * x[..., 2 * i] + c * x[..., 2 * i + 1]
    return out


@pytest.mark.parametrize("scaling", [("pi", 1.0), ("ntk", 1.0), ("dynamic", 64)])
def test_rope_scaling_reduces_to_plain_rope(scaling):
    x, positions = randn(2, 10, 8), torch.arange(10)
    torch.testing.assert_close(rope(x, positions, scaling=scaling), rope(x, positions))


@given(s=st.floats(1.0, 16.0), D=st.sampled_from([4, 8, 16, 64]))
@SETTINGS
def test_rope_scaling_frequencies_closed_form(s, D):
    positions = torch.arange(1, 50, 7)
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=f64) / D)
    pi = rope_angles(positions, D, scaling=("pi", s))
    torch.testing.assert_close(pi, positions.to(f64)[:, None] / s * theta)
    ntk = rope_angles(positions, D, scaling=("ntk", s)) / positions.to(f64)[:, None]
    torch.testing.assert_close(ntk[:, 0], torch.ones(len(positions), dtype=f64))  # fastest pair untouched
    torch.testing.assert_close(ntk[:, -1], torch.full((len(positions),), theta[-1].item() / s, dtype=f64))


def test_dynamic_scaling_switches_on_past_the_training_length():
    x = randn(1, 100, 8)
    positions = torch.arange(100)
    got = rope(x, positions, scaling=("dynamic", 50))
    want = plain_rotation(x, rope_angles(positions, 8, base=10000.0 * 2.0 ** (8 / 6)))
    torch.testing.assert_close(got, want)


def test_rope_scaling_rejects_unknown_methods():
    with pytest.raises(ValueError, match="scaling"):
        rope(randn(1, 3, 4), torch.arange(3), scaling=("yarn", 2.0))
    with pytest.raises(ValueError, match="scaling"):
        rope(randn(1, 3, 4), torch.arange(3), scaling=("pi", 0.0))


def frequencies(D, base):
    return base ** (-torch.arange(0, D, 2, dtype=f64) / D)


def complex_rotation(x, positions, theta):
    """RoPE written with complex numbers: pair (x_2i, x_2i+1) is x_2i + i x_2i+1, multiplied by e^{i m theta_i}."""
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    turned = z * torch.polar(torch.ones((), dtype=f64), positions.to(f64)[:, None] * theta[None, :])
    return torch.view_as_real(turned).flatten(-2)


def scaled_frequencies(D, s, method, base=10000.0):
    """The closed forms: PI divides every frequency by s; NTK raises the base to base * s^(D/(D-2))."""
    if method == "pi":
        return frequencies(D, base) / s
    return frequencies(D, base * s ** (D / (D - 2)))


@given(s=st.floats(1.0, 16.0), D=st.sampled_from([4, 8, 16]), method=st.sampled_from(["pi", "ntk"]),
       shift=st.integers(0, 3000), seed=st.integers(0, 100))
@SETTINGS
def test_scaled_rope_logits_depend_only_on_distance(s, D, method, shift, seed):
    q, k = randn(12, D, seed=seed), randn(12, D, seed=seed + 1)
    positions = torch.arange(0, 120, 10)
    scores = rope(q, positions, scaling=(method, s)) @ rope(k, positions, scaling=(method, s)).T
    shifted = rope(q, positions + shift, scaling=(method, s)) @ rope(k, positions + shift, scaling=(method, s)).T
    torch.testing.assert_close(shifted, scores)
    # q_m . k_n = Re sum_i zq_i conj(zk_i) e^{i (m - n) theta'_i}
    zq = torch.view_as_complex(q.reshape(12, -1, 2).contiguous())
    zk = torch.view_as_complex(k.reshape(12, -1, 2).contiguous())
    distance = (positions[:, None] - positions[None, :]).to(f64)
    phase = torch.polar(torch.ones((), dtype=f64), distance[..., None] * scaled_frequencies(D, s, method))
    want = (zq[:, None, :] * zk.conj()[None, :, :] * phase).real.sum(-1)
    torch.testing.assert_close(scores, want)


@given(s=st.floats(1.0, 8.0), seed=st.integers(0, 100))
@SETTINGS
def test_position_interpolation_is_plain_rope_at_fractional_positions(s, seed):
    x, positions = randn(3, 40, 16, seed=seed), torch.arange(0, 400, 10)
    want = complex_rotation(x, positions.to(f64) / s, frequencies(16, 10000.0))
    torch.testing.assert_close(rope(x, positions, scaling=("pi", s)), want)


@pytest.mark.parametrize("s", [2.0, 4.0, 8.0])
def test_ntk_interpolates_the_slowest_pair_and_extrapolates_the_fastest_over_a_long_range(s):
    D, train_len = 16, 64
    positions = torch.arange(int(s * train_len))  # the whole extended range
    x = randn(1, len(positions), D)
    ntk = rope(x, positions, scaling=("ntk", s))
    plain_there = complex_rotation(x, positions.to(f64), frequencies(D, 10000.0))
    plain_squeezed = complex_rotation(x, positions.to(f64) / s, frequencies(D, 10000.0))
    torch.testing.assert_close(ntk[..., :2], plain_there[..., :2])  # fastest pair: plain RoPE, extrapolated
    torch.testing.assert_close(ntk[..., -2:], plain_squeezed[..., -2:])  # slowest pair: squeezed into [0, train_len)
    # every pair in between turns slower than plain RoPE and faster than position interpolation
    ntk_angle = torch.atan2(ntk[0, 1, 1::2], ntk[0, 1, 0::2]) - torch.atan2(x[0, 1, 1::2], x[0, 1, 0::2])
    step = torch.remainder(ntk_angle, 2 * math.pi)
    theta = frequencies(D, 10000.0)
    assert (step[1:-1] < theta[1:-1]).all() and (step[1:-1] > theta[1:-1] / s).all()


def test_dynamic_scaling_in_one_forward_is_ntk_at_the_length_ratio():
    torch.manual_seed(0)
    model = TransformerLM(11, 16, 2, 2, max_len=200).double()
    idx = torch.randint(0, 11, (2, 150))
    set_rope_scaling(model, ("dynamic", 50))
    dynamic = model(idx)
    set_rope_scaling(model, ("ntk", 3.0))
    torch.testing.assert_close(dynamic, model(idx))
    set_rope_scaling(model, ("dynamic", 200))  # never past its length: plain RoPE
    plain = model(idx)
    set_rope_scaling(model, None)
    torch.testing.assert_close(plain, model(idx))


def dynamic_reference(mha, x, train_len):
    """Token-by-token attention where position t's query and key use base * s_t^(D/(D-2)), s_t = max(1, (t+1)/L)."""
    B, T, _ = x.shape
    H, D = mha.n_heads, mha.head_dim
    q = mha.wq(x).view(B, T, H, D).transpose(1, 2)
    k = mha.wk(x).view(B, T, H, D).transpose(1, 2)
    v = mha.wv(x).view(B, T, H, D).transpose(1, 2)
    for t in range(T):
        s = max(1.0, (t + 1) / train_len)
        theta = frequencies(D, mha.rope_base * s ** (D / (D - 2)))
        q[:, :, t:t + 1] = complex_rotation(q[:, :, t:t + 1], torch.tensor([t]), theta)
        k[:, :, t:t + 1] = complex_rotation(k[:, :, t:t + 1], torch.tensor([t]), theta)
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return mha.wo(heads.transpose(1, 2).reshape(B, T, H * D))


def test_dynamic_scaling_at_a_kv_cache_boundary():
    torch.manual_seed(0)
    train_len, T = 8, 14
    mha = MultiHeadAttention(16, 2, rope=True, rope_scaling=("dynamic", train_len)).double()
    x = randn(2, T, 16)
    cache = KVCache()
    cached = torch.cat([mha(x[:, t:t + 1], cache=cache) for t in range(T)], dim=1)
    # each cached key keeps the scale of the step that wrote it
    torch.testing.assert_close(cached, dynamic_reference(mha, x, train_len))
    # up to the training length the scale is 1, so cached decoding is the full forward
    torch.testing.assert_close(cached[:, :train_len], mha(x[:, :train_len]))
    # past it, the full forward of the same prefix re-rotates old keys with the new scale, the cache does not
    for t in range(train_len, T):
        gap = (cached[:, t] - mha(x[:, :t + 1])[:, t]).abs().max().item()
        assert gap > 1e-6, (t, gap)


def test_causal_attention_without_positions_outputs_the_running_mean():
    """NoPE: with equal scores, causal attention averages the prefix, so the output's spread shrinks like 1/t."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double()
    with torch.no_grad():
        mha.wq.weight.zero_()
        mha.wo.weight.copy_(torch.eye(8))
    x = randn(3, 50, 8)
    values = mha.wv(x)
    running_mean = values.cumsum(dim=1) / torch.arange(1, 51, dtype=f64)[None, :, None]
    torch.testing.assert_close(mha(x), running_mean)
    # the same layer without the causal mask gives every position the same output
    bidirectional = mha(x, causal=False)
    torch.testing.assert_close(bidirectional, bidirectional[:, :1].expand_as(bidirectional))


def path_graph(n):
    A = torch.zeros(n, n, dtype=f64)
    i = torch.arange(n - 1)
    A[i, i + 1] = A[i + 1, i] = 1.0
    return A


def same_up_to_sign(got, want):
    signs = torch.sign((got * want).sum(dim=0))
    torch.testing.assert_close(got * signs, want, atol=1e-8, rtol=0)


@pytest.mark.parametrize("n", [2, 5, 16, 33])
def test_path_graph_laplacian_eigenvectors_are_dct_cosines(n):
    k = n - 1
    v, j = torch.arange(n, dtype=f64)[:, None], torch.arange(1, k + 1, dtype=f64)[None, :]
    dct2 = torch.cos(math.pi * j * (v + 0.5) / n)
    same_up_to_sign(laplacian_positional_encoding(path_graph(n), k, normalized=False), dct2 / dct2.norm(dim=0))
    # the normalised Laplacian's are D^{1/2} times the DCT-I cosines cos(pi j v / (n - 1))
    dct1 = torch.sqrt(path_graph(n).sum(1))[:, None] * torch.cos(math.pi * j * v / (n - 1))
    same_up_to_sign(laplacian_positional_encoding(path_graph(n), k), dct1 / dct1.norm(dim=0))


@given(n=st.integers(3, 12), p=st.floats(0.3, 1.0), seed=st.integers(0, 1000), normalized=st.booleans())
@SETTINGS
def test_laplacian_encoding_is_an_orthonormal_eigenbasis(n, p, seed, normalized):
    g = torch.Generator().manual_seed(seed)
    upper = torch.triu((torch.rand(n, n, generator=g) < p).to(f64), 1)
    A = ((upper + upper.T + path_graph(n)) > 0).to(f64)  # connected: it contains a path
    k = n - 1
    u = laplacian_positional_encoding(A, k, normalized=normalized)
    degree = A.sum(1)
    if normalized:
        lap = torch.eye(n, dtype=f64) - A / torch.sqrt(degree[:, None] * degree[None, :])
    else:
        lap = torch.diag(degree) - A
    eigenvalues = torch.linalg.eigvalsh(lap)
    torch.testing.assert_close(lap @ u, u * eigenvalues[1:])
    torch.testing.assert_close(u.T @ u, torch.eye(k, dtype=f64))
    trivial = torch.sqrt(degree) if normalized else torch.ones(n, dtype=f64)
    torch.testing.assert_close(trivial @ u, torch.zeros(k, dtype=f64), atol=1e-9, rtol=0)
    first = (u.abs() > 1e-9).to(torch.int8).argmax(0)
    assert (u[first, torch.arange(k)] > 0).all()


def test_laplacian_encoding_rejects_bad_input():
    with pytest.raises(ValueError, match="adjacency"):
        laplacian_positional_encoding(torch.ones(3, 4), 1)
    with pytest.raises(ValueError, match="adjacency"):
        laplacian_positional_encoding(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="k must"):
        laplacian_positional_encoding(path_graph(4), 4)
    with pytest.raises(ValueError, match="isolated"):
        laplacian_positional_encoding(torch.zeros(3, 3), 1)
    with pytest.raises(TypeError, match="adjacency"):
        laplacian_positional_encoding([[0, 1], [1, 0]], 1)


def test_causal_queries_before_every_key_get_no_key_in_every_positional_form():
    """T > S (queries are the last T of S positions): the first T - S queries see no key, one rule for the family."""
    T, S = 5, 3
    bias = alibi_bias(2, T, S)
    slopes = alibi_slopes(2)
    for t in range(T):
        for s in range(S):
            want = -slopes * max(0, (S - T + t) - s)
            torch.testing.assert_close(bias[:, t, s], want)
    C = toeplitz_matrix(torch.arange(1.0, S + 1), T, S, causal=True)
    assert (C[: T - S] == 0).all() and C[T - S:].equal(toeplitz_matrix(torch.arange(1.0, S + 1), S, S, causal=True))
    q = torch.randn(1, 2, T, 4, dtype=torch.float64)
    k = torch.randn(1, 2, S, 4, dtype=torch.float64)
    out = urpe_attention(q, k, k, toeplitz=torch.ones(S, dtype=torch.float64), causal=True)
    assert (out[:, :, : T - S] == 0).all()
    torch.testing.assert_close(out[:, :, T - S:], sdpa(q[:, :, T - S:], k, k, causal=True), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, name", [
    (lambda: sinusoidal(-1, 4), "T"), (lambda: sinusoidal(4, 0), "d"), (lambda: alibi_slopes(True), "n_heads"),
    (lambda: toeplitz_matrix(torch.ones(5), 5, 3), "T must be at most S"), (lambda: alibi_bias(2, 3, -1), "S"),
    (lambda: toeplitz_matrix(torch.ones(5), 0, 3), "T"), (lambda: rope_angles(torch.arange(3), 0), "D"),
    (lambda: laplacian_positional_encoding(torch.ones(3, 3) - torch.eye(3), True), "k"),
])
def test_sizes_are_checked_by_name(call, name):
    with pytest.raises(ValueError, match=name):
        call()
