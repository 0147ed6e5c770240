"""Linformer and flow attention against their quadratic forms written out."""
import pytest
import torch
import torch.nn.functional as F

from minilib.linear_attention import flow_attention, linformer_attention


def qkv(T=9, L=11, D=4, Dv=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 3, T, D, generator=g, dtype=torch.float64),
            torch.randn(2, 3, L, D, generator=g, dtype=torch.float64),
            torch.randn(2, 3, L, Dv, generator=g, dtype=torch.float64))


def test_linformer_is_attention_over_projected_keys_and_values():
    q, k, v = qkv()
    g = torch.Generator().manual_seed(1)
    E, Fp = (torch.randn(5, 11, generator=g, dtype=torch.float64) / 11 ** 0.5 for _ in range(2))
    want = F.scaled_dot_product_attention(q, torch.einsum("kl,bhld->bhkd", E, k), torch.einsum("kl,bhld->bhkd", Fp, v))
    torch.testing.assert_close(linformer_attention(q, k, v, E, Fp), want, rtol=0, atol=1e-12)


def test_linformer_with_identity_projections_is_full_attention():
    q, k, v = qkv()
    eye = torch.eye(11, dtype=torch.float64)
    torch.testing.assert_close(linformer_attention(q, k, v, eye, eye, scale=0.7),
                               F.scaled_dot_product_attention(q, k, v, scale=0.7), rtol=0, atol=1e-12)


def test_linformer_bad_projections_raise():
    q, k, v = qkv()
    E = torch.randn(5, 11, dtype=torch.float64)
    with pytest.raises(ValueError, match="E"):
        linformer_attention(q, k, v, E[:, :10], E)
    with pytest.raises(ValueError, match="F"):
        linformer_attention(q, k, v, E, E[:4])
    with pytest.raises(ValueError, match="k"):
        linformer_attention(q, k[..., :3], v, E, E)


def flow_reference(q, k, v):
    """Flow attention with the (T, L) flow matrix A_ij = sigmoid(q_i) . sigmoid(k_j) written out."""
    A = torch.sigmoid(q) @ torch.sigmoid(k).transpose(-1, -2)
    T, L = A.shape[-2:]
    incoming, outgoing = A.sum(-1), A.sum(-2)
    conserved_sink = (A / outgoing[..., None, :]).sum(-1)
    conserved_source = (A / incoming[..., :, None]).sum(-2)
    competition = L * torch.softmax(conserved_source, dim=-1)
    allocation = torch.sigmoid(conserved_sink * T / L)
    return allocation[..., None] * ((A / incoming[..., None]) @ (competition[..., None] * v)), A, incoming, outgoing


def test_flow_attention_equals_its_quadratic_form_and_conserves_flow():
    q, k, v = qkv()
    out, flows = flow_attention(q, k, v, return_flows=True)
    want, A, incoming, outgoing = flow_reference(q, k, v)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(flows["incoming"], incoming, rtol=0, atol=1e-12)
    torch.testing.assert_close(flows["outgoing"], outgoing, rtol=0, atol=1e-12)
    # sink-incoming / source-outgoing conservation: normalised flows sum to one per sink and per source
    ones_t, ones_l = torch.ones_like(incoming), torch.ones_like(outgoing)
    torch.testing.assert_close((A / flows["incoming"][..., None]).sum(-1), ones_t, rtol=0, atol=1e-6)
    torch.testing.assert_close((A / flows["outgoing"][..., None, :]).sum(-2), ones_l, rtol=0, atol=1e-6)
    torch.testing.assert_close(flows["competition"].sum(-1), torch.full_like(incoming[..., 0], 11.0), rtol=0, atol=1e-9)
    assert bool(((flows["allocation"] > 0) & (flows["allocation"] < 1)).all())


def test_flow_attention_bad_shapes_raise():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="v"):
        flow_attention(q, k, v[:, :, :5])


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("L", [1, 2, 7, 33])
def test_kernelized_rpe_fft_equals_the_explicit_toeplitz_form(per_head, normalize, L):
    from minilib.linear_attention import kernelized_rpe_fft
    from minilib.positional import toeplitz_matrix

    g = torch.Generator().manual_seed(L)
    q, k = (torch.rand(2, 3, L, 4, generator=g, dtype=torch.float64) for _ in range(2))  # positive features
    v = torch.randn(2, 3, L, 2, generator=g, dtype=torch.float64)
    rpe = torch.rand(3, 2 * L - 1, generator=g, dtype=torch.float64) + 0.1 if per_head else \
        torch.rand(2 * L - 1, generator=g, dtype=torch.float64) + 0.1
    A = (q @ k.transpose(-1, -2)) * toeplitz_matrix(rpe, L)
    want = (A @ v) / A.sum(-1, keepdim=True) if normalize else A @ v
    torch.testing.assert_close(kernelized_rpe_fft(q, k, v, rpe, normalize=normalize), want, rtol=1e-10, atol=1e-10)


def test_kernelized_rpe_fft_bad_rpe_raises():
    from minilib.linear_attention import kernelized_rpe_fft

    q = torch.rand(1, 2, 5, 3)
    with pytest.raises(ValueError, match="rpe"):
        kernelized_rpe_fft(q, q, q, torch.rand(8))
    with pytest.raises(ValueError, match="rpe"):
        kernelized_rpe_fft(q, q, q, torch.rand(3, 9))


def test_simplified_linear_attention_written_out():
    from minilib.linear_attention import simplified_linear_attention

    q, k, v = qkv(T=11, L=11)
    w = torch.randn(3, 3, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    A = torch.relu(q) @ torch.relu(k).transpose(-1, -2)
    want = (A @ v) / (A.sum(-1, keepdim=True) + 1e-6)
    for i in range(11):  # the depthwise convolution as a loop over taps u = -2..2, zero outside the sequence
        for u in range(-2, 3):
            if 0 <= i + u < 11:
                want[:, :, i] += w[:, :, u + 2] * v[:, :, i + u]
    torch.testing.assert_close(simplified_linear_attention(q, k, v, w), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="conv_weight"):
        simplified_linear_attention(q, k, v, w[..., :4])


@pytest.mark.parametrize("normalize", [False, True])
def test_noncausal_linear_attention_is_the_kernel_matrix_product(normalize):
    from minilib.linear_attention import linear_attention_noncausal

    q, k, v = qkv()
    q, k = torch.relu(q) + 0.1, torch.relu(k) + 0.1
    A = q @ k.transpose(-1, -2)
    want = (A @ v) / A.sum(-1, keepdim=True) if normalize else A @ v
    torch.testing.assert_close(linear_attention_noncausal(q, k, v, normalize=normalize), want, rtol=0, atol=1e-12)
