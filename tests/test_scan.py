"""minilib.scan: every schedule equals a sequential fold written here, for several associative operators."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.scan import SCAN_METHODS, ScanCounter, associative_scan


def fold(combine, elems, dim):
    """Reference: s_0 = x_0, s_t = combine(s_{t-1}, x_t), one position at a time (single tensor or tuple)."""
    single = isinstance(elems, torch.Tensor)
    xs = (elems,) if single else elems
    L = xs[0].shape[dim]
    pick = lambda t: tuple(x.select(dim, t).unsqueeze(dim) for x in xs)  # noqa: E731
    acc, out = pick(0), [pick(0)]
    for t in range(1, L):
        acc = (combine(acc[0], pick(t)[0]),) if single else combine(acc, pick(t))
        out.append(acc)
    res = tuple(torch.cat(parts, dim=dim) for parts in zip(*out))
    return res[0] if single else res


def add(a, b):
    return a + b


def affine(a, b):
    """(a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2."""
    return a[0] * b[0], b[0] * a[1] + b[1]


def matmul_later_first(a, b):
    """Product of 2x2 matrices, later @ earlier (not commutative)."""
    return b @ a


OPERATORS = {
    "sum": (add, lambda g, L: torch.randn(3, L, 2, dtype=torch.float64, generator=g), 1),
    "max": (torch.maximum, lambda g, L: torch.randn(L, 4, dtype=torch.float64, generator=g), 0),
    "affine": (affine, lambda g, L: (torch.rand(2, L, 3, dtype=torch.float64, generator=g),
                                     torch.randn(2, L, 3, dtype=torch.float64, generator=g)), 1),
    "matmul": (matmul_later_first, lambda g, L: torch.randn(L, 2, 2, dtype=torch.float64, generator=g) / 1.5, 0),
}


def assert_same(got, want):
    if isinstance(want, torch.Tensor):
        got, want = (got,), (want,)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", SCAN_METHODS)
@pytest.mark.parametrize("op", OPERATORS)
@pytest.mark.parametrize("L", [1, 2, 3, 7, 16, 33])
def test_scan_equals_sequential_fold(method, op, L):
    combine, make, dim = OPERATORS[op]
    elems = make(torch.Generator().manual_seed(L), L)
    assert_same(associative_scan(combine, elems, dim=dim, method=method), fold(combine, elems, dim))


@settings(max_examples=30, deadline=None)
@given(L=st.integers(1, 70), extra=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_affine_scan_solves_the_linear_recurrence(L, extra, seed):
    """h_t = a_t h_{t-1} + b_t from h_{-1} = 0 is the b-part of the scan of (a, b); any dim, any leading shape."""
    g = torch.Generator().manual_seed(seed)
    shape = (2,) * extra + (L, 3)
    a, b = torch.rand(shape, dtype=torch.float64, generator=g), torch.randn(shape, dtype=torch.float64, generator=g)
    h, hs = torch.zeros_like(b.select(-2, 0)), []
    for t in range(L):
        h = a.select(-2, t) * h + b.select(-2, t)
        hs.append(h)
    _, got = associative_scan(affine, (a, b), dim=-2)
    torch.testing.assert_close(got, torch.stack(hs, dim=-2), rtol=1e-12, atol=1e-12)


def test_elements_of_different_rank_travel_together():
    """A matrix and a vector per position (h_t = M_t h_{t-1} + v_t) with a negative dim counted per tensor."""
    g = torch.Generator().manual_seed(0)
    M, v = torch.randn(9, 3, 3, dtype=torch.float64, generator=g) / 2, torch.randn(9, 3, dtype=torch.float64, generator=g)

    def combine(a, b):
        return b[0] @ a[0], (b[0] @ a[1].unsqueeze(-1)).squeeze(-1) + b[1]

    _, got = associative_scan(combine, (M, v), dim=0)
    h, want = torch.zeros(3, dtype=torch.float64), []
    for t in range(9):
        h = M[t] @ h + v[t]
        want.append(h)
    torch.testing.assert_close(got, torch.stack(want), rtol=1e-12, atol=1e-12)


def test_complex_elements():
    g = torch.Generator().manual_seed(1)
    a = torch.polar(torch.rand(20, dtype=torch.float64, generator=g), torch.randn(20, dtype=torch.float64, generator=g))
    b = torch.randn(20, dtype=torch.complex128, generator=g)
    assert_same(associative_scan(affine, (a, b), dim=0), fold(affine, (a, b), 0))


@pytest.mark.parametrize("L", [1, 2, 5, 8, 100, 1024, 1000])
def test_work_and_depth_counts(L):
    """Hillis-Steele: ceil(log2 L) rounds and sum_r (L - 2^r) combines; Blelloch: <= 2L work in <= 2 log2 L rounds."""
    log = math.ceil(math.log2(L)) if L > 1 else 0
    x = torch.ones(L, dtype=torch.float64)
    counts = {}
    for method in SCAN_METHODS:
        counts[method] = ScanCounter()
        torch.testing.assert_close(associative_scan(add, x, dim=0, method=method, counter=counts[method]),
                                   torch.arange(1, L + 1, dtype=torch.float64))
    assert (counts["sequential"].work, counts["sequential"].depth) == (L - 1, L - 1)
    assert counts["hillis_steele"].depth == log
    assert counts["hillis_steele"].work == sum(L - 2**r for r in range(log))
    assert counts["blelloch"].work <= 2 * L and counts["blelloch"].depth <= 2 * log
    if L == 1024:  # powers of two: exactly 2L - 2 - log2 L combines in 2 log2 L - 1 rounds
        assert counts["blelloch"].work == 2 * L - 2 - 10 and counts["blelloch"].depth == 2 * 10 - 1
        assert counts["hillis_steele"].work == L * 10 - (L - 1)


def test_gradients_flow_through_the_scan():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(11, 2, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(11, 2, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: associative_scan(affine, (a, b), dim=0)[1], (a, b))


def test_empty_sequence_returns_it_unchanged():
    x = torch.zeros(2, 0, 3)
    assert associative_scan(add, x, dim=1).shape == (2, 0, 3)


def test_bad_input():
    x = torch.randn(4, 5)
    with pytest.raises(ValueError, match="method"):
        associative_scan(add, x, dim=0, method="tree")
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        associative_scan(add, x, dim=2)
    with pytest.raises(TypeError, match="dim must be an int"):
        associative_scan(add, x, dim=None)
    with pytest.raises(ValueError, match=r"same length along dim=0.*\(4, 5\), \(3, 5\)"):
        associative_scan(affine, (x, torch.randn(3, 5)), dim=0)
    with pytest.raises(TypeError, match="elems must be a tensor or a non-empty tuple"):
        associative_scan(add, (), dim=0)
    with pytest.raises(TypeError, match="elems must be"):
        associative_scan(add, [x.numpy()], dim=0)
    with pytest.raises(TypeError, match="combine must be callable"):
        associative_scan(None, x, dim=0)
    with pytest.raises(ValueError, match="combine must return 1 tensor"):
        associative_scan(lambda a, b: a.sum(0, keepdim=True), x, dim=0)
