"""Chapter 04 questions: each reference against a from-scratch computation, the forbidden library, and hints.
The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``.
"""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get
from minilib.linear_attention import linear_attention_parallel

QUESTIONS = for_chapter("04")


def test_chapter_04_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"04.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["recurrent_linear_attention", "retnet_decay_matrix", "chunk_step",
                                          "elu_linear_attention", "aaren_combine"]


def test_decay_references_agree_with_the_parallel_form():
    # q1 and q2 against each other through the library's (separately tested) parallel form, float64
    for case in get("04.q1").cases():
        q, k, v, g = (a.double() for a in case.args)
        want = linear_attention_parallel(q[None, None], k[None, None], v[None, None], decay=g[None, None])[0, 0]
        torch.testing.assert_close(get("04.q1").reference(q, k, v, g), want, rtol=0, atol=1e-12)
    L, gammas = get("04.q2").cases()[1].args
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, len(gammas), L, 3, generator=g, dtype=torch.float64) for _ in range(3))
    Dm = get("04.q2").reference(L, gammas)
    torch.testing.assert_close((q @ k.transpose(-1, -2) * Dm) @ v, linear_attention_parallel(q, k, v, decay=gammas),
                               rtol=0, atol=1e-12)


def test_chunk_reference_chains_into_the_whole_sequence():
    # two chunks through the reference, the state handed from the first to the second, equal one long sequence
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(7, 3, generator=g, dtype=torch.float64) for _ in range(3))
    gamma = torch.tensor(0.8, dtype=torch.float64)
    ref = get("04.q3").reference
    first = ref(q[:4], k[:4], v[:4], torch.zeros(3, 3, dtype=torch.float64), gamma)
    second = ref(q[4:], k[4:], v[4:], first[4:], gamma)
    whole = get("04.q1").reference(q, k, v, gamma.expand(7))
    torch.testing.assert_close(torch.cat([first[:4], second[:3]]), whole, rtol=0, atol=1e-12)


def test_elu_reference_is_row_normalised_attention():
    q, k, v = (a.double() for a in get("04.q4").cases()[1].args)
    phi = lambda x: torch.nn.functional.elu(x) + 1  # noqa: E731
    w = (phi(q) @ phi(k).transpose(-1, -2)).tril()
    torch.testing.assert_close(get("04.q4").reference(q, k, v), (w / w.sum(-1, keepdim=True)) @ v, rtol=0, atol=1e-12)


def test_combine_reference_merges_into_the_softmax_of_the_whole_span():
    g = torch.Generator().manual_seed(2)
    s, v = torch.randn(3, 7, generator=g, dtype=torch.float64) * 5, torch.randn(3, 7, 2, generator=g, dtype=torch.float64)

    def summary(sl):
        m = s[:, sl].amax(-1, keepdim=True)
        e = (s[:, sl] - m).exp()
        return torch.cat([m, e.sum(-1, keepdim=True), (e[..., None] * v[:, sl]).sum(1)], -1)

    merged = get("04.q5").reference(summary(slice(0, 3)), summary(slice(3, 7)))
    torch.testing.assert_close(merged[:, 2:] / merged[:, 1:2], (torch.softmax(s, -1)[..., None] * v).sum(1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(merged, summary(slice(0, 7)), rtol=0, atol=1e-12)


def test_the_library_is_forbidden():
    from tests.grade_support.wrong_ch04 import recurrent_library

    assert "forbidden" in grade.check("04.q1", recurrent_library).message


def test_a_decayed_newest_token_gets_the_single_token_hint():
    from tests.grade_support.wrong_ch04 import recurrent_decay_after_adding

    assert "g_1 * 0 + k_1 v_1^T" in grade.check("04.q1", recurrent_decay_after_adding).details["hint"]


def test_answers_follow_the_input_dtype():
    for q in QUESTIONS:
        assert any(a.dtype == torch.float32 for c in q.cases() for a in c.args if torch.is_tensor(a)), q.id
