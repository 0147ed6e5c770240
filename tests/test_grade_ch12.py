"""Chapter 12 questions: each reference against an independent computation on its own cases, and hints for
specific mistakes. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import compress, grade
from minilib.grade.questions import for_chapter, get

QUESTIONS = for_chapter("12")


def test_chapter_12_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"12.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["absmax_int8", "round_to_e2m1", "prune_2_4", "tome_step",
                                          "accept_or_resample"]


def _f64(case):
    return [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in case.args]


def test_references_agree_with_the_library_on_every_case():
    # the grader's loops and minilib.compress were written separately; they must agree on the questions' cases
    for case in get("12.q1").cases():
        (x,) = _f64(case)
        torch.testing.assert_close(get("12.q1").reference(x), compress.fake_quantize(x, bits=8), rtol=1e-12, atol=1e-15)
    for case in get("12.q2").cases():
        (x,) = _f64(case)
        torch.testing.assert_close(get("12.q2").reference(x), compress.fp_quantize(x, max_value=6.0), rtol=0, atol=0)
    for case in get("12.q3").cases():
        (w,) = _f64(case)
        torch.testing.assert_close(get("12.q3").reference(w), w * compress.nm_mask(w, 2, 4), rtol=0, atol=0)
    for case in get("12.q4").cases():
        x, r = _f64(case)
        torch.testing.assert_close(get("12.q4").reference(x, r), compress.tome(x[None], r)[0][0], rtol=1e-12, atol=1e-12)


def test_acceptance_cases_cover_both_outcomes_and_residuals_are_distributions():
    outcomes = []
    for case in get("12.q5").cases():
        p, q, token, u = _f64(case)
        out = get("12.q5").reference(p, q, token, u)
        accepted, residual = compress.speculative_accept(p, q, token, u)
        outcomes.append(accepted)
        torch.testing.assert_close(out, torch.nn.functional.one_hot(torch.tensor(token), len(p)).double() if accepted
                                   else residual)
        assert abs(out.sum().item() - 1) < 1e-12
    assert any(outcomes) and not all(outcomes)


def test_wrong_mask_direction_gets_the_largest_magnitude_hint():
    from tests.grade_support.wrong_ch12 import mask_keeps_smallest

    assert "LARGEST" in grade.check("12.q3", mask_keeps_smallest).details["hint"]


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
