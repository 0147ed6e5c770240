"""Plausible wrong answers to the chapter 01 questions, each with the text its failure must show."""
from __future__ import annotations

import importlib
import sys
import threading

import torch
import torch.nn.functional as F

import minilib.attention


def softmax_no_max(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)


def softmax_last_dim_only(x, dim=-1):
    e = (x - x.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def softmax_builtin_by_getattr(x, dim=-1):
    return getattr(torch, "soft" + "max")(x, dim)  # hidden from the static check


def softmax_method(x, dim=-1):
    return x.softmax(dim)


def _attention(q, k, v, diagonal_offset, scale=None):
    T, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) * (D**-0.5 if scale is None else scale)
    keep = torch.ones(T, S, dtype=torch.bool).tril(diagonal=diagonal_offset(T, S))
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ v


def attention_diagonal_excluded(q, k, v):
    return _attention(q, k, v, lambda T, S: S - T - 1)


def attention_one_future_key(q, k, v):
    return _attention(q, k, v, lambda T, S: S - T + 1)


def attention_top_left(q, k, v):
    return _attention(q, k, v, lambda T, S: 0)


def attention_scale_one_over_d(q, k, v):
    return _attention(q, k, v, lambda T, S: S - T, scale=1.0 / q.shape[-1])


def attention_own_unstable_softmax(q, k, v):
    """Writes the softmax by hand without subtracting the row maximum."""
    T, S = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    e = scores.exp() * torch.ones(T, S, dtype=q.dtype).tril(S - T)
    return e / e.sum(-1, keepdim=True) @ v


def attention_builtin(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def split_reshape_only(x, n_heads):
    B, T, D = x.shape
    return x.reshape(B, n_heads, T, D // n_heads)


def split_no_transpose(x, n_heads):
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, D // n_heads)


def merge_reshape_only(x):
    B, H, T, Dh = x.shape
    return x.reshape(B, T, H * Dh)


def split_library(x, n_heads):
    return minilib.attention.split_heads(x, n_heads)


def merge_library(x):
    return minilib.attention.merge_heads(x)


def _rope(x, positions, base, sign, pairing):
    D = x.shape[-1]
    angle = positions.to(x.dtype)[:, None] * base ** (-torch.arange(0, D, 2, dtype=x.dtype) / D)
    cos, sin = angle.cos(), sign * angle.sin()
    if pairing == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    a, b = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def rope_swapped_sign(x, positions, base=10000.0):
    return _rope(x, positions, base, -1.0, "interleaved")


def rope_rotate_half(x, positions, base=10000.0):
    return _rope(x, positions, base, 1.0, "half")


def rms_layernorm(x, weight, eps=1e-6):
    x = x - x.mean(-1, keepdim=True)
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_eps_outside(x, weight, eps=1e-6):
    return x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * weight


def rms_float64_output(x, weight, eps=1e-6):
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


# Bypasses of the off-limits rules (issue 10): names not on the lists, the grader's own answers,
# switching the watch off, threads. Each must score 0.

def softmax_softmin(x, dim=-1):
    return F.softmin(-x, dim)


def softmax_private_op(x, dim=-1):
    return torch._softmax(x, dim, False)


def softmax_library_private(x, dim=-1):
    return minilib.attention.dot_product._softmax_rows(x.movedim(dim, -1)).movedim(-1, dim)


def softmax_library_hidden(x, dim=-1):
    """No library name in the code: only the run-time guard can see it."""
    module = importlib.import_module("minilib.attention." + "dot_product")
    return getattr(module, "_softmax_" + "rows")(x.movedim(dim, -1)).movedim(-1, dim)


def softmax_profile_off(x, dim=-1):
    sys.setprofile(None)
    return getattr(torch, "soft" + "max")(x, dim)


def softmax_torch_function_off(x, dim=-1):
    with torch._C.DisableTorchFunction():
        return getattr(torch, "soft" + "max")(x, dim)


def softmax_kernels_removed(x, dim=-1):
    """Finds the grader's dispatcher overrides and removes them, then uses the built-in."""
    import gc

    libraries = [obj for obj in gc.get_objects() if type(obj) is torch.library.Library
                 and "aten/_softmax/CPU" in obj._op_impls]  # only the grader's: torch's own stay
    for library in libraries:
        library._destroy()
    return torch._softmax(x, dim, False)


def softmax_scipy(x, dim=-1):
    import scipy.special

    return torch.from_numpy(getattr(scipy.special, "soft" + "max")(x.numpy(), axis=dim))


def softmax_guard_popped(x, dim=-1):
    """Pops the grader's torch-function guard; the values are right, the tampering scores 0."""
    while torch._C._len_torch_function_stack():
        torch._C._pop_torch_function_stack()
    e = (x - x.amax(dim, keepdim=True)).exp()
    return e / e.sum(dim, keepdim=True)


def softmax_grader_reference(x, dim=-1):
    from minilib.grade.questions import get

    return get("01.q1").reference(x, dim).to(x.dtype)


def attention_library_attend(q, k, v):
    return minilib.attention.attend(q, k, v, causal=True)


def attention_library_flash(q, k, v):
    import minilib.flash

    return minilib.flash.flash_attention(q, k, v, causal=True)


def attention_grader_reference(q, k, v):
    from minilib.grade.questions import get

    return get("01.q2").reference(q.double(), k.double(), v.double()).to(q.dtype)


class _Lazy(torch.Tensor):
    """A tensor that computes the forbidden softmax only when the grader reads it out."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.detach:
            return getattr(torch, "soft" + "max")(args[0].as_subclass(torch.Tensor), -1)
        return super().__torch_function__(func, types, args, kwargs or {})


def softmax_when_read(x, dim=-1):
    return x.as_subclass(_Lazy)


def rms_in_thread(x, weight, eps=1e-6):
    """01.q6 through getattr in a thread, where a per-thread guard would not look."""
    box = []
    worker = threading.Thread(target=lambda: box.append(getattr(F, "rms_" + "norm")(x, x.shape[-1:], weight, eps)))
    worker.start()
    worker.join()
    return box[0]


def rms_torch_module(x, weight, eps=1e-6):
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)
    norm.weight.copy_(weight)
    return norm(x)


BYPASSES = [
    ("01.q1", softmax_softmin, "called forbidden torch.softmax"),
    ("01.q1", softmax_private_op, "called forbidden torch.softmax (aten._softmax)"),
    ("01.q1", softmax_library_private, "called forbidden minilib.attention.dot_product._softmax_rows"),
    ("01.q1", softmax_library_hidden, "called forbidden minilib.attention.dot_product._softmax_rows"),
    ("01.q1", softmax_profile_off, "called forbidden torch.softmax"),
    ("01.q1", softmax_torch_function_off, "called forbidden torch.softmax (aten._softmax)"),
    ("01.q1", softmax_kernels_removed, "switched off the grader's guard"),
    ("01.q1", softmax_scipy, "called forbidden scipy.special.softmax"),
    ("01.q1", softmax_when_read, "called forbidden torch.softmax"),
    ("01.q1", softmax_guard_popped, "switched off the grader's guard: the torch function guard was popped"),
    ("01.q1", softmax_grader_reference, "forbidden the grader's own answers"),
    ("01.q2", attention_library_attend, "forbidden minilib.attention.attend"),
    ("01.q2", attention_library_flash, "forbidden minilib.flash.flash_attention"),
    ("01.q2", attention_grader_reference, "forbidden the grader's own answers"),
    ("01.q6", rms_in_thread, "called forbidden starting a thread"),
    ("01.q6", rms_torch_module, "forbidden"),
]

# (question, wrong answer, text the failure message must contain)
WRONG = BYPASSES + [
    ("01.q1", softmax_no_max, "NaN/Inf"),
    ("01.q1", softmax_last_dim_only, "dim=0"),
    ("01.q1", softmax_builtin_by_getattr, "called forbidden torch.softmax"),
    ("01.q1", softmax_method, "uses forbidden torch.softmax"),
    ("01.q2", attention_diagonal_excluded, "NaN/Inf"),
    ("01.q2", attention_one_future_key, "max abs error"),
    ("01.q2", attention_top_left, "T=3, S=7"),
    ("01.q2", attention_scale_one_over_d, "max abs error"),
    ("01.q2", attention_own_unstable_softmax, "NaN/Inf"),
    ("01.q2", attention_builtin, "forbidden torch.nn.functional.scaled_dot_product_attention"),
    ("01.q3", split_reshape_only, "max abs error"),
    ("01.q3", split_no_transpose, "wrong shape"),
    ("01.q3", split_library, "forbidden minilib.attention.split_heads"),
    ("01.q4", merge_reshape_only, "max abs error"),
    ("01.q4", merge_library, "forbidden minilib.attention.merge_heads"),
    ("01.q5", rope_swapped_sign, "max abs error"),
    ("01.q5", rope_rotate_half, "max abs error"),
    ("01.q6", rms_layernorm, "max abs error"),
    ("01.q6", rms_eps_outside, "max abs error"),
    ("01.q6", rms_float64_output, "wrong dtype"),
]
