"""minilib.ssm.selective: the three selective-scan forms, SSD and the mixing matrices against naive loops (fp64)."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minilib.ssm.selective as selective
from minilib.ssm import (ScanCounter, fft_conv, s4d_init, s4d_kernel, selective_scan_chunked, selective_scan_parallel,
                         selective_scan_recurrent, ssd_chunked, ssd_matrix, ssd_recurrent, ssm_matrix)


def inputs(Bt, L, Ch, N, seed, *, complex_=False, D=True, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    u, delta = r(Bt, L, Ch), scale * torch.nn.functional.softplus(r(Bt, L, Ch) - 1)
    A = -torch.rand(Ch, N, dtype=torch.float64, generator=g) - 0.1
    B, C = r(Bt, L, N), r(Bt, L, N)
    if complex_:
        A = torch.complex(A, r(Ch, N))
        B, C = torch.complex(B, r(Bt, L, N)), torch.complex(C, r(Bt, L, N))
    return u, delta, A, B, C, (r(Ch) if D else None)


def naive_selective(u, delta, A, B, C, D):
    """numpy, one (batch, channel, state) entry at a time."""
    u, delta, A, B, C = (x.numpy() for x in (u, delta, A, B, C))
    Bt, L, Ch = u.shape
    y = np.zeros((Bt, L, Ch))
    for b in range(Bt):
        for c in range(Ch):
            h = np.zeros(A.shape[1], dtype=np.result_type(A, B))
            for t in range(L):
                h = np.exp(delta[b, t, c] * A[c]) * h + delta[b, t, c] * B[b, t] * u[b, t, c]
                out = (C[b, t] * h).sum()
                y[b, t, c] = 2 * out.real if np.iscomplexobj(out) else out
    y = torch.tensor(y)
    return y if D is None else y + D * torch.as_tensor(u)


@settings(max_examples=25, deadline=None)
@given(L=st.integers(1, 40), N=st.integers(1, 5), chunk=st.integers(1, 50), complex_=st.booleans(),
       seed=st.integers(0, 9999))
def test_all_forms_equal_the_naive_loop(L, N, chunk, complex_, seed):
    args = inputs(2, L, 3, N, seed, complex_=complex_)
    want = naive_selective(*args)
    torch.testing.assert_close(selective_scan_recurrent(*args), want, rtol=0, atol=1e-10)
    for method in ("blelloch", "hillis_steele"):
        torch.testing.assert_close(selective_scan_parallel(*args, method=method), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(selective_scan_chunked(*args, chunk_size=chunk), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(ssm_matrix(*args[1:]) @ args[0].transpose(1, 2)[..., None],
                               want.transpose(1, 2)[..., None], rtol=0, atol=1e-10)


@pytest.mark.parametrize("form", ["recurrent", "parallel", "chunked"])
def test_carried_state_equals_one_pass(form):
    fn = {"recurrent": selective_scan_recurrent, "parallel": selective_scan_parallel,
          "chunked": lambda *a, **k: selective_scan_chunked(*a, chunk_size=4, **k)}[form]
    u, delta, A, B, C, D = inputs(2, 23, 3, 4, 1)
    whole, h_whole = fn(u, delta, A, B, C, D, return_state=True)
    y1, h = fn(u[:, :10], delta[:, :10], A, B[:, :10], C[:, :10], D, return_state=True)
    y2, h2 = fn(u[:, 10:], delta[:, 10:], A, B[:, 10:], C[:, 10:], D, state=h, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(h2, h_whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(h_whole, selective_scan_recurrent(u, delta, A, B, C, D, return_state=True)[1],
                               rtol=0, atol=1e-12)


def test_chunked_holds_one_chunk_of_states_at_a_time(monkeypatch):
    """Each chunk's states are formed inside one call that returns only its outputs and its last state."""
    seen = []
    original = selective._chunk_scan

    def spy(delta, *args):
        y, h = original(delta, *args)
        seen.append((tuple(delta.shape), tuple(y.shape), tuple(h.shape)))
        return y, h

    monkeypatch.setattr(selective, "_chunk_scan", spy)
    for complex_ in (False, True):  # the cumulative-sum form and the log-depth form
        seen.clear()
        selective_scan_chunked(*inputs(1, 70, 3, 4, 2, complex_=complex_), chunk_size=16)
        assert seen == [((1, 16, 3), (1, 16, 3), (1, 3, 4))] * 4 + [((1, 6, 3), (1, 6, 3), (1, 3, 4))]


def test_large_decays_inside_a_chunk_stay_finite():
    """delta * |A| summed over one chunk far beyond exp()'s range: the chunk falls back to a log-depth scan."""
    args = inputs(1, 64, 2, 3, 3, scale=200.0)
    y = selective_scan_chunked(*args, chunk_size=64)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, naive_selective(*args), rtol=0, atol=1e-9)


def test_float32_gradients_stay_finite_just_inside_the_cumulative_sum_range():
    r"""A chunk whose decay spans ~120 nats still takes the cumulative-sum path in float32 (the bound is 150), where
    e^{\pm 60} factors are fine but their squares are not: the backward must not form them (a form dividing by
    e^{c_t - m} did, and trained Mamba to NaN)."""
    L, Ch, N = 64, 4, 16
    delta = torch.full((2, L, Ch), 0.13, requires_grad=True)
    A = -0.9 * torch.arange(1, N + 1, dtype=torch.float32).repeat(Ch, 1)
    g = torch.Generator().manual_seed(0)
    u, B, C = (torch.randn(*shape, generator=g) for shape in ((2, L, Ch), (2, L, N), (2, L, N)))
    span = float((delta.detach().sum(1)[..., None] * -A).amax())
    assert 88 < span < selective._CUMSUM_RANGE[torch.float32]  # e^{span} overflows float32, e^{span / 2} does not
    selective_scan_chunked(u, delta, A, B, C, chunk_size=L).sum().backward()
    assert torch.isfinite(delta.grad).all()


def test_float32_chunks_switch_to_the_scan_when_exp_would_overflow():
    """In float32 a chunk whose decay spans more than ~150 nats is scanned, not summed: finite, and close to fp64."""
    args = inputs(1, 64, 2, 3, 4, scale=20.0)
    want = naive_selective(*args)
    single = [a.float() if a is not None else None for a in args]
    y = selective_scan_chunked(*single, chunk_size=64)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), want, rtol=1e-4, atol=1e-4)
    calm = [a.float() for a in inputs(1, 64, 2, 3, 4)[:-1]]  # small decays: the cumulative-sum path, fp32 accuracy
    torch.testing.assert_close(selective_scan_chunked(*calm, chunk_size=16).double(),
                               naive_selective(*(a.double() for a in calm), None), rtol=1e-4, atol=1e-4)


def test_lti_special_case_is_the_s4d_convolution():
    """Constant delta, B, C: the selective scan is the convolution with s4d_kernel (B rescaled ZOH -> Euler)."""
    Ch, N, L = 2, 4, 30
    A = s4d_init(N, channels=Ch)
    g = torch.Generator().manual_seed(4)
    Bc, Cc = torch.randn(N, dtype=torch.complex128, generator=g), torch.randn(N, dtype=torch.complex128, generator=g)
    dt = torch.tensor([0.05, 0.2], dtype=torch.float64)
    u = torch.randn(1, L, Ch, dtype=torch.float64, generator=g)
    y = selective_scan_chunked(u, dt.expand(1, L, Ch), A, Bc.expand(1, L, N), Cc.expand(1, L, N), chunk_size=8)
    A_bar = torch.exp(dt[:, None] * A)
    B_zoh = dt[:, None] * Bc * A / (A_bar - 1)  # (A_bar - 1)/A * B_zoh = dt * B
    K = s4d_kernel(A, B_zoh, Cc.expand(Ch, N), dt, L)
    torch.testing.assert_close(y, fft_conv(u.transpose(1, 2), K).transpose(1, 2), rtol=0, atol=1e-10)


def test_parallel_scan_counts_log_depth():
    counter = ScanCounter()
    selective_scan_parallel(*inputs(1, 64, 2, 2, 5), counter=counter)
    assert counter.depth == 2 * 6 - 1 and counter.work == 2 * 64 - 2 - 6


def test_gradcheck_through_every_form():
    u, delta, A, B, C, D = inputs(1, 7, 2, 3, 6)
    for x in (u, delta, A, B, C, D):
        x.requires_grad_()
    for fn in (selective_scan_recurrent, selective_scan_parallel,
               lambda *a: selective_scan_chunked(*a, chunk_size=3)):
        assert torch.autograd.gradcheck(fn, (u, delta, A, B, C, D))
    # the chunked form's written-out backward, through a given state and the returned last state too
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: selective_scan_chunked(*a[:-1], chunk_size=3, state=a[-1], return_state=True), (u, delta, A, B, C, D, h0))


# ----------------------------------------------------------------------------- SSD (scalar decay per head)

def ssd_inputs(Bt, L, H, N, P, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, dtype=torch.float64, generator=g)  # noqa: E731
    return r(Bt, L, H, P), -torch.rand(Bt, L, H, dtype=torch.float64, generator=g), r(Bt, L, H, N), r(Bt, L, H, N)


def naive_decayed_attention(x, log_a, B, C):
    """y_t = sum_{s<=t} (C_t . B_s) prod_{r=s+1..t} a_r x_s: masked linear attention with q=C, k=B, v=x."""
    Bt, L, H, P = x.shape
    y = torch.zeros_like(x)
    for t in range(L):
        for s in range(t + 1):
            gate = torch.exp(log_a[:, s + 1:t + 1].sum(1))  # (Bt, H)
            y[:, t] += ((C[:, t] * B[:, s]).sum(-1) * gate)[..., None] * x[:, s]
    return y


@settings(max_examples=20, deadline=None)
@given(L=st.integers(1, 30), chunk=st.integers(1, 40), seed=st.integers(0, 9999))
def test_ssd_forms_equal_masked_linear_attention(L, chunk, seed):
    x, log_a, B, C = ssd_inputs(2, L, 3, 4, 2, seed)
    want = naive_decayed_attention(x, log_a, B, C)
    torch.testing.assert_close(ssd_recurrent(x, log_a, B, C), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(ssd_chunked(x, log_a, B, C, chunk_size=chunk), want, rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.einsum("bhts,bshp->bthp", ssd_matrix(log_a, B, C), x), want, rtol=0, atol=1e-10)


def test_ssd_carried_state_and_equivalence_with_a_scalar_mamba():
    x, log_a, B, C = ssd_inputs(2, 19, 3, 4, 2, 7)
    whole, S = ssd_chunked(x, log_a, B, C, chunk_size=5, return_state=True)
    y1, S1 = ssd_chunked(x[:, :7], log_a[:, :7], B[:, :7], C[:, :7], chunk_size=5, return_state=True)
    y2, S2 = ssd_recurrent(x[:, 7:], log_a[:, 7:], B[:, 7:], C[:, 7:], state=S1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(S2, S, rtol=0, atol=1e-12)
    # Mamba-1 with A[c, n] = a_c (one decay per channel) is SSD with a head per channel, P = 1, shared B, C
    u, delta, A, Bm, Cm, _ = inputs(1, 15, 3, 4, 8, D=False)
    A = A[:, :1].expand(3, 4)
    y = selective_scan_chunked(u, delta, A, Bm, Cm, chunk_size=4)
    y_ssd = ssd_chunked((delta * u)[..., None], delta * A[:, 0], Bm[:, :, None].expand(1, 15, 3, 4),
                        Cm[:, :, None].expand(1, 15, 3, 4), chunk_size=6)
    torch.testing.assert_close(y, y_ssd[..., 0], rtol=0, atol=1e-12)


def test_ssd_gradcheck():
    args = [t.requires_grad_() for t in ssd_inputs(1, 6, 2, 3, 2, 9)]
    assert torch.autograd.gradcheck(lambda *a: ssd_chunked(*a, chunk_size=4), args)


def test_bad_shapes():
    u, delta, A, B, C, D = inputs(2, 5, 3, 4, 0)
    with pytest.raises(ValueError, match="delta must have the shape of u"):
        selective_scan_recurrent(u, delta[:, :4], A, B, C)
    with pytest.raises(ValueError, match=r"A must be \(C, N\) with C = 3"):
        selective_scan_parallel(u, delta, A[:2], B, C)
    with pytest.raises(ValueError, match=r"B must be \(Bt, L, N\) = \(2, 5, 4\)"):
        selective_scan_chunked(u, delta, A, B[..., :3], C)
    with pytest.raises(ValueError, match=r"D must be \(C,\)"):
        selective_scan_chunked(u, delta, A, B, C, D[:2])
    with pytest.raises(ValueError, match=r"state must be \(Bt, C, N\)"):
        selective_scan_chunked(u, delta, A, B, C, state=torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        selective_scan_chunked(u, delta, A, B, C, chunk_size=0)
    with pytest.raises(ValueError, match="u must have 3 dimensions"):
        selective_scan_recurrent(u[0], delta, A, B, C)
    x, log_a, Bs, Cs = ssd_inputs(1, 5, 2, 3, 2, 0)
    with pytest.raises(ValueError, match=r"log_a must be \(Bt, L, H\)"):
        ssd_chunked(x, log_a[..., :1], Bs, Cs)
    with pytest.raises(ValueError, match=r"C must be \(Bt, L, H, N\)"):
        ssd_recurrent(x, log_a, Bs, Cs[..., :2])


def test_ssd_is_gated_linear_attention_of_chapter_04():
    """The SSD duality checked against minilib.linear_attention: q = C, k = B, v = x, per-step decay a_t."""
    from minilib.linear_attention import linear_attention_chunked, linear_attention_parallel

    x, log_a, B, C = ssd_inputs(2, 21, 3, 4, 5, 11)
    heads = lambda t: t.transpose(1, 2)  # noqa: E731  (Bt, L, H, .) -> (Bt, H, L, .)
    gates = torch.exp(log_a).transpose(1, 2)
    attention = linear_attention_parallel(heads(C), heads(B), heads(x), decay=gates)
    torch.testing.assert_close(heads(ssd_chunked(x, log_a, B, C, chunk_size=8)), attention, rtol=0, atol=1e-10)
    torch.testing.assert_close(heads(ssd_recurrent(x, log_a, B, C)),
                               linear_attention_chunked(heads(C), heads(B), heads(x), decay=gates, chunk_size=5),
                               rtol=0, atol=1e-10)
