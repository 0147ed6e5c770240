"""Chapter 09 questions: hints for specific mistakes, forbidden library code, and each reference against a
from-scratch computation. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import math

import torch
import torch.nn.functional as F

from minilib import grade
from minilib.grade.questions import for_chapter, get

QUESTIONS = for_chapter("09")


def test_chapter_09_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"09.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["swiglu", "top_k_gates", "moe_dispatch_combine", "load_balancing_loss",
                                          "pattention"]


def test_swiglu_reference_equals_torch_silu():
    x, w1, w3, w2 = get("09.q1").cases()[0].args
    torch.testing.assert_close(get("09.q1").reference(x, w1, w3, w2), (F.silu(x @ w1) * (x @ w3)) @ w2)


def test_gates_reference_equals_softmax_topk_renormalised_and_rows_sum_to_one():
    for case in get("09.q2").cases():
        logits, k = case.args
        logits = logits.double()
        got = get("09.q2").reference(logits, k)
        p = torch.softmax(logits, -1)
        top, idx = p.topk(k, -1)
        torch.testing.assert_close(got, torch.zeros_like(p).scatter(-1, idx, top / top.sum(-1, keepdim=True)))
        torch.testing.assert_close(got.sum(-1), torch.ones(len(got), dtype=torch.float64))


def test_combine_reference_equals_the_dense_mixture():
    x, gates, w1, w2 = get("09.q3").cases()[0].args
    dense = sum(gates[:, e:e + 1] * (torch.relu(x @ w1[e]) @ w2[e]) for e in range(gates.shape[1]))
    torch.testing.assert_close(get("09.q3").reference(x, gates, w1, w2), dense)


def test_balance_reference_closed_forms():
    uniform_case = get("09.q4").cases()[2]
    assert get("09.q4").reference(*uniform_case.args).item() == 1.0
    from minilib.moe import load_balancing_loss  # the library agrees with the grader's loop

    for case in get("09.q4").cases():
        probs, experts = case.args
        torch.testing.assert_close(get("09.q4").reference(probs.double(), experts),
                                   load_balancing_loss(probs.double(), experts))


def test_pattention_reference_is_unchanged_by_zero_parameter_tokens():
    x, keys, values, tau = get("09.q5").cases()[2].args
    m = keys.shape[0] - 4
    grown = get("09.q5").reference(x, keys, values, tau)
    torch.testing.assert_close(grown, get("09.q5").reference(x, keys[:m], values[:m], tau), rtol=0, atol=1e-15)
    s = x @ keys[:m].T
    a = tau * s / s.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(grown, F.gelu(a) @ values[:m])
    assert tau == math.sqrt(m)


def test_softmax_pattention_fails_with_the_zero_token_hint_on_the_grown_case():
    def softmax_on_grown_only(x, keys, values, tau):
        s = x @ keys.T
        a = tau * s / s.norm(dim=-1, keepdim=True)
        weights = torch.softmax(a, -1) if keys[-1].abs().sum() == 0 else None
        return F.gelu(a) @ values if weights is None else weights @ values

    result = grade.check("09.q5", softmax_on_grown_only)
    assert "case 3/4" in result.message and "GELU(0) = 0" in result.details["hint"]


def test_the_library_moe_is_forbidden():
    def borrowed(probs, experts):
        from minilib.moe.routing import load_balancing_loss

        return load_balancing_loss(probs, experts)

    assert "forbidden" in grade.check("09.q4", borrowed).message
