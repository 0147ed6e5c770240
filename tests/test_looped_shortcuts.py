"""Linear shortcuts against torch.linalg.lstsq; the ladder residual against the residual stream written out."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from minilib.looped import fit_linear_shortcuts, ladder_forward


@settings(max_examples=15, deadline=None)
@given(n=st.integers(6, 40), d=st.integers(1, 6), layers=st.integers(1, 3))
def test_fit_equals_lstsq(n, d, layers):
    g = torch.Generator().manual_seed(n * 7 + d)
    hs = [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(layers)]
    final = torch.randn(n, d, generator=g, dtype=torch.float64)
    for h, a in zip(hs, fit_linear_shortcuts(hs, final)):
        torch.testing.assert_close(a, torch.linalg.lstsq(h, final).solution)


def test_exact_linear_relation_is_recovered():
    h = torch.randn(50, 4, dtype=torch.float64)
    a = torch.randn(4, 4, dtype=torch.float64)
    torch.testing.assert_close(fit_linear_shortcuts([h], h @ a)[0], a)


def branches(seed, n=4, d=6):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(d, d, generator=g, dtype=torch.float64) / d for _ in range(n)]
    return [lambda h, w=w: torch.tanh(h @ w) for w in ws]


def test_ladder_offset_zero_is_standard_residual():
    fs, x = branches(0), torch.randn(2, 3, 6, dtype=torch.float64)
    h = x
    for f in fs:
        h = h + f(h)
    torch.testing.assert_close(ladder_forward(fs, x, offset=0), h)


def test_ladder_offset_one_reads_one_step_late():
    f0, f1, f2, f3 = branches(1)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    o0 = f0(x)
    o1 = f1(x)               # does not wait for o0
    o2 = f2(x + o0)          # sees o0 but not o1
    o3 = f3(x + o0 + o1)
    torch.testing.assert_close(ladder_forward([f0, f1, f2, f3], x, offset=1), x + o0 + o1 + o2 + o3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rows"):
        fit_linear_shortcuts([torch.randn(5, 3)], torch.randn(6, 3))
    with pytest.raises(ValueError, match="offset"):
        ladder_forward(branches(0), torch.randn(1, 2, 6, dtype=torch.float64), offset=-1)
