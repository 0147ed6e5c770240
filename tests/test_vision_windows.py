"""minilib.vision.windows: Swin's windows against dense attention with a mask built by a naive loop."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilib.attention import sdpa
from minilib.sparse import mask_flops
from minilib.vision import (EncoderBlock, PatchMerging, WindowAttention, patch_merging, relative_position_index,
                            shifted_window_mask, window_attention, window_attention_flops, window_partition,
                            window_reverse)


def explicit_swin_mask(H: int, W: int, w: int, s: int) -> torch.Tensor:
    """(HW, HW): token (y, x) may attend to (y', x') when both fall in one window of the grid rolled by -s and the
    roll did not wrap between them (their offset is the same before and after the roll)."""
    keep = torch.zeros(H * W, H * W, dtype=torch.bool)
    for y in range(H):
        for x in range(W):
            for y2 in range(H):
                for x2 in range(W):
                    ry, rx, ry2, rx2 = (y - s) % H, (x - s) % W, (y2 - s) % H, (x2 - s) % W
                    same_window = ry // w == ry2 // w and rx // w == rx2 // w
                    no_wrap = ry - ry2 == y - y2 and rx - rx2 == x - x2
                    keep[y * W + x, y2 * W + x2] = same_window and no_wrap
    return keep


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 2, 3, 4]), st.data())
def test_window_attention_equals_sdpa_with_explicit_mask(nh, nw, w, data):
    H, W = nh * w, nw * w
    s = data.draw(st.integers(0, w - 1))
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, H * W, 4, dtype=torch.float64) for _ in range(3))
    want = sdpa(q, k, v, mask=explicit_swin_mask(H, W, w, s))
    torch.testing.assert_close(window_attention(q, k, v, grid=(H, W), window=w, shift=s), want, rtol=1e-10, atol=1e-10)


def test_window_attention_with_bias_equals_sdpa_with_scattered_bias():
    H, W, w, s = 4, 6, 2, 1
    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, H * W, 3, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(2, w * w, w * w, dtype=torch.float64)
    full = torch.zeros(2, H * W, H * W, dtype=torch.float64)
    for n in range(H * W):  # the bias entry of a pair is indexed by the two tokens' places in their rolled window
        for m in range(H * W):
            (y, x), (y2, x2) = divmod(n, W), divmod(m, W)
            a = ((y - s) % H % w) * w + (x - s) % W % w
            b = ((y2 - s) % H % w) * w + (x2 - s) % W % w
            full[:, n, m] = bias[:, a, b]
    want = sdpa(q, k, v, mask=explicit_swin_mask(H, W, w, s), bias=full)
    torch.testing.assert_close(window_attention(q, k, v, grid=(H, W), window=w, shift=s, bias=bias), want)


def test_partition_reverse_round_trip_and_order():
    x = torch.arange(2 * 4 * 6 * 3, dtype=torch.float32).reshape(2, 4, 6, 3)
    win = window_partition(x, 2)
    assert win.shape == (2, 6, 4, 3)
    torch.testing.assert_close(win[:, 1], x[:, 0:2, 2:4].reshape(2, 4, 3), rtol=0, atol=0)  # second window, row by row
    torch.testing.assert_close(window_reverse(win, 2, (4, 6)), x, rtol=0, atol=0)


def test_shift_zero_keeps_everything_and_mask_is_swin_regions():
    assert shifted_window_mask((4, 4), 2, 0).all()
    m = shifted_window_mask((4, 4), 2, 1)
    assert m.shape == (4, 4, 4)
    assert m[0].all()  # the first window of the rolled grid holds image neighbours only
    assert m[3].sum() == 4  # the corner window: four pieces wrapped from four corners, each alone
    with pytest.raises(ValueError, match="shift"):
        shifted_window_mask((4, 4), 2, 2)
    with pytest.raises(ValueError, match="window"):
        shifted_window_mask((4, 6), 4, 1)


def test_relative_position_index_is_offset():
    idx = relative_position_index(3)
    for n in range(9):
        for m in range(9):
            dy, dx = n // 3 - m // 3, n % 3 - m % 3
            assert idx[n, m] == (dy + 2) * 5 + dx + 2


@pytest.mark.parametrize("side", [8, 16, 32])
def test_window_flops_are_counted_from_the_mask_and_linear(side):
    d, w = 16, 4
    keep = explicit_swin_mask(side, side, w, 0) if side <= 16 else None
    if keep is not None:
        assert window_attention_flops((side, side), w, d) == mask_flops(keep, d)
        assert window_attention_flops((side, side), None, d) == mask_flops(torch.ones_like(keep), d)
    assert window_attention_flops((side, side), w, d) == window_attention_flops((8, 8), w, d) * (side // 8) ** 2
    assert window_attention_flops((side, side), None, d) == window_attention_flops((8, 8), None, d) * (side // 8) ** 4


def test_two_swin_blocks_cross_window_borders_except_in_the_corners():
    """After a window block and a shifted-window block an output depends on pixels outside its own window, except
    for the four 2x2 image corners: their shifted window is made of wrapped pieces that the mask keeps apart."""
    torch.manual_seed(0)
    H = W = 8
    w = 4
    blocks = torch.nn.Sequential(*(EncoderBlock(8, 2, d_ff=16, mixer=WindowAttention(8, 2, grid=(H, W), window=w,
                                                                                   shift=s)) for s in (0, 2)))
    x = torch.randn(1, H * W, 8, requires_grad=True)
    confined = set()
    for n in range(H * W):
        (grad,) = torch.autograd.grad(blocks(x)[0, n].sum(), x)
        y, xx = divmod(n, W)
        outside = [m for m in range(H * W) if (m // W) // w != y // w or (m % W) // w != xx // w]
        if not (grad[0, outside].abs().sum(-1) > 0).any():
            confined.add((y, xx))
    corners = {(y, x) for y in (0, 1, 6, 7) for x in (0, 1, 6, 7)}
    assert confined == corners
    one = EncoderBlock(8, 2, d_ff=16, mixer=WindowAttention(8, 2, grid=(H, W), window=w))
    (grad,) = torch.autograd.grad(one(x)[0, 0].sum(), x)
    assert (grad[0].abs().sum(-1) > 0).sum() == w * w  # one unshifted block stays in its window


def test_patch_merging_concatenates_2x2_neighbours():
    x = torch.randn(2, 4 * 6, 3)
    g = x.reshape(2, 4, 6, 3)
    out = patch_merging(x, (4, 6))
    assert out.shape == (2, 6, 12)
    for i in range(2):
        for j in range(3):
            want = torch.cat([g[:, 2 * i, 2 * j], g[:, 2 * i + 1, 2 * j], g[:, 2 * i, 2 * j + 1], g[:, 2 * i + 1, 2 * j + 1]], -1)
            torch.testing.assert_close(out[:, i * 3 + j], want, rtol=0, atol=0)
    assert PatchMerging(3, (4, 6))(x).shape == (2, 6, 6)
    with pytest.raises(ValueError, match="window"):
        patch_merging(torch.randn(1, 15, 3), (3, 5))


def test_bad_input_names_sizes():
    with pytest.raises(ValueError, match="window"):
        WindowAttention(8, 2, grid=(6, 6), window=4)
    with pytest.raises(ValueError, match="tokens"):
        WindowAttention(8, 2, grid=(4, 4), window=2)(torch.randn(1, 15, 8))
    with pytest.raises(ValueError, match="H\\*W"):
        window_attention(*(torch.randn(1, 1, 15, 2) for _ in range(3)), grid=(4, 4), window=2)
    with pytest.raises(TypeError, match="grid"):
        shifted_window_mask(4, 2, 0)
