"""Chapter 10 questions: each reference against an independent computation on its own cases, and the
forbidden library. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get
from minilib.icl import gd_predict, lsa_forward, lsa_gd_weights

QUESTIONS = for_chapter("10")


def _f64(case):
    return [a.double() if torch.is_tensor(a) and a.is_floating_point() else a for a in case.args]


def test_chapter_10_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"10.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["one_step_gd_prediction", "lsa_gd_layer", "selector_width_lt", "rasp_sort",
                                          "prefix_matching_score"]


def test_gd_and_lsa_references_equal_the_library_constructions():
    for case in get("10.q1").cases():
        xs, ys, lr = _f64(case)
        torch.testing.assert_close(get("10.q1").reference(xs, ys, lr), gd_predict(xs, ys, lr), rtol=1e-12, atol=1e-12)
    for case in get("10.q2").cases():
        z, lr = _f64(case)
        w_kq, w_pv = lsa_gd_weights(z.shape[-1] - 1, lr)
        torch.testing.assert_close(get("10.q2").reference(z, lr), lsa_forward(z, w_kq, w_pv), rtol=1e-12, atol=1e-12)


def test_rasp_references_equal_plain_python():
    for case in get("10.q3").cases():
        keys, queries = _f64(case)
        want = [sum(k < q for k in keys.tolist()) for q in queries.tolist()]
        assert get("10.q3").reference(keys, queries).tolist() == want
    for case in get("10.q4").cases():
        (x,) = _f64(case)
        assert get("10.q4").reference(x).tolist() == sorted(x.tolist())


def test_prefix_matching_reference_scores_a_perfect_head_one_and_uniform_less():
    case = get("10.q5").cases()[0]
    attn, tokens = _f64(case)
    score = get("10.q5").reference(attn, tokens)
    assert abs(score[0].item() - 1.0) < 1e-12 and 0 < score[1].item() < 0.5
    T = tokens.shape[0]
    uniform = torch.ones(1, T, T, dtype=torch.float64).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    # query t sees t + 1 keys, one of which follows the earlier copy of its token
    want = sum(1 / (t + 1) for t in range(T // 2, T)) / (T // 2)
    torch.testing.assert_close(get("10.q5").reference(uniform, tokens), torch.tensor([want], dtype=torch.float64))


def test_the_library_is_forbidden():
    from minilib.icl.rasp import run, sort

    def borrowed(x):
        return torch.tensor(run(sort(), x.tolist()), dtype=x.dtype)

    assert "forbidden" in grade.check("10.q4", borrowed).message


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id


def test_prefix_matching_reference_equals_the_library_score():
    from minilib.icl import prefix_matching_score

    for case in get("10.q5").cases():
        attn, tokens = _f64(case)
        torch.testing.assert_close(get("10.q5").reference(attn, tokens), prefix_matching_score(attn, tokens),
                                   rtol=1e-12, atol=1e-12)
