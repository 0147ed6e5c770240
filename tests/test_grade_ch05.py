"""Chapter 05 questions: each reference against a from-scratch computation, hints for specific mistakes, and the
library's own functions forbidden. The solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.grade.questions import for_chapter, get
from minilib.sparse import bilevel_routing_attention, global_local_mask, sliding_window_mask

QUESTIONS = for_chapter("05")


def test_chapter_05_has_the_five_questions():
    assert [q.id for q in QUESTIONS] == [f"05.q{i}" for i in range(1, 6)]
    assert [q.name for q in QUESTIONS] == ["sliding_window_weights", "global_local_weights", "bilevel_routing",
                                          "streaming_evict", "heavy_hitter_evict"]


def test_mask_references_agree_with_the_library_masks():
    # the grader's references are written without minilib.sparse; the two constructions must agree
    for case in get("05.q1").cases():
        scores, window = case.args
        T, S = scores.shape[-2:]
        ref = get("05.q1").reference(scores.double(), window)
        assert torch.equal(ref[0] > 0, sliding_window_mask(T, window, S=S))
    for case in get("05.q2").cases():
        scores, radius, n_global = case.args
        ref = get("05.q2").reference(scores.double(), radius, n_global)
        assert torch.equal(ref > 0, global_local_mask(scores.shape[-1], radius=radius, n_global=n_global))


def test_routing_reference_agrees_with_the_library_kernel():
    for case in get("05.q3").cases():
        q, k, v, r, k_top = (a.double() if torch.is_tensor(a) else a for a in case.args)
        lib = bilevel_routing_attention(q[None, None], k[None, None], v[None, None], region_size=r, k_top=k_top)[0, 0]
        torch.testing.assert_close(get("05.q3").reference(q, k, v, r, k_top), lib, rtol=0, atol=1e-12)


def test_eviction_references_keep_the_budget_and_the_right_positions():
    for case in get("05.q4").cases():
        k, n_sinks, window = case.args
        kept = get("05.q4").reference(k.double(), n_sinks, window)
        assert kept.shape[0] == min(k.shape[0], n_sinks + window)
        torch.testing.assert_close(kept[:min(n_sinks, k.shape[0])], k.double()[:n_sinks])
    for case in get("05.q5").cases():
        attn, k, budget, n_recent = case.args
        kept = get("05.q5").reference(attn.double(), k.double(), budget, n_recent)
        assert kept.shape[0] == budget
        if n_recent:
            torch.testing.assert_close(kept[-n_recent:], k.double()[-n_recent:])
        # the column-sum scores of the kept older keys are each >= those of the evicted older keys
        S = k.shape[0]
        col = attn.double().sum(0)[: S - n_recent]
        rows = [int((k.double() == row).all(-1).nonzero()[0]) for row in kept[: budget - n_recent]]
        evicted = [s for s in range(S - n_recent) if s not in rows]
        if evicted and rows:
            assert col[rows].min() >= col[evicted].max()


def test_top_left_window_gets_the_bottom_right_hint():
    from tests.grade_support.wrong_ch05 import window_top_left

    result = grade.check("05.q1", window_top_left)
    assert "the last T of the S positions" in result.details["hint"]


def test_the_library_mask_is_forbidden():
    from tests.grade_support.wrong_ch05 import window_library

    assert "forbidden" in grade.check("05.q1", window_library).message
