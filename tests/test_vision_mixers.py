"""minilib.vision.mixers against loops over groups, heads and grid cells written from the weights."""
import math

import pytest
import torch

from minilib.vision import (CascadedGroupAttention, ChannelAttention, ConvAttention, ManhattanAttention,
                            SingleHeadAttention, axial_decay_attention, channel_attention, head_similarity,
                            manhattan_decay)


def softmax_attention(q, k, v):
    """One head, (N, D) each, by the formula."""
    return torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1) @ v


def test_channel_attention_equals_per_group_loop():
    torch.manual_seed(0)
    B, N, C, G = 2, 7, 12, 3
    q, k, v = (torch.randn(B, N, C, dtype=torch.float64) for _ in range(3))
    want = torch.zeros(B, N, C, dtype=torch.float64)
    cg = C // G
    for b in range(B):
        for g in range(G):
            sl = slice(g * cg, (g + 1) * cg)
            a = torch.softmax(q[b, :, sl].T @ k[b, :, sl] / math.sqrt(cg), dim=-1)  # (C_g, C_g): channels attend
            want[b, :, sl] = (a @ v[b, :, sl].T).T
    torch.testing.assert_close(channel_attention(q, k, v, G), want, rtol=1e-12, atol=1e-12)


def test_one_channel_attention_layer_sees_every_pixel():
    torch.manual_seed(0)
    layer = ChannelAttention(8, 2)
    x = torch.randn(1, 16, 8, requires_grad=True)
    for n in range(16):
        (grad,) = torch.autograd.grad(layer(x)[0, n].sum(), x)
        assert (grad[0].abs().sum(-1) > 0).all()


def test_cascaded_group_attention_equals_head_loop():
    torch.manual_seed(0)
    d, H = 12, 3
    layer = CascadedGroupAttention(d, H).double()
    x = torch.randn(2, 5, d, dtype=torch.float64)
    outs = []
    for b in range(2):
        prev, heads = torch.zeros(5, d // H, dtype=torch.float64), []
        for h in range(H):
            inp = x[b, :, h * 4:(h + 1) * 4] + (prev if h else 0)
            w, c = layer.qkv[h].weight, layer.qkv[h].bias
            q, k, v = inp @ w[:4].T + c[:4], inp @ w[4:8].T + c[4:8], inp @ w[8:].T + c[8:]
            prev = softmax_attention(q, k, v)
            heads.append(prev)
        outs.append(torch.cat(heads, -1) @ layer.out.weight.T + layer.out.bias)
    torch.testing.assert_close(layer(x), torch.stack(outs), rtol=1e-12, atol=1e-12)
    assert layer.attention_maps(x).shape == (2, H, 5, 5)
    qkv_params = sum(p.numel() for p in layer.qkv.parameters() if p.ndim == 2)
    assert qkv_params * H == 3 * d * d  # Q/K/V projections H times smaller than multi-head attention's


def test_single_head_attention_passes_the_rest_through():
    torch.manual_seed(0)
    layer = SingleHeadAttention(16, partial=0.25, qk_dim=3).double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    w, c = layer.qkv.weight, layer.qkv.bias
    xa = x[..., :4]
    q, k, v = xa @ w[:3].T + c[:3], xa @ w[3:6].T + c[3:6], xa @ w[6:].T + c[6:]
    att = torch.stack([torch.softmax(q[b] @ k[b].T / math.sqrt(3), -1) @ v[b] for b in range(2)])
    want = torch.cat([att, x[..., 4:]], -1) @ layer.out.weight.T + layer.out.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)
    assert layer.d_att == 4
    with pytest.raises(ValueError, match="partial"):
        SingleHeadAttention(3, partial=0.1)


def test_conv_attention_equals_conv2d_then_attention():
    torch.manual_seed(0)
    d, H = 8, 2
    layer = ConvAttention(d, H, grid=(3, 4), kv_stride=2).double()
    x = torch.randn(2, 12, d, dtype=torch.float64)
    img = x.transpose(1, 2).reshape(2, d, 3, 4)
    qkv = []
    for conv, proj, s in zip(layer.convs, layer.proj, (1, 2, 2)):
        y = torch.nn.functional.conv2d(img, conv.weight, stride=s, padding=1, groups=d).flatten(2).transpose(1, 2)
        qkv.append(y @ proj.weight.T + proj.bias)
    q, k, v = qkv
    assert k.shape[1] == 2 * 2  # keys subsampled by kv_stride
    heads = [torch.stack([softmax_attention(q[b, :, h * 4:(h + 1) * 4], k[b, :, h * 4:(h + 1) * 4], v[b, :, h * 4:(h + 1) * 4])
                          for b in range(2)]) for h in range(H)]
    want = torch.cat(heads, -1) @ layer.out.weight.T + layer.out.bias
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_manhattan_decay_by_loop():
    g = torch.tensor([0.5, 0.9], dtype=torch.float64)
    d = manhattan_decay((3, 4), g)
    for n in range(12):
        for m in range(12):
            dist = abs(n // 4 - m // 4) + abs(n % 4 - m % 4)
            torch.testing.assert_close(d[:, n, m], g ** dist)


def test_manhattan_attention_multiplies_softmax_by_decay():
    torch.manual_seed(0)
    layer = ManhattanAttention(8, 2, grid=(2, 3), gammas=torch.tensor([0.5, 0.8])).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    q, k, v = (x @ w.T + c for w, c in zip(layer.qkv.weight.chunk(3), layer.qkv.bias.chunk(3)))
    heads = []
    for h, gamma in enumerate((0.5, 0.8)):
        sl = slice(4 * h, 4 * h + 4)
        a = torch.softmax(q[0, :, sl] @ k[0, :, sl].T / 2, -1)
        dist = torch.tensor([[abs(n // 3 - m // 3) + abs(n % 3 - m % 3) for m in range(6)] for n in range(6)])
        heads.append((a * gamma ** dist) @ v[0, :, sl])
    want = torch.cat(heads, -1) @ layer.out.weight.T + layer.out.bias
    torch.testing.assert_close(layer(x)[0], want, rtol=1e-12, atol=1e-12)
    plain = ManhattanAttention(8, 2, grid=(2, 3), decay=False)
    assert (plain.decay == 1).all()


def test_axial_decay_attention_equals_column_then_row_loop():
    torch.manual_seed(0)
    Hg, Wg, D = 3, 4, 2
    q, k, v = (torch.randn(1, 1, Hg * Wg, D, dtype=torch.float64) for _ in range(3))
    gamma = 0.7
    grid = lambda t: t[0, 0].reshape(Hg, Wg, D)  # noqa: E731
    qg, kg, vg = grid(q), grid(k), grid(v)
    mid = torch.zeros(Hg, Wg, D, dtype=torch.float64)
    for x in range(Wg):
        a = torch.softmax(qg[:, x] @ kg[:, x].T / math.sqrt(D), -1)
        dist = (torch.arange(Hg)[:, None] - torch.arange(Hg)[None]).abs().double()
        mid[:, x] = (a * gamma ** dist) @ vg[:, x]
    out = torch.zeros(Hg, Wg, D, dtype=torch.float64)
    for y in range(Hg):
        a = torch.softmax(qg[y] @ kg[y].T / math.sqrt(D), -1)
        dist = (torch.arange(Wg)[:, None] - torch.arange(Wg)[None]).abs().double()
        out[y] = (a * gamma ** dist) @ mid[y]
    got = axial_decay_attention(q, k, v, grid=(Hg, Wg), gammas=torch.tensor([gamma], dtype=torch.float64))
    torch.testing.assert_close(got[0, 0], out.reshape(-1, D), rtol=1e-12, atol=1e-12)


def test_head_similarity_of_identical_and_disjoint_maps():
    a = torch.softmax(torch.randn(2, 1, 4, 4), -1)
    assert head_similarity(a.repeat(1, 3, 1, 1)).item() == pytest.approx(1.0)
    eye = torch.eye(4)[None, None]
    shifted = torch.roll(torch.eye(4), 1, dims=1)[None, None]
    assert head_similarity(torch.cat([eye, shifted], 1)).item() == 0.0
