"""The three forms of linear attention equal a direct double sum, with every kind of decay, in pieces too."""
import ast
import inspect
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minilib.linear_attention as la
from minilib.linear_attention import (
    linear_attention_chunked,
    linear_attention_parallel,
    linear_attention_recurrent,
)

FORMS = {
    "parallel": lambda q, k, v, **kw: linear_attention_parallel(q, k, v, **kw),
    "recurrent": lambda q, k, v, **kw: linear_attention_recurrent(q, k, v, **kw),
    "chunked": lambda q, k, v, chunk_size=4, **kw: linear_attention_chunked(q, k, v, chunk_size=chunk_size, **kw),
}


def reference(q, k, v, gates, normalize):
    """o_t = sum_{s<=t} (prod_{r=s+1..t} g_r) (q_t . k_s) v_s, written as the double loop (gates (B,H,L) or None)."""
    B, H, L, _ = q.shape
    out = torch.zeros(B, H, L, v.shape[-1], dtype=q.dtype)
    for t in range(L):
        num = torch.zeros(B, H, v.shape[-1], dtype=q.dtype)
        den = torch.zeros(B, H, dtype=q.dtype)
        for s in range(t + 1):
            w = (q[:, :, t] * k[:, :, s]).sum(-1)
            if gates is not None:
                w = w * gates[:, :, s + 1:t + 1].prod(-1)
            num += w[..., None] * v[:, :, s]
            den += w
        out[:, :, t] = num / den[..., None] if normalize else num
    return out


def make(B, H, L, D, Dv, decay_kind, seed, positive=False):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, L, D, generator=g, dtype=torch.float64) for _ in range(2))
    if positive:
        q, k = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    v = torch.randn(B, H, L, Dv, generator=g, dtype=torch.float64)
    if decay_kind == "none":
        decay, gates = None, None
    elif decay_kind == "constant":
        decay = 0.5 + 0.5 * torch.rand(H, generator=g, dtype=torch.float64)
        gates = decay[None, :, None].expand(B, H, L)
    else:
        decay = 0.3 + 0.7 * torch.rand(B, H, L, generator=g, dtype=torch.float64)
        gates = decay
    return q, k, v, decay, gates


@settings(max_examples=40, deadline=None)
@given(L=st.integers(1, 19), chunk=st.integers(1, 24), H=st.integers(1, 3), D=st.integers(1, 5),
       Dv=st.integers(1, 4), decay_kind=st.sampled_from(["none", "constant", "gates"]), normalize=st.booleans(),
       seed=st.integers(0, 10_000))
def test_three_forms_equal_the_double_sum(L, chunk, H, D, Dv, decay_kind, normalize, seed):
    q, k, v, decay, gates = make(2, H, L, D, Dv, decay_kind, seed, positive=normalize)
    want = reference(q, k, v, gates, normalize)
    got = {
        "parallel": linear_attention_parallel(q, k, v, decay=decay, normalize=normalize),
        "recurrent": linear_attention_recurrent(q, k, v, decay=decay, normalize=normalize),
        "chunked": linear_attention_chunked(q, k, v, decay=decay, normalize=normalize, chunk_size=chunk),
    }
    for name, out in got.items():
        assert out.shape == want.shape, name
        assert (out - want).abs().max().item() <= 1e-10, name


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
@pytest.mark.parametrize("decay_kind", ["none", "constant", "gates"])
@pytest.mark.parametrize("normalize", [False, True])
def test_two_pieces_with_carried_state_equal_one_piece(form, decay_kind, normalize):
    q, k, v, decay, _ = make(2, 3, 23, 4, 5, decay_kind, seed=1, positive=normalize)
    whole, whole_state = FORMS[form](q, k, v, decay=decay, normalize=normalize, return_state=True)
    cut = 10

    def part(x, sl):
        return None if x is None else (x if x.ndim == 1 else x[..., sl])

    a, state = FORMS[form](q[:, :, :cut], k[:, :, :cut], v[:, :, :cut], decay=part(decay, slice(None, cut)),
                           normalize=normalize, return_state=True)
    b, final = FORMS[form](q[:, :, cut:], k[:, :, cut:], v[:, :, cut:], decay=part(decay, slice(cut, None)),
                           normalize=normalize, state=state, return_state=True)
    torch.testing.assert_close(torch.cat([a, b], dim=2), whole, rtol=0, atol=1e-10)
    torch.testing.assert_close(final, whole_state, rtol=0, atol=1e-10)


def test_final_state_is_the_decayed_sum_of_outer_products():
    q, k, v, decay, gates = make(1, 2, 9, 3, 4, "gates", seed=2)
    want = sum(gates[:, :, s + 1:].prod(-1)[..., None, None] * k[:, :, s, :, None] * v[:, :, s, None, :]
               for s in range(9))
    for form in ("recurrent", "chunked"):
        _, S = FORMS[form](q, k, v, decay=decay, return_state=True)
        torch.testing.assert_close(S, want, rtol=0, atol=1e-12)


def test_fp32_chunked_matches_recurrent_to_1e5():
    q, k, v, decay, _ = make(1, 2, 300, 16, 16, "constant", seed=3)
    q, k, v, decay = (x.float() / 4 for x in (q, k, v, decay * 4))
    torch.testing.assert_close(linear_attention_chunked(q, k, v, decay=decay, chunk_size=64),
                               linear_attention_recurrent(q, k, v, decay=decay), rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("decay_kind", ["none", "gates"])
def test_gradcheck(form, decay_kind):
    q, k, v, decay, _ = make(1, 2, 6, 3, 2, decay_kind, seed=4, positive=True)
    inputs = [x.requires_grad_() for x in (q, k, v) + ((decay,) if decay is not None else ())]

    def fn(q, k, v, decay=None):
        return FORMS[form](q, k, v, decay=decay, normalize=True)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_decay_outside_zero_one_raises(form, bad):
    q, k, v, _, _ = make(1, 2, 5, 3, 2, "none", seed=0)
    decay = torch.tensor([0.9, bad], dtype=torch.float64)
    with pytest.raises(ValueError, match="decay"):
        FORMS[form](q, k, v, decay=decay)
    with pytest.raises(ValueError, match="decay"):
        FORMS[form](q, k, v, decay=torch.full((1, 2, 5), bad, dtype=torch.float64))


@pytest.mark.parametrize("form", list(FORMS))
def test_bad_shapes_raise_naming_the_argument(form):
    q, k, v, _, _ = make(1, 2, 5, 3, 2, "none", seed=0)
    with pytest.raises(ValueError, match="decay"):
        FORMS[form](q, k, v, decay=torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="decay"):
        FORMS[form](q, k, v, decay=torch.full((1, 2, 4), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="k"):
        FORMS[form](q, k[..., :2], v)
    with pytest.raises(ValueError, match="v"):
        FORMS[form](q, k, v[:, :, :4])
    with pytest.raises(TypeError, match="q"):
        FORMS[form](q.numpy(), k, v)


@pytest.mark.parametrize("form", ["recurrent", "chunked"])
def test_bad_state_raises(form):
    q, k, v, _, _ = make(1, 2, 5, 3, 2, "none", seed=0)
    with pytest.raises(ValueError, match="state"):
        FORMS[form](q, k, v, state=torch.zeros(1, 2, 3, 2, dtype=torch.float64), normalize=True)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_bad_chunk_size_raises(bad):
    q, k, v, _, _ = make(1, 1, 5, 3, 2, "none", seed=0)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention_chunked(q, k, v, chunk_size=bad)


def test_every_public_name_of_the_submodules_is_exported():
    defined = []
    for path in sorted(Path(la.__file__).parent.glob("[!_]*.py")):
        tree = ast.parse(path.read_text())
        defined += [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    assert sorted(defined) == sorted(la.__all__)
    assert all(inspect.isfunction(getattr(la, n)) or inspect.isclass(getattr(la, n)) for n in defined)


@pytest.mark.parametrize("decay_kind", ["none", "constant", "gates"])
def test_chunked_over_several_segments_equals_recurrent(decay_kind):
    from minilib.linear_attention.forms import SEGMENT

    q, k, v, decay, _ = make(1, 2, 2 * SEGMENT + 37, 2, 3, decay_kind, seed=5, positive=True)
    decay = None if decay is None else decay ** 0.01  # long memory: the first segment still matters at the end
    want, want_state = linear_attention_recurrent(q, k, v, decay=decay, normalize=True, return_state=True)
    got, state = linear_attention_chunked(q, k, v, decay=decay, normalize=True, chunk_size=48, return_state=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state, want_state, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("decay_kind", ["none", "constant", "gates"])
@pytest.mark.parametrize("normalize", [False, True])
def test_lightning_backward_passes_gradcheck(decay_kind, normalize):
    q, k, v, decay, _ = make(1, 2, 11, 3, 2, decay_kind, seed=6, positive=normalize)
    inputs = [x.requires_grad_() for x in (q, k, v)]

    def fn(q, k, v):
        return linear_attention_chunked(q, k, v, decay=decay, normalize=normalize, chunk_size=4, custom_backward=True)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("decay_kind", ["none", "gates"])
def test_lightning_backward_equals_autograd_over_segments(decay_kind):
    from minilib.linear_attention.forms import SEGMENT

    q, k, v, decay, _ = make(1, 1, SEGMENT + 50, 2, 2, decay_kind, seed=7)
    grad = torch.randn(1, 1, SEGMENT + 50, 2, dtype=torch.float64)
    grads = []
    for custom in (False, True):
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = linear_attention_chunked(*x, decay=decay, chunk_size=32, custom_backward=custom)
        grads.append(torch.autograd.grad(out, x, grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_lightning_backward_refuses_state_and_trainable_decay():
    q, k, v, decay, _ = make(1, 2, 5, 3, 2, "constant", seed=0)
    with pytest.raises(ValueError, match="custom_backward"):
        linear_attention_chunked(q, k, v, state=torch.zeros(1, 2, 3, 2, dtype=torch.float64), custom_backward=True)
    with pytest.raises(ValueError, match="custom_backward"):
        linear_attention_chunked(q, k, v, decay=decay.requires_grad_(), custom_backward=True)
