"""Chapter 03 questions: hints for specific mistakes, forbidden kernels, and each reference against
a from-scratch computation on its own cases. The solution / stub / wrong-answer proof tests are in
``test_grade_proofs.py``.
"""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get

QUESTIONS = for_chapter("03")


def test_chapter_03_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"03.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["online_softmax_update", "flash_tile_step", "tiled_attention",
                                          "merge_two", "tile_dS"]


def test_off_by_one_causal_tile_gets_the_causal_hint():
    from tests.grade_support.wrong_ch03 import forward_causal_tile_off_by_one

    result = grade.check("03.q3", forward_causal_tile_off_by_one)
    assert "its last row's diagonal included" in result.details["hint"]


def test_the_sdpa_kernel_is_forbidden_in_the_tiled_forward():
    def borrowed(q, k, v, block_q, block_k, causal=False):
        T, S = q.shape[-2], k.shape[-2]
        mask = torch.ones(T, S, dtype=torch.bool).tril(S - T) if causal else None
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    assert "forbidden" in grade.check("03.q3", borrowed).message


def _f64(case):
    return [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in case.args]


def test_update_and_tile_references_equal_a_from_scratch_pass_over_all_keys():
    # The defining property: the state after (prefix + block), computed from the prefix's state,
    # equals the state computed from scratch over all the keys with torch.logsumexp.
    g = torch.Generator().manual_seed(0)
    s_all, v_all = torch.randn(4, 9, generator=g, dtype=torch.float64) * 3, torch.randn(9, 2, generator=g, dtype=torch.float64)
    P = 5
    m = s_all[:, :P].amax(-1)
    l = torch.exp(s_all[:, :P] - m[:, None]).sum(-1)
    acc = torch.exp(s_all[:, :P] - m[:, None]) @ v_all[:P]
    ml = get("03.q1").reference(m, l, s_all[:, P:])
    m_all = s_all.amax(-1)
    torch.testing.assert_close(ml[:, 0], m_all, rtol=0, atol=0)
    torch.testing.assert_close(ml[:, 1], torch.exp(torch.logsumexp(s_all, -1) - m_all), rtol=0, atol=1e-12)
    acc_new = get("03.q2").reference(m, l, acc, s_all[:, P:], v_all[P:])
    probs = torch.exp(s_all - torch.logsumexp(s_all, -1, keepdim=True))
    torch.testing.assert_close(acc_new / ml[:, 1:], probs @ v_all, rtol=0, atol=1e-12)


def test_merge_and_ds_cases_carry_consistent_lse_and_delta():
    for case in get("03.q4").cases()[:4]:
        o1, l1, o2, l2 = _f64(case)
        merged = get("03.q4").reference(o1, l1, o2, l2)
        assert merged.shape == o1.shape and torch.isfinite(merged).all()
    for case in get("03.q5").cases():
        q_i, k, v, do_i, lse_i, delta_i, c0, c1 = _f64(case)
        scores = q_i @ k.T * q_i.shape[-1] ** -0.5
        torch.testing.assert_close(lse_i, torch.logsumexp(scores, -1), rtol=1e-6, atol=1e-6)
        out = torch.softmax(scores, -1) @ v
        torch.testing.assert_close(delta_i, (do_i * out).sum(-1), rtol=1e-5, atol=1e-5)
        # the reference's tiles tile the whole-row gradient: dS sums to zero over all keys
        full = get("03.q5").reference(q_i, k, v, do_i, lse_i, delta_i, 0, k.shape[0])
        torch.testing.assert_close(full.sum(-1), torch.zeros_like(full[:, 0]), rtol=0, atol=1e-12)


def test_answers_follow_the_input_dtype():
    # every question has at least one float32 case, so a float64-only answer is caught
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
