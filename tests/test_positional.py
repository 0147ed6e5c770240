"""Sinusoids, RoPE and ALiBi against their closed forms and defining properties."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.positional import alibi_bias, alibi_slopes, rope, sinusoidal


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
