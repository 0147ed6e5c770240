"""minilib.ssm.memory: the Omega rule against the delta rule (c = 1) and a from-scratch window loss; recall vs window."""
import pytest
import torch

from minilib.ssm import omega_memory


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
