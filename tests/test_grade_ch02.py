"""Chapter 02 questions: hints for specific mistakes, the library's conventions, and each reference
against a second, differently written computation. The solution / stub / wrong-answer proof tests
are in ``test_grade_proofs.py``.
"""
import math

import torch
import torch.nn.functional as F

import minilib.attention as attention
import minilib.positional as positional
from minilib import grade
from minilib.grade.questions import for_chapter, get
from tests.grade_support import wrong_ch02

QUESTIONS = for_chapter("02")


def _f64(case):
    args = [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in case.args]
    kwargs = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in case.kwargs.items()}
    return args, kwargs


def test_chapter_02_has_the_six_questions():
    assert [q.id for q in QUESTIONS] == [f"02.q{i}" for i in range(1, 7)]
    assert [q.name for q in QUESTIONS] == ["repeat_kv", "sigmoid_attention", "clipped_softmax", "rope_ntk",
                                          "add_alibi", "moh_weights"]


def test_every_question_has_float32_and_float64_cases():
    for q in QUESTIONS:
        dtypes = {a.dtype for c in q.cases() for a in c.args if torch.is_tensor(a) and a.is_floating_point()}
        assert dtypes == {torch.float32, torch.float64}, q.id


def test_hints_name_the_mistake():
    expect = [
        ("02.q1", wrong_ch02.repeat_tiled, "x.repeat(1, n_rep, 1, 1) tiles"),
        ("02.q2", wrong_ch02.sigmoid_no_bias, "- log n_t"),
        ("02.q2", wrong_ch02.sigmoid_bias_all_keys, "not -log S = -log 5 for every row"),
        ("02.q2", wrong_ch02.sigmoid_top_left, "queries are the last T=3 of S=8 positions"),
        ("02.q3", wrong_ch02.clip_forgotten, "values below 0 become exactly 0"),
        ("02.q4", wrong_ch02.ntk_position_interpolation, "changes the base, not the positions"),
        ("02.q5", wrong_ch02.alibi_positive, "a penalty, hence the minus sign"),
        ("02.q5", wrong_ch02.alibi_slopes_ignore_h, "here H = 4: head 0 has slope 2 ** -2"),
        ("02.q5", wrong_ch02.alibi_top_left, "t + (S - T) = t + 4"),
        ("02.q6", wrong_ch02.moh_renormalised, "without renormalising"),
    ]
    for qid, answer, text in expect:
        assert text in grade.check(qid, answer).details["hint"], (qid, answer.__name__)


def test_library_helper_is_forbidden_inside_the_students_own_helper():
    def repeat(x, n):
        return attention.expand_kv_heads(x, x.shape[1] * n)

    def sigmoid_via_helper(q, k, v, causal=False):
        n = q.shape[1] // k.shape[1]
        k, v = repeat(k, n), repeat(v, n)
        return wrong_ch02.sigmoid_no_bias(q, k, v, causal)

    assert "forbidden minilib.attention.expand_kv_heads" in grade.check("02.q2", sigmoid_via_helper).message


def test_references_follow_the_library_conventions():
    # The questions must teach what the library does: the same GQA grouping, the same -log (keys the row
    # sees) with bottom-right causal masking, the same clip, NTK base and ALiBi alignment (zero for future keys).
    for case in get("02.q1").cases():
        (x, n), _ = _f64(case)
        assert torch.equal(get("02.q1").reference(x, n), attention.expand_kv_heads(x, x.shape[1] * n))
    for case in get("02.q2").cases():
        (q, k, v), kw = _f64(case)
        torch.testing.assert_close(get("02.q2").reference(q, k, v, **kw),
                                   attention.sigmoid_attention(q, k, v, **kw), rtol=0, atol=1e-12)
    for case in get("02.q3").cases():
        (x, zeta, gamma), _ = _f64(case)
        torch.testing.assert_close(get("02.q3").reference(x, zeta, gamma),
                                   attention.clipped_softmax(x, zeta=zeta, gamma=gamma), rtol=0, atol=1e-12)
    for case in get("02.q4").cases():
        (x, pos, base, scale), _ = _f64(case)
        D = x.shape[-1]
        torch.testing.assert_close(get("02.q4").reference(x, pos, base, scale),
                                   positional.rope(x, pos, base=base * scale ** (D / (D - 2))), rtol=0, atol=1e-12)
    for case in get("02.q5").cases():
        (scores,), _ = _f64(case)
        B, H, T, S = scores.shape
        bias = positional.alibi_bias(H, T, S).double()  # the library's slopes are float32
        torch.testing.assert_close(get("02.q5").reference(scores), scores + bias, rtol=0, atol=1e-6)


def test_sigmoid_reference_equals_a_vectorised_form():
    for case in get("02.q2").cases():
        (q, k, v), kw = _f64(case)
        H, Hkv, T, S = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
        kk, vv = (t.repeat_interleave(H // Hkv, dim=1) for t in (k, v))
        seen = torch.ones(T, S, dtype=torch.float64).tril(S - T) if kw["causal"] else torch.ones(T, S, dtype=torch.float64)
        w = torch.sigmoid(q @ kk.transpose(-2, -1) / math.sqrt(q.shape[-1]) - seen.sum(-1, keepdim=True).log()) * seen
        torch.testing.assert_close(get("02.q2").reference(q, k, v, **kw), w @ vv, rtol=0, atol=1e-12)


def test_ntk_reference_keeps_the_fastest_pair_and_interpolates_the_slowest():
    # theta'_0 = theta_0 = 1 (no change) and theta'_{D/2-1} = theta_{D/2-1} / scale (as position
    # interpolation), computed here with complex multiplication.
    g = torch.Generator().manual_seed(0)
    D, T, base, scale = 12, 9, 10000.0, 6.0
    x = torch.randn(2, T, D, generator=g, dtype=torch.float64)
    pos = torch.arange(T) * 7
    out = get("02.q4").reference(x, pos, base, scale)

    def rotate(pair, angle):
        z = torch.view_as_complex(pair.contiguous()) * torch.polar(torch.ones_like(angle), angle)
        return torch.view_as_real(z)

    fast = rotate(x[..., 0:2], pos.double())
    slow = rotate(x[..., D - 2:D], pos.double() / scale * base ** (-(D - 2) / D))
    torch.testing.assert_close(out[..., 0:2], fast, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., D - 2:D], slow, rtol=0, atol=1e-12)
    # scale = 1 is chapter 01's RoPE question
    torch.testing.assert_close(get("02.q4").reference(x, pos, base, 1.0), get("01.q5").reference(x, pos, base),
                               rtol=0, atol=1e-12)


def test_alibi_reference_penalises_distance_linearly_per_head():
    scores = torch.zeros(1, 8, 4, 10, dtype=torch.float64)
    bias = get("02.q5").reference(scores)[0]
    slopes = 2.0 ** -torch.arange(1, 9, dtype=torch.float64)  # H = 8: 1/2, 1/4, ..., 1/256
    # the last query (position 9) against key 0: distance 9; the first query (position 6) against key 9: future
    torch.testing.assert_close(bias[:, -1, 0], -9 * slopes, rtol=0, atol=0)
    assert torch.all(bias[:, 0, 7:] == 0) and torch.all(bias[:, -1, -1] == 0)


def test_moh_reference_is_the_full_softmax_on_exactly_top_k_heads():
    for case in get("02.q6").cases():
        (logits, k), _ = _f64(case)
        w = get("02.q6").reference(logits, k)
        p = F.softmax(logits, dim=-1)
        kept = w > 0
        assert torch.all(kept.sum(-1) == k)
        torch.testing.assert_close(w[kept], p[kept], rtol=0, atol=1e-15)
        # every kept head outweighs every dropped one, by more than float32 noise
        dropped_max = torch.where(kept, -1.0, p).amax(-1)
        kept_min = torch.where(kept, p, 2.0).amin(-1)
        assert torch.all((k == logits.shape[-1]) | (kept_min > dropped_max))
        # the float32 copy picks the same heads: the gap at the boundary is far above rounding
        p32 = F.softmax(case.args[0].float(), dim=-1)
        assert torch.equal(p32.topk(k, -1).indices.sort(-1).values, p.topk(k, -1).indices.sort(-1).values)
