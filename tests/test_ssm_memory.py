"""minilib.ssm.memory: the Omega rule against the delta rule (c = 1) and a from-scratch window loss; recall vs window;
the chunk-parallel form against the token loop."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.ssm import GatedMemory, omega_memory, omega_memory_chunked


def data(B, L, dk, dv, seed):
    g = torch.Generator().manual_seed(seed)
    k = torch.nn.functional.normalize(torch.randn(B, L, dk, dtype=torch.float64, generator=g), dim=-1)
    return k, torch.randn(B, L, dv, dtype=torch.float64, generator=g), torch.randn(B, L, dk, dtype=torch.float64, generator=g)


def test_window_one_is_the_delta_rule():
    k, v, q = data(2, 11, 5, 3, 0)
    M, want = torch.zeros(2, 3, 5, dtype=torch.float64), []
    for t in range(11):
        kt, vt = k[:, t], v[:, t]
        M = M @ (torch.eye(5, dtype=torch.float64) - 0.4 * kt[:, :, None] * kt[:, None, :]) + 0.4 * vt[:, :, None] * kt[:, None, :]
        want.append((M @ q[:, t, :, None])[..., 0])
    torch.testing.assert_close(omega_memory(k, v, q, window=1, lr=0.4), torch.stack(want, 1), rtol=0, atol=1e-12)


def test_each_step_is_a_gradient_step_on_the_window_loss():
    k, v, q = data(1, 9, 4, 2, 1)
    _, M_prev = omega_memory(k[:, :6], v[:, :6], q[:, :6], window=3, lr=0.2, return_state=True)
    M0 = M_prev.clone().requires_grad_()
    loss = 0.5 * ((torch.einsum("bvk,bck->bcv", M0, k[:, 4:7]) - v[:, 4:7]) ** 2).sum()
    (grad,) = torch.autograd.grad(loss, M0)
    _, M_next = omega_memory(k[:, 6:7], v[:, 6:7], q[:, 6:7], window=1, lr=0.2, state=M_prev, return_state=True)
    _, M_full = omega_memory(k[:, :7], v[:, :7], q[:, :7], window=3, lr=0.2, return_state=True)
    torch.testing.assert_close(M_full, M_prev - 0.2 * grad, rtol=0, atol=1e-12)
    assert (M_full - M_next).abs().max() > 1e-6  # the window matters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_window_of_eight_recalls_more_pairs_than_online_updates(seed):
    """ATLAS toy: 24 pairs in a 16x16 memory (over capacity); recall = nearest stored value to M k_i."""
    def recall(window):
        k, v, _ = data(1, 24, 16, 16, seed)
        _, M = omega_memory(k, v, k, window=window, lr=0.3, return_state=True)
        pred = torch.einsum("bvk,bnk->bnv", M, k)[0]
        return (torch.cdist(pred, v[0]).argmin(-1) == torch.arange(24)).float().mean().item()

    assert recall(8) >= recall(1) + 0.2


def test_bad_input():
    k, v, q = data(1, 4, 3, 2, 0)
    with pytest.raises(ValueError, match="window must be a positive int"):
        omega_memory(k, v, q, window=0)
    with pytest.raises(ValueError, match="k and q must be"):
        omega_memory(k, v, q[:, :3])


def test_gated_memory_reads_and_writes_as_written_out():
    torch.manual_seed(0)
    gm = GatedMemory(6, 3).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    M = torch.randn(2, 3, 6, dtype=torch.float64)
    y, M_new = gm(x, M)
    sig = lambda z: 1 / (1 + torch.exp(-z))  # noqa: E731
    for b in range(2):
        Xb, Mb = x[b], M[b]
        for t in range(5):  # read: token t attends to the slots
            w = torch.exp(gm.read_q.weight @ Xb[t] @ (Mb @ gm.read_k.weight.T).T / 6 ** 0.5)
            e = (w / w.sum()) @ (Mb @ gm.read_v.weight.T)
            torch.testing.assert_close(y[b, t], Xb[t] + sig(gm.out_gate.weight @ e) * e)
        for n in range(3):  # write: slot n attends to the tokens
            w = torch.exp((Xb @ gm.write_k.weight.T) @ (gm.write_q.weight @ Mb[n]) / 6 ** 0.5)
            u = (w / w.sum()) @ (Xb @ gm.write_v.weight.T)
            want = (sig(gm.in_gate.weight @ u + gm.in_gate.bias) * torch.tanh(u)
                    + sig(gm.forget_gate.weight @ u + gm.forget_gate.bias) * Mb[n])
            torch.testing.assert_close(M_new[b, n], want)


def test_gated_memory_carries_information_across_segments_and_gradients_flow():
    torch.manual_seed(1)
    gm = GatedMemory(4, 2).double()
    first, second = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True), torch.randn(1, 3, 4, dtype=torch.float64)
    _, M = gm(first)
    y, _ = gm(second, M)
    y.sum().backward()
    assert first.grad.abs().max() > 0  # the second segment's output depends on the first through the memory
    assert gm.initial.grad.abs().max() > 0


def test_gated_memory_bad_input():
    gm = GatedMemory(4, 2)
    with pytest.raises(ValueError, match="x must end in d_model"):
        gm(torch.randn(1, 3, 5))
    with pytest.raises(ValueError, match="memory must be"):
        gm(torch.randn(1, 3, 4), torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="n_slots"):
        GatedMemory(4, 0)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 2), L=st.integers(1, 23), dk=st.integers(1, 5), dv=st.integers(1, 4),
       window=st.integers(1, 6), chunk=st.integers(1, 9), seed=st.integers(0, 99))
def test_chunk_parallel_form_equals_the_token_loop(B, L, dk, dv, window, chunk, seed):
    """Any L (1, not a multiple of the chunk, shorter than the chunk or the window), against the loop, fp64."""
    k, v, q = data(B, L, dk, dv, seed)
    M0 = torch.randn(B, dv, dk, dtype=torch.float64)
    y_ref, M_ref = omega_memory(k, v, q, window=window, lr=0.3, state=M0, return_state=True)
    y, M = omega_memory_chunked(k, v, q, window=window, lr=0.3, chunk_size=chunk, state=M0, return_state=True)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(M, M_ref, rtol=0, atol=1e-10)


def test_chunked_state_carried_between_calls_equals_one_pass():
    """With window 1 (a wider window restarts at a call boundary in both forms) a split run equals one pass."""
    k, v, q = data(1, 17, 4, 3, 5)
    y1, M1 = omega_memory_chunked(k[:, :7], v[:, :7], q[:, :7], window=1, lr=0.3, chunk_size=3, return_state=True)
    y2, M2 = omega_memory_chunked(k[:, 7:], v[:, 7:], q[:, 7:], window=1, lr=0.3, chunk_size=3, state=M1,
                                  return_state=True)
    y_one, M_one = omega_memory(k, v, q, window=1, lr=0.3, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_one, rtol=0, atol=1e-12)
    torch.testing.assert_close(M2, M_one, rtol=0, atol=1e-12)


def test_chunked_gradients_match_the_loop():
    k, v, q = (x.requires_grad_() for x in data(1, 9, 3, 2, 7))
    g_ref = torch.autograd.grad(omega_memory(k, v, q, window=3, lr=0.3).square().sum(), (k, v, q))
    g = torch.autograd.grad(omega_memory_chunked(k, v, q, window=3, lr=0.3, chunk_size=4).square().sum(), (k, v, q))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_chunked_bad_input():
    k, v, q = data(1, 4, 3, 2, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        omega_memory_chunked(k, v, q, chunk_size=0)
    with pytest.raises(ValueError, match="state must be"):
        omega_memory_chunked(k, v, q, state=torch.zeros(1, 3, 3, dtype=torch.float64))
