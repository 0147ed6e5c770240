"""Plausible wrong answers to the chapter 11 questions, each with the text its failure must show."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_channels_last(images, weight, bias, patch):
    """Flattens each patch pixel by pixel with the channels innermost, (p, p, C) instead of (C, p, p)."""
    B, C, H, W = images.shape
    p = patch
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, -1, C * p * p) @ weight.T + bias


def patch_column_major(images, weight, bias, patch):
    """Numbers the patches column by column instead of row by row."""
    B, C, H, W = images.shape
    p = patch
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)
    return x.reshape(B, -1, C * p * p) @ weight.T + bias


def patch_no_permute(images, weight, bias, patch):
    """Reshapes without moving the axes: each 'patch' is a strip of consecutive pixels."""
    B, C, H, W = images.shape
    return images.reshape(B, -1, C * patch * patch) @ weight.T + bias


def patch_conv2d(images, weight, bias, patch):
    d, C = weight.shape[0], images.shape[1]
    return F.conv2d(images, weight.reshape(d, C, patch, patch), bias, stride=patch).flatten(2).transpose(1, 2)


def partition_rows(x, window):
    """Takes w*w consecutive tokens in row-major order: strips of the image, not squares."""
    B, H, W, C = x.shape
    return x.reshape(B, -1, window * window, C)


def partition_column_major(x, window):
    """Square windows, but numbered column by column."""
    B, H, W, C = x.shape
    w = window
    g = x.reshape(B, H // w, w, W // w, w, C).permute(0, 3, 1, 2, 4, 5)
    return g.reshape(B, -1, w * w, C)


def partition_transposed_inside(x, window):
    """Square windows in the right order, but the tokens inside each window column by column."""
    B, H, W, C = x.shape
    w = window
    g = x.reshape(B, H // w, w, W // w, w, C).permute(0, 1, 3, 4, 2, 5)
    return g.reshape(B, -1, w * w, C)


def reverse_no_permute(windows, window, H, W):
    """Reshapes straight back without undoing the permutation."""
    B, _, _, C = windows.shape
    return windows.reshape(B, H, W, C)


def reverse_swapped_axes(windows, window, H, W):
    """Undoes the permutation with the window-grid axes swapped (right only for square grids)."""
    B, _, _, C = windows.shape
    w = window
    g = windows.reshape(B, W // w, H // w, w, w, C).permute(0, 2, 3, 1, 4, 5)
    return g.reshape(B, H, W, C)


def reverse_inner_transposed(windows, window, H, W):
    """Puts each window back transposed (its tokens read column by column)."""
    B, _, _, C = windows.shape
    w = window
    g = windows.reshape(B, H // w, W // w, w, w, C).permute(0, 1, 4, 2, 3, 5)
    return g.reshape(B, H, W, C)


def _labels_to_weights(scores, labels, H, W, window):
    w = window
    lab = labels.reshape(H // w, w, W // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
    keep = lab[:, :, None] == lab[:, None, :]
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)


def mask_wrapped_attend(scores, H, W, window, shift):
    """No mask: the wrapped regions attend to the tokens they were glued to."""
    return torch.softmax(scores, dim=-1)


def mask_wrong_direction(scores, H, W, window, shift):
    """Labels the regions as if the grid had been rolled by +shift (the wrapped rows at the top)."""
    labels = torch.zeros(H, W, dtype=torch.long)
    if shift:
        rows = (slice(0, shift), slice(shift, window), slice(window, H))
        cols = (slice(0, shift), slice(shift, window), slice(window, W))
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                labels[r, c] = 3 * a + b
    return _labels_to_weights(scores, labels, H, W, window)


def mask_rows_only(scores, H, W, window, shift):
    """Separates the wrapped rows but forgets that the columns wrap too."""
    labels = torch.zeros(H, W, dtype=torch.long)
    if shift:
        labels[H - window:H - shift] = 1
        labels[H - shift:] = 2
    return _labels_to_weights(scores, labels, H, W, window)


def mask_same_original_window(scores, H, W, window, shift):
    """Keeps the pairs that shared a window of the unshifted partition: blocks exactly the new connections."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    original = ((ys + shift) % H // window) * (W // window) + (xs + shift) % W // window  # rolled cell -> old window
    return _labels_to_weights(scores, original, H, W, window)


def pool_over_features(z, w):
    """Takes the softmax over the feature axis instead of over the tokens."""
    a = torch.softmax(z * w, dim=-1)
    return (a * z).sum(dim=1)


def pool_mean(z, w):
    """Ignores the scores: plain mean pooling."""
    return z.mean(dim=1)


def pool_unstable(z, w):
    """The softmax by hand without subtracting the maximum: exp overflows for large scores."""
    e = torch.exp(z @ w)
    return (e[..., None] * z).sum(1) / e.sum(1, keepdim=True)


def pool_library(z, w):
    from minilib.vision import seq_pool

    return seq_pool(z, z @ w)


WRONG = [
    ("11.q1", patch_channels_last, "case 2/5"),
    ("11.q1", patch_column_major, "max abs error"),
    ("11.q1", patch_no_permute, "case 1/5"),
    ("11.q1", patch_conv2d, "forbidden"),
    ("11.q2", partition_rows, "case 1/6"),
    ("11.q2", partition_column_major, "max abs error"),
    ("11.q2", partition_transposed_inside, "case 1/6"),
    ("11.q3", reverse_no_permute, "case 1/6"),
    ("11.q3", reverse_swapped_axes, "max abs error"),
    ("11.q3", reverse_inner_transposed, "case 1/6"),
    ("11.q4", mask_wrapped_attend, "case 1/7"),
    ("11.q4", mask_wrong_direction, "max abs error"),
    ("11.q4", mask_rows_only, "case 1/7"),
    ("11.q4", mask_same_original_window, "max abs error"),
    ("11.q5", pool_over_features, "case 1/5"),
    ("11.q5", pool_mean, "case 1/5"),
    ("11.q5", pool_unstable, "NaN/Inf"),
    ("11.q5", pool_library, "forbidden"),
]
