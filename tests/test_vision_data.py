"""minilib.vision.data: upsampled digits (against a loop over the bilinear formula) and random-shift augmentation."""
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from minilib.data import digits_split
from minilib.vision import RandomShift, digits_images, random_shift, upsample


def bilinear_loop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Half-pixel-centre bilinear resize, one output pixel at a time (fp64)."""
    H, W = image.shape
    out = torch.zeros(size, size, dtype=torch.float64)

    def taps(i, n_in):
        u = min(max((i + 0.5) * n_in / size - 0.5, 0.0), n_in - 1)
        lo = int(u)
        hi = min(lo + 1, n_in - 1)
        return lo, hi, u - lo

    for i in range(size):
        y0, y1, fy = taps(i, H)
        for j in range(size):
            x0, x1, fx = taps(j, W)
            out[i, j] = ((1 - fy) * (1 - fx) * image[y0, x0] + (1 - fy) * fx * image[y0, x1]
                         + fy * (1 - fx) * image[y1, x0] + fy * fx * image[y1, x1])
    return out


@pytest.mark.parametrize("size", [12, 16, 32])
def test_upsample_matches_the_bilinear_formula(size):
    images = torch.rand(2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(size))
    out = upsample(images, size)
    assert out.shape == (2, size, size)
    for b in range(2):
        torch.testing.assert_close(out[b], bilinear_loop(images[b], size), rtol=0, atol=1e-12)


def test_digits_images_keep_the_split_and_upsample_it():
    (x8, y8), (t8, ty8) = digits_split(n_test=360, seed=0)
    (a, ya), (b, yb) = digits_images(8)
    assert torch.equal(a, x8) and torch.equal(b, t8) and torch.equal(ya, y8) and torch.equal(yb, ty8)
    (a32, ya32), (b32, yb32) = digits_images(32)
    assert a32.shape == (1437, 32, 32) and b32.shape == (360, 32, 32)
    assert torch.equal(ya32, y8) and torch.equal(yb32, ty8)
    assert 0.0 <= a32.min() and a32.max() <= 1.0
    torch.testing.assert_close(a32[:3], upsample(x8[:3], 32))
    (again, _), _ = digits_images(32)
    assert torch.equal(again, a32), "deterministic"


def shift_reference(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    H, W = image.shape[-2:]
    out = torch.zeros_like(image)
    for i in range(H):
        for j in range(W):
            if 0 <= i - dy < H and 0 <= j - dx < W:
                out[..., i, j] = image[..., i - dy, j - dx]
    return out


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(1, 9), st.integers(0, 3), st.integers(0, 100))
def test_random_shift_translates_each_image_by_one_offset(B, H, W, s, seed):
    assume(min(H, W) > s)  # otherwise some offsets move the whole image out, and several offsets give zeros
    images = torch.rand(B, H, W, generator=torch.Generator().manual_seed(seed)) + 0.1  # no zero pixel inside
    out = random_shift(images, s, generator=torch.Generator().manual_seed(seed))
    assert out.shape == images.shape
    for b in range(B):
        matches = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
                   if torch.equal(out[b], shift_reference(images[b], dy, dx))]
        assert len(matches) == 1


def test_random_shift_draws_every_offset_and_handles_channels():
    dot = torch.zeros(400, 5, 5)
    dot[:, 2, 2] = 1.0
    out = random_shift(dot, 2, generator=torch.Generator().manual_seed(0))
    positions = {tuple(torch.nonzero(o)[0].tolist()) for o in out}
    assert positions == {(i, j) for i in range(5) for j in range(5)}, "all 25 offsets of a 2-pixel shift"
    assert torch.equal(random_shift(dot, 0, generator=torch.Generator()), dot)
    rgb = torch.rand(3, 2, 6, 6)
    per_channel = torch.stack([random_shift(rgb[:, c], 1, generator=torch.Generator().manual_seed(1)) for c in range(2)], 1)
    torch.testing.assert_close(random_shift(rgb, 1, generator=torch.Generator().manual_seed(1)), per_channel)


def test_random_shift_module_acts_in_training_only_and_repeats_with_its_seed():
    images = torch.rand(16, 8, 8)
    aug = RandomShift(1, seed=3)
    assert not list(aug.parameters())
    assert torch.equal(aug.eval()(images), images)
    first = aug.train()(images)
    assert not torch.equal(first, images)
    assert torch.equal(RandomShift(1, seed=3)(images), first)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="size"):
        digits_images(6)
    with pytest.raises(ValueError, match="max_shift"):
        RandomShift(-1)
