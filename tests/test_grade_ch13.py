"""Chapter 13 questions: each reference against an independent computation (a closed form, the library's
counters on real caches, torch built-ins), the hints specific mistakes get, and the library forbidden. The
solution / stub / wrong-answer proof tests are in ``test_grade_proofs.py``."""
import torch

from minilib import grade
from minilib.attention import kv_cache_bytes
from minilib.grade.questions import for_chapter, get
from minilib.models.zoo import decoding_state_bytes, zoo_model

QUESTIONS = for_chapter("13")


def test_chapter_13_has_the_three_questions():
    assert [q.id for q in QUESTIONS] == [f"13.q{i}" for i in range(1, 4)]
    assert [q.name for q in QUESTIONS] == ["ema_mix", "decoding_bytes", "mqar_accuracy"]


def test_ema_reference_is_the_closed_form_sum():
    # y_t = sum_{s<=t} alpha (1 - alpha)^(t - s) x_s
    for case in get("13.q1").cases():
        x, alpha = (a.double() for a in case.args)
        T = x.shape[1]
        lag = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()
        weights = torch.where(lag[..., None] >= 0, alpha * (1 - alpha) ** lag.clamp(min=0)[..., None], 0.0)  # (T, S, C)
        torch.testing.assert_close(get("13.q1").reference(x, alpha), torch.einsum("tsc,bsc->btc", weights, x))


def test_bytes_reference_matches_real_caches():
    # the KV column against kv_cache_bytes, the state column against a linear-attention model's cache
    for case in get("13.q2").cases():
        (contexts,) = case.args
        s = case.kwargs
        got = get("13.q2").reference(contexts, **s)
        for i, c in enumerate(contexts.tolist()):
            assert got[i, 0] == kv_cache_bytes(n_layers=s["n_layers"], n_kv_heads=s["n_kv_heads"],
                                               head_dim=s["head_dim"], seq_len=int(c), dtype={2: torch.float16, 4: torch.float32, 8: torch.float64}[s["element_size"]])
    model = zoo_model("retention", vocab_size=16, d_model=32, n_layers=2, n_heads=4, max_len=64)
    caches = model.new_caches()
    with torch.no_grad():
        model(torch.randint(0, 16, (1, 9)), caches=caches)
    expected = get("13.q2").reference(torch.tensor([9.0], dtype=torch.float64), n_layers=2, n_heads=4, n_kv_heads=4,
                                      head_dim=8, element_size=4)
    assert decoding_state_bytes(caches) == expected[0, 1]


def test_accuracy_reference_matches_torch():
    for case in get("13.q3").cases():
        logits, targets, mask = case.args
        expected = (logits.argmax(-1) == targets)[mask].double().mean()
        torch.testing.assert_close(get("13.q3").reference(logits.double(), targets, mask), expected)


def test_first_token_state_gets_the_zero_start_hint():
    from tests.grade_support.wrong_ch13 import ema_starts_at_x0

    assert "starts at zero" in grade.check("13.q1", ema_starts_at_x0).details["hint"]


def test_query_heads_get_the_gqa_hint():
    from tests.grade_support.wrong_ch13 import bytes_query_heads

    assert "n_kv_heads" in grade.check("13.q2", bytes_query_heads).details["hint"]


def test_row_means_get_the_pooled_average_hint():
    from tests.grade_support.wrong_ch13 import accuracy_row_means

    assert "not row by row" in grade.check("13.q3", accuracy_row_means).details["hint"]
